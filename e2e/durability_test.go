package e2e

// Durability: kill -9 of the mount in the middle of a large write leaves the
// old version or nothing, never a partial object, and the next mount aborts
// the multipart upload left behind (the upload journal, mount/journal.go);
// csefs uploads list|abort do the same by hand. The staging directory and
// the daemon's open files never hold plaintext, and the staging bound gives
// ENOSPC.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// openUploads lists the incomplete multipart uploads of exactly key (MinIO
// lists uploads of one exact key only).
func (w *world) openUploads(t *testing.T, key string) []string {
	t.Helper()
	out, err := w.S3.Client(t).ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{
		Bucket: aws.String(w.Bucket), Prefix: aws.String(key),
	})
	if err != nil {
		t.Fatalf("ListMultipartUploads %s: %v", key, err)
	}
	var ids []string
	for _, u := range out.Uploads {
		if aws.ToString(u.Key) == key {
			ids = append(ids, aws.ToString(u.UploadId))
		}
	}
	return ids
}

// objectExists asks S3 directly.
func (w *world) objectExists(t *testing.T, key string) bool {
	t.Helper()
	_, err := w.S3.Client(t).HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String(key)})
	return err == nil
}

// killMount kills the daemon serving m with SIGKILL, waits for it to be
// gone, and detaches the dead mount with csefs unmount --lazy.
func killMount(t *testing.T, m *mounted) {
	t.Helper()
	pid := m.daemonPid(t)
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	m.Gone()
	pollUntil(t, "the killed daemon to exit", seeWithin, func() (bool, string) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true, ""
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		return i > 0 && i+2 < len(s) && s[i+2] == 'Z', s
	})
	csefsIn(t, m.env, "unmount", "--lazy", m.Dir)
}

// TestKill9DuringWrite: the test writes the first 100 MB of a 200 MB file
// through an os.File, then kills the daemon with SIGKILL. After csefs
// unmount --lazy and a new mount, a new file is absent and an overwritten
// one is byte-identical to its previous version; the multipart upload the
// killed daemon had open was aborted by the new mount (and it was open
// before: the test checks that too, so it cannot pass vacuously).
func TestKill9DuringWrite(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name    string
		oldSize int64 // -1: a new file
	}{
		{"new-file", -1},
		{"overwrite", 12<<20 + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "big-" + tc.name
			m := w.mount(t, "")
			var old []byte
			if tc.oldSize >= 0 {
				old = randBytesFor(t, int(tc.oldSize))
				if err := os.WriteFile(m.path(key), old, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, err := os.OpenFile(m.path(key), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			src := rand.NewChaCha8([32]byte{42})
			if _, err := io.CopyN(f, src, 100<<20); err != nil {
				f.Close()
				t.Fatalf("writing the first 100 MB: %v", err)
			}
			if ups := w.openUploads(t, key); len(ups) == 0 {
				t.Fatal("no multipart upload open after 100 MB: the test would prove nothing")
			}
			killMount(t, m)
			if _, err := io.CopyN(f, src, 1<<20); err == nil {
				t.Error("writing to a killed mount succeeded")
			}
			f.Close() // fails: the mount is gone

			if ups := w.openUploads(t, key); len(ups) == 0 {
				t.Fatal("the killed daemon's upload is not open: nothing for the journal to do")
			}
			m2 := w.mount(t, "")
			if ups := w.openUploads(t, key); len(ups) != 0 {
				t.Errorf("after remount, uploads still open for %s: %v", key, ups)
			}
			if !strings.Contains(m2.logText(t), "aborted an upload left open") {
				t.Errorf("the new mount logged no abort:\n%s", m2.logText(t))
			}
			if tc.oldSize < 0 {
				if _, err := os.Stat(m2.path(key)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("new file after kill -9: stat %v, want ENOENT", err)
				}
				if w.objectExists(t, key) {
					t.Error("a partial object is in the bucket")
				}
				return
			}
			got, err := os.ReadFile(m2.path(key))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, old) {
				t.Errorf("overwritten file after kill -9: %d bytes, not the previous version's %d", len(got), len(old))
			}
		})
	}
}

// TestUploadsCommand: csefs uploads list shows an upload a killed mount left
// open (owner: a dead pid), and csefs uploads abort aborts it.
func TestUploadsCommand(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "pre")
	const key = "pre/partial"
	f, err := os.Create(m.path("partial"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{7}), 20<<20); err != nil {
		t.Fatal(err)
	}
	ids := w.openUploads(t, key)
	if len(ids) != 1 {
		t.Fatalf("open uploads %v, want one", ids)
	}
	flags := []string{"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region}
	src := "s3://" + w.Bucket + "/pre"
	list := csefsIn(t, w.env, append(append([]string{"uploads", "list"}, flags...), src)...)
	if !strings.Contains(list, "partial\t"+ids[0]) || !strings.Contains(list, "running-pid-") {
		t.Errorf("uploads list while the mount runs:\n%s", list)
	}
	// A running mount's upload is not aborted.
	out := csefsIn(t, w.env, append(append([]string{"uploads", "abort"}, flags...), src)...)
	if strings.Contains(out, ids[0]) || len(w.openUploads(t, key)) != 1 {
		t.Errorf("uploads abort touched a running mount's upload:\n%s", out)
	}
	killMount(t, m)
	f.Close()
	list = csefsIn(t, w.env, append(append([]string{"uploads", "list"}, flags...), src)...)
	if !strings.Contains(list, "partial\t"+ids[0]) || !strings.Contains(list, "dead-pid-") {
		t.Errorf("uploads list after kill -9:\n%s", list)
	}
	out = csefsIn(t, w.env, append(append([]string{"uploads", "abort"}, flags...), src)...)
	if !strings.Contains(out, "aborted\tpartial\t"+ids[0]) {
		t.Errorf("uploads abort:\n%s", out)
	}
	if ups := w.openUploads(t, key); len(ups) != 0 {
		t.Errorf("still open after uploads abort: %v", ups)
	}
	if list := csefsIn(t, w.env, append(append([]string{"uploads", "list"}, flags...), src)...); strings.TrimSpace(list) != "" {
		t.Errorf("uploads list at the end:\n%s", list)
	}
}

// grepFiles reports the files among paths whose content holds marker.
func grepFiles(t *testing.T, paths []string, marker []byte) []string {
	t.Helper()
	var hits []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue // removed meanwhile
		}
		if bytes.Contains(b, marker) {
			hits = append(hits, p)
		}
	}
	return hits
}

// dirFiles lists the files directly in dir.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var ps []string
	for _, e := range ents {
		ps = append(ps, filepath.Join(dir, e.Name()))
	}
	return ps
}

// procFiles lists the targets of the regular files pid has open.
func procFiles(t *testing.T, pid int) []string {
	t.Helper()
	fds := dirFiles(t, fmt.Sprintf("/proc/%d/fd", pid))
	if len(fds) == 0 {
		t.Fatalf("cannot read /proc/%d/fd", pid)
	}
	// Reading through /proc/PID/fd/N reaches even unlinked files.
	return fds
}

// TestStagingHoldsNoPlaintext: random-offset writes of a known marker into
// a 30 MB existing file (opened without O_TRUNC, so it stages). While it is
// open, neither the staging directory nor any file the daemon has open holds
// the marker; after close the staging directory is empty and the object has
// exactly the content of the same writes made to a local copy.
func TestStagingHoldsNoPlaintext(t *testing.T) {
	w := newWorld(t)
	staging := t.TempDir()
	m := w.mount(t, "", "--staging-dir", staging)
	const size = 30 << 20
	model := randBytesFor(t, size)
	if err := os.WriteFile(m.path("big"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	marker := []byte(fmt.Sprintf("CSEFS-STAGING-MARKER-%016x", rand.Uint64()))
	f, err := os.OpenFile(m.path("big"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		off := rng.Int64N(size + 1<<20) // some past the end: the file grows
		if _, err := f.WriteAt(marker, off); err != nil {
			t.Fatalf("WriteAt %d: %v", off, err)
		}
		if end := off + int64(len(marker)); end > int64(len(model)) {
			model = append(model, make([]byte, end-int64(len(model)))...)
		}
		copy(model[off:], marker)
	}
	staged := dirFiles(t, staging)
	if len(staged) == 0 {
		t.Fatal("nothing in the staging directory while the file is open: the writes did not stage")
	}
	if hits := grepFiles(t, staged, marker); len(hits) > 0 {
		t.Errorf("staging files hold the plaintext: %v", hits)
	}
	pid := m.daemonPid(t)
	if hits := grepFiles(t, procFiles(t, pid), marker); len(hits) > 0 {
		t.Errorf("files the daemon has open hold the plaintext: %v", hits)
	}
	// Reading back through the open handle sees the writes.
	got := make([]byte, len(marker))
	if _, err := f.ReadAt(got, int64(bytes.Index(model, marker))); err != nil || !bytes.Equal(got, marker) {
		t.Errorf("read back through the handle: %q, %v", got, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	pollUntil(t, "the staging directory to empty after close", seeWithin, func() (bool, string) {
		fs := dirFiles(t, staging)
		return len(fs) == 0, fmt.Sprint(fs)
	})
	back, err := os.ReadFile(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, model) {
		t.Errorf("after close: %d bytes, differing from the same writes made locally (%d bytes)", len(back), len(model))
	}
	if hits := grepFiles(t, append(dirFiles(t, staging), procFiles(t, pid)...), marker); len(hits) > 0 {
		t.Errorf("after close, files hold the plaintext: %v", hits)
	}
}

// TestStagingLimitENOSPC: with --staging-limit 1MiB, a random write into a
// 4 MB existing file fails with ENOSPC, the object is left as it was, and
// the staging space is given back.
func TestStagingLimitENOSPC(t *testing.T) {
	w := newWorld(t)
	staging := t.TempDir()
	m := w.mount(t, "", "--staging-dir", staging, "--staging-limit", "1MiB")
	orig := randBytesFor(t, 4<<20)
	if err := os.WriteFile(m.path("f"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := f.WriteAt([]byte("x"), 2<<20)
	cerr := f.Close()
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Errorf("random write past the staging bound: %v (close: %v), want ENOSPC", werr, cerr)
	}
	got, err := os.ReadFile(m.path("f"))
	if err != nil || !bytes.Equal(got, orig) {
		t.Errorf("object after the refused write: %d bytes, %v; want unchanged", len(got), err)
	}
	pollUntil(t, "the staging directory to empty", seeWithin, func() (bool, string) {
		fs := dirFiles(t, staging)
		return len(fs) == 0, fmt.Sprint(fs)
	})
	// Small edits still fit.
	small := randBytesFor(t, 100_000)
	if err := os.WriteFile(m.path("small"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := os.OpenFile(m.path("small"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteAt([]byte("edit"), 5000); err != nil {
		t.Errorf("small edit under the bound: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	copy(small[5000:], "edit")
	if got, err := os.ReadFile(m.path("small")); err != nil || !bytes.Equal(got, small) {
		t.Errorf("small edit: %v", err)
	}
}
