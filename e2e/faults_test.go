package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/e2e/testenv"
)

// Data integrity under faults (issue 10): real mounts of MinIO and local-kms
// reached through testenv.FaultProxy, checked with the official S3
// Encryption Client (GO3) as the oracle.

// faultArgs are s3Args with S3 (s3p) and/or KMS (kmsp) reached through
// proxies (nil: directly).
func (w *world) faultArgs(s3p, kmsp *testenv.FaultProxy, extra ...string) []string {
	s3End, kmsEnd := w.S3.Endpoint, w.KMS.Endpoint
	if s3p != nil {
		s3End = s3p.URL
	}
	if kmsp != nil {
		kmsEnd = kmsp.URL
	}
	return append([]string{
		"--endpoint-url", s3End, "--path-style", "--region", w.S3.Region,
		"--kms-endpoint-url", kmsEnd, "--cse", "kms", "--kms-key-id", w.KMS.KeyID,
	}, extra...)
}

// randN is randBytes for an int size.
func randN(t *testing.T, n int) []byte { return randBytes(t, int64(n)) }

// oracleGet decrypts key with GO3.
func oracleGet(t *testing.T, w *world, key string) ([]byte, error) {
	t.Helper()
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	return oracle.GO3Get(context.Background(), go3, w.Bucket, key)
}

// writeFile writes data to path with write(2) calls of chunk bytes and
// returns close(2)'s result separately.
func writeFile(path string, data []byte, chunk int) (writeErr, closeErr error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err, nil
	}
	for off := 0; off < len(data); off += chunk {
		if _, err := f.Write(data[off:min(off+chunk, len(data))]); err != nil {
			f.Close()
			return err, nil
		}
	}
	return nil, f.Close()
}

// TestFaultChmodRacesOverwrite (failure 1): mount A loops chmod and touch
// on f while mount B overwrites f with 4 KiB writes. After every overwrite
// the object must decrypt (GO3) to one of the versions written, and so at
// the end. Before conditional copies, about a third of the overwrites
// left an object that did not decrypt (the old envelope on the new body).
func TestFaultChmodRacesOverwrite(t *testing.T) {
	w := newWorld(t)
	a := w.mount(t, "", "--metadata-ttl", "0s")
	b := w.mount(t, "", "--metadata-ttl", "0s")
	const rounds = 150
	versions := map[string]bool{}
	first := randN(t, 4096)
	versions[string(first)] = true
	if werr, cerr := writeFile(b.path("f"), first, 4096); werr != nil || cerr != nil {
		t.Fatal(werr, cerr)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var chmods atomic.Int64
	for g := 0; g < 4; g++ { // several in flight: more HEAD-then-copy windows
		wg.Add(1)
		go chmodLoop(&wg, stop, a.path("f"), &chmods)
	}
	broken := 0
	var last []byte
	for i := 0; i < rounds; i++ {
		data := randN(t, 3*4096+i)
		versions[string(data)] = true
		if werr, cerr := writeFile(b.path("f"), data, 4096); werr != nil || cerr != nil {
			t.Errorf("overwrite %d: write %v, close %v", i, werr, cerr)
			continue
		}
		last = data
		got, err := oracleGet(t, w, "f")
		if err != nil || !versions[string(got)] {
			broken++
			t.Logf("overwrite %d: object does not decrypt to a version written: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	got, err := oracleGet(t, w, "f")
	if err != nil || !versions[string(got)] {
		broken++
		t.Logf("final object: %v (%d bytes)", err, len(got))
	} else if !bytes.Equal(got, last) {
		// MinIO checks x-amz-copy-source-if-match when the copy opens its
		// source, not when it writes: a copy that began before B's commit
		// can land after it (docs/semantics.md, "Faults"). Whole and
		// decryptable, but B's last version is lost.
		t.Logf("final object is an older version (%d bytes): a copy landed after the last overwrite", len(got))
	}
	t.Logf("%d attribute changes in A during %d overwrites in B; %d broken", chmods.Load(), rounds, broken)
	if broken > 0 {
		t.Errorf("%d of %d overwrites left an object that does not decrypt", broken, rounds+1)
	}
	if chmods.Load() == 0 {
		t.Error("no chmod or touch succeeded: the race was not exercised")
	}
}

// chmodLoop changes path's mode and times until stop, counting successes.
func chmodLoop(wg *sync.WaitGroup, stop chan struct{}, path string, n *atomic.Int64) {
	defer wg.Done()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if err := os.Chmod(path, os.FileMode(0o600|(i%2)*0o044)); err == nil {
			n.Add(1)
		}
		now := time.Now()
		if err := os.Chtimes(path, now, now); err == nil {
			n.Add(1)
		}
	}
}

// TestFaultLostCommitReply (failure 2): the reply of the commit
// (PutObject, CompleteMultipartUpload) is lost after MinIO applied it:
// close(2) reports success and the new content is there.
func TestFaultLostCommitReply(t *testing.T) {
	for _, tc := range []struct {
		op    string
		size  int
		times int
	}{
		{"PutObject", 100 << 10, 0},
		{"CompleteMultipartUpload", 12 << 20, 0},
	} {
		t.Run(tc.op, func(t *testing.T) {
			w := newWorld(t)
			p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
			m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(p, nil, "--part-size", "5MiB", "--s3-retry-deadline", "3s")...)
			old := randN(t, 1000)
			if werr, cerr := writeFile(m.path("f"), old, 1000); werr != nil || cerr != nil {
				t.Fatal(werr, cerr)
			}
			p.Add(testenv.Rule{Op: tc.op, Fault: testenv.LoseReply, Times: tc.times})
			data := randN(t, tc.size)
			werr, cerr := writeFile(m.path("f"), data, 128<<10)
			p.Clear()
			if p.Faults(tc.op) == 0 {
				t.Fatal("no reply was lost")
			}
			if werr != nil || cerr != nil {
				t.Errorf("commit whose reply was lost (%d times): write %v, close %v", p.Faults(tc.op), werr, cerr)
			}
			got, err := oracleGet(t, w, "f")
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("object after the commit: %v, %d bytes (new version %d, old %d)", err, len(got), len(data), len(old))
			}
		})
	}
}

// TestFaultFailedCommit (failure 2): when the commit never reaches MinIO
// (every attempt reset), close(2) reports EIO and the old version is intact.
func TestFaultFailedCommit(t *testing.T) {
	for _, tc := range []struct {
		op   string
		size int
	}{{"PutObject", 100 << 10}, {"CompleteMultipartUpload", 12 << 20}} {
		t.Run(tc.op, func(t *testing.T) {
			w := newWorld(t)
			p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
			m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(p, nil, "--part-size", "5MiB", "--s3-retry-deadline", "2s")...)
			old := randN(t, 1000)
			if werr, cerr := writeFile(m.path("f"), old, 1000); werr != nil || cerr != nil {
				t.Fatal(werr, cerr)
			}
			p.Add(testenv.Rule{Op: tc.op, Fault: testenv.Reset})
			werr, cerr := writeFile(m.path("f"), randN(t, tc.size), 128<<10)
			p.Clear()
			err := werr
			if err == nil {
				err = cerr
			}
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("commit that never landed: write %v, close %v; want EIO", werr, cerr)
			}
			got, gerr := oracleGet(t, w, "f")
			if gerr != nil || !bytes.Equal(got, old) {
				t.Errorf("old version after the failed commit: %v, %d bytes", gerr, len(got))
			}
		})
	}
}

// TestFaultCutBodies (failure 4): with 30% of GET bodies cut at a random
// byte, every read of 40 files succeeds byte for byte.
func TestFaultCutBodies(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(p, nil)...)
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	const files = 40
	want := make([][]byte, files)
	for i := range want {
		want[i] = randN(t, 1<<20+i*4099)
		if err := oracle.GO3Put(context.Background(), go3, w.Bucket, fmt.Sprintf("f%d", i), want[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	p.Add(testenv.Rule{Op: "GetObject", Fault: testenv.CutBody, Rate: 0.3})
	p.Add(testenv.Rule{Op: "GetObject(range)", Fault: testenv.CutBody, Rate: 0.3})
	failed := 0
	for i := range want {
		got, err := os.ReadFile(m.path(fmt.Sprintf("f%d", i)))
		if err != nil || !bytes.Equal(got, want[i]) {
			failed++
			t.Logf("f%d: %v (%d of %d bytes)", i, err, len(got), len(want[i]))
		}
	}
	t.Logf("%d of %d GETs cut; %d of %d reads failed", p.Faults(""), p.Requests(""), failed, files)
	if p.Faults("") == 0 {
		t.Fatal("no body was cut")
	}
	if failed > 0 {
		t.Errorf("%d of %d reads failed under cut bodies", failed, files)
	}
	if log := m.logText(t); strings.Contains(log, "ciphertext truncated") {
		t.Errorf("a cut connection was logged as truncated ciphertext:\n%s", log)
	}
}

// TestFaultS3Outage (failure 4): S3 refuses connections for 12 s while a
// 24 MiB file is being written (multipart), while a small one is committed
// and while a file written before is read: the writes, closes and the read
// succeed once it is back (the default --s3-retry-deadline is 60 s).
func TestFaultS3Outage(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(p, nil, "--part-size", "5MiB")...)
	big, small, pre := randN(t, 24<<20), randN(t, 5000), randN(t, 3<<20)
	if werr, cerr := writeFile(m.path("pre"), pre, 1<<20); werr != nil || cerr != nil {
		t.Fatal(werr, cerr)
	}
	f, err := os.Create(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(big[:8<<20]); err != nil {
		t.Fatal(err)
	}
	if err := p.Outage(true); err != nil {
		t.Fatal(err)
	}
	back := make(chan error, 1)
	time.AfterFunc(12*time.Second, func() { back <- p.Outage(false) })
	type readResult struct {
		b   []byte
		err error
	}
	preRead := make(chan readResult, 1)
	go func() {
		b, err := os.ReadFile(m.path("pre"))
		preRead <- readResult{b, err}
	}()
	smallErr := make(chan error, 1)
	go func() {
		werr, cerr := writeFile(m.path("small"), small, 5000)
		smallErr <- errors.Join(werr, cerr)
	}()
	if _, err := f.Write(big[8<<20:]); err != nil {
		t.Errorf("write during the outage: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close after the outage: %v", err)
	}
	if err := <-smallErr; err != nil {
		t.Errorf("small file written during the outage: %v", err)
	}
	if r := <-preRead; r.err != nil || !bytes.Equal(r.b, pre) {
		t.Errorf("read during the outage: %v, %d bytes of %d", r.err, len(r.b), len(pre))
	}
	if err := <-back; err != nil {
		t.Fatal(err)
	}
	for key, data := range map[string][]byte{"big": big, "small": small} {
		got, err := oracleGet(t, w, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s after the outage: %v, %d bytes", key, err, len(got))
		}
	}
}

// TestFaultKMSHang (failure 4): a KMS that accepts connections and never
// answers makes create (GenerateDataKey) and open (Decrypt) fail with EIO
// within --kms-deadline, and the log says "KMS timeout".
func TestFaultKMSHang(t *testing.T) {
	w := newWorld(t)
	kp := testenv.NewFaultProxy(t, w.KMS.Endpoint, testenv.KMSOp)
	m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(nil, kp,
		"--kms-timeout", "1s", "--kms-deadline", "3s", "--kms-key-ahead", "0", "--key-cache-size", "0")...)
	// Written by the oracle, so this mount has neither its data key nor
	// its pages: opening it needs KMS Decrypt.
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := oracle.GO3Put(context.Background(), go3, w.Bucket, "old", []byte("written before"), nil); err != nil {
		t.Fatal(err)
	}
	kp.Add(testenv.Rule{Fault: testenv.Hang})
	done := make(chan [2]error, 1)
	go func() {
		werr, cerr := writeFile(m.path("new"), []byte("data"), 100)
		_, rerr := os.ReadFile(m.path("old"))
		done <- [2]error{errors.Join(werr, cerr), rerr}
	}()
	var errs [2]error
	select {
	case errs = <-done:
	case <-time.After(2 * time.Minute):
		kp.Clear()
		t.Fatal("create and open still blocked on a hung KMS after 2 minutes")
	}
	kp.Clear()
	for i, op := range []string{"create", "open"} {
		if !errors.Is(errs[i], syscall.EIO) {
			t.Errorf("%s with a hung KMS: %v, want EIO", op, errs[i])
		}
	}
	if log := m.logText(t); !strings.Contains(log, "KMS timeout") {
		t.Errorf("the log does not say KMS timeout:\n%s", log)
	}
}

// TestFaultNetworkErrno (failure 5): connection resets under stat, open,
// read, write and close reach programs as EIO (never ECONNRESET), and the
// log names the reset; a refused KMS connection is EIO, logged as KMS
// unreachable, not as "key access denied".
func TestFaultNetworkErrno(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	kp := testenv.NewFaultProxy(t, w.KMS.Endpoint, testenv.KMSOp)
	m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(p, kp,
		"--metadata-ttl", "0s", "--s3-retry-deadline", "1s", "--kms-deadline", "2s", "--kms-key-ahead", "0", "--key-cache-size", "0")...)
	// Objects written by the oracle: this mount has not seen them, so
	// neither attributes nor pages nor data keys are cached.
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"f", "f2", "f3", "k"} {
		// Above --verify-threshold (8 MiB): reads stream, after open.
		if err := oracle.GO3Put(context.Background(), go3, w.Bucket, key, randN(t, 12<<20), nil); err != nil {
			t.Fatal(err)
		}
	}
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("%s under connection resets: %v, want EIO", op, err)
		}
	}
	p.Add(testenv.Rule{Op: "HeadObject", Fault: testenv.Reset})
	p.Add(testenv.Rule{Op: "ListObjects", Fault: testenv.Reset})
	_, err = os.Stat(m.path("f"))
	check("stat", err)
	_, err = os.Open(m.path("f2"))
	check("open", err)
	p.Clear()

	// A lookup may start the object's GET already: fault GETs from here.
	p.Add(testenv.Rule{Op: "GetObject", Fault: testenv.Reset})
	p.Add(testenv.Rule{Op: "GetObject(range)", Fault: testenv.Reset})
	if f, err := os.Open(m.path("f3")); err != nil {
		check("read (at open)", err)
	} else {
		b, err := io.ReadAll(f)
		f.Close()
		if err == nil {
			err = fmt.Errorf("read %d bytes", len(b))
		}
		check("read", err)
	}
	p.Clear()

	p.Add(testenv.Rule{Op: "UploadPart", Fault: testenv.Reset})
	p.Add(testenv.Rule{Op: "CreateMultipartUpload", Fault: testenv.Reset})
	werr, cerr := writeFile(m.path("g"), randN(t, 20<<20), 1<<20)
	if werr != nil {
		check("write", werr)
	} else {
		check("write (reported at close)", cerr)
	}
	p.Clear()

	p.Add(testenv.Rule{Op: "PutObject", Fault: testenv.Reset})
	_, cerr = writeFile(m.path("h"), []byte("small"), 100)
	check("close", cerr)
	p.Clear()

	if err := kp.Outage(true); err != nil {
		t.Fatal(err)
	}
	_, kerr := os.ReadFile(m.path("k")) // needs KMS Decrypt
	if err := kp.Outage(false); err != nil {
		t.Fatal(err)
	}
	check("open with KMS refusing connections", kerr)

	log := m.logText(t)
	if !strings.Contains(log, "connection reset") {
		t.Errorf("the log does not name the connection reset:\n%s", log)
	}
	if !strings.Contains(log, "KMS unreachable") {
		t.Errorf("the log does not say KMS unreachable:\n%s", log)
	}
	for _, wrong := range []string{"key access denied", "ciphertext truncated"} {
		if strings.Contains(log, wrong) {
			t.Errorf("a network fault was logged as %q:\n%s", wrong, log)
		}
	}
}

// TestFaultKMSThrottled (failure 4): KMS ThrottlingException and S3 503
// SlowDown are backed off, the calls succeed, and the log counts them.
func TestFaultKMSThrottled(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	kp := testenv.NewFaultProxy(t, w.KMS.Endpoint, testenv.KMSOp)
	m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(p, kp, "--kms-key-ahead", "0")...)
	kp.Add(testenv.Rule{Op: "GenerateDataKey", Fault: testenv.Throttle, Times: 3})
	p.Add(testenv.Rule{Op: "PutObject", Fault: testenv.SlowDown, Times: 3})
	data := randN(t, 10000)
	if werr, cerr := writeFile(m.path("f"), data, 4096); werr != nil || cerr != nil {
		t.Fatalf("write while throttled: write %v, close %v", werr, cerr)
	}
	if got, err := oracleGet(t, w, "f"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("object written while throttled: %v", err)
	}
	if kp.Faults("GenerateDataKey") != 3 || p.Faults("PutObject") != 3 {
		t.Fatalf("throttled %d GenerateDataKey and %d PutObject, want 3 and 3", kp.Faults("GenerateDataKey"), p.Faults("PutObject"))
	}
	log := m.logText(t)
	for _, want := range []string{"KMS throttled; backing off", "S3 throttled; backing off", "throttled_total=3"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}
