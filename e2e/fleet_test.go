package e2e

// The bucket tools (csefs inspect, verify, rewrap, encrypt; package fleet)
// against MinIO and local-kms, checked with the official clients (GO3
// v3.2.0, GO1 s3crypto) and through mounts.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/e2e/testenv"
	"github.com/csefs/csefs/metadata"
)

// toolRun is one finished run of a bucket tool.
type toolRun struct {
	stdout, stderr string
	code           int
}

// results returns the JSON result lines of a --json run.
func (r toolRun) results(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// keysWith returns the keys of the results with the given status, sorted.
func (r toolRun) keysWith(t *testing.T, status string) []string {
	var keys []string
	for _, m := range r.results(t) {
		if m["status"] == status {
			keys = append(keys, m["key"].(string))
		}
	}
	slices.Sort(keys)
	return keys
}

// tool runs csefs with args (the world's S3 and KMS flags for keyID
// first), returning its output and exit code.
func (w *world) tool(t *testing.T, keyID string, args ...string) toolRun {
	t.Helper()
	full := append([]string{args[0]}, w.s3Flags(keyID)...)
	return w.toolRaw(t, append(full, args[1:]...)...)
}

// toolRaw runs csefs with exactly args.
func (w *world) toolRaw(t *testing.T, args ...string) toolRun {
	t.Helper()
	cmd := exec.Command(csefsBin(t), args...)
	cmd.Env = w.env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := toolRun{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("csefs %v: %v", args, err)
	}
	if strings.Contains(r.stderr, "panic:") || strings.Contains(r.stderr, "DATA RACE") {
		t.Fatalf("csefs %v crashed:\n%s", args, r.stderr)
	}
	return r
}

func mustTool(t *testing.T, r toolRun, want int) {
	t.Helper()
	if r.code != want {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, want, r.stdout, r.stderr)
	}
}

// TestFleetVerify: verify is clean on a prefix of mixed objects (csefs
// written in both storage modes, GO3, GO1 V1 CBC, GO1 instruction file,
// plaintext); after one ciphertext byte is flipped and one envelope is
// damaged it exits 1 and names exactly those two objects. inspect
// describes them without calling KMS.
func TestFleetVerify(t *testing.T) {
	w := newWorld(t)
	setGO3InstructionEnv(t, w)
	m := w.mount(t, "mix")
	mi := w.mount(t, "mix/instr", "--storage-mode", "instruction-file")
	plain := randBytes(t, 3<<20+5)
	if err := os.WriteFile(m.path("csefs-big"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("csefs-small"), []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mi.path("csefs-instr"), plain[:1000], 0o644); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	mi.Unmount(t)
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := oracle.GO3Put(bg, go3, w.Bucket, "mix/go3", plain[:70000], nil); err != nil {
		t.Fatal(err)
	}
	go4, err := oracle.GO4(w.servers(), w.KMS.KeyID, oracle.GO4RequireEncryptRequireDecrypt)
	if err != nil {
		t.Fatal(err)
	}
	if err := oracle.GO4Put(bg, go4, w.Bucket, "mix/go4-v3", plain[:9000], nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"GO1-V1-kms-CBC", "GO1-V2-kms+context-instruction"} {
		if err := oracle.FindGO1Writer(name).Put(bg, w.servers(), w.KMS.KeyID, w.Bucket, "mix/"+name, plain[:5000]); err != nil {
			t.Fatal(err)
		}
	}
	w.putRaw(t, "mix/plain", []byte("not encrypted"), nil)

	r := w.tool(t, w.KMS.KeyID, "verify", "--json", "--verbose", "s3://"+w.Bucket+"/mix")
	mustTool(t, r, 0)
	if got := r.keysWith(t, "ok"); len(got) != 7 {
		t.Fatalf("verified %v, want the 7 encrypted objects\n%s", got, r.stdout)
	}
	if got := r.keysWith(t, "skipped"); !slices.Equal(got, []string{"mix/plain"}) {
		t.Fatalf("skipped %v, want the plaintext object", got)
	}
	if !strings.Contains(r.stderr, "8 objects checked, 0 changed, 1 skipped, 0 failed") {
		t.Fatalf("summary missing:\n%s", r.stderr)
	}

	// inspect without --unwrap: no KMS call even with KMS unreachable.
	ins := w.toolNoKMS(t, "inspect", "--json", "s3://"+w.Bucket+"/mix")
	mustTool(t, ins, 0)
	formats := map[string]string{}
	for _, d := range ins.results(t) {
		formats[strings.TrimPrefix(d["uri"].(string), "s3://"+w.Bucket+"/")] = fmt.Sprint(d["format"], "|", d["storage"])
		if strings.Contains(fmt.Sprint(d), "x-amz-key") {
			t.Fatalf("inspect prints stored keys: %v", d)
		}
	}
	want := map[string]string{
		"mix/csefs-big": "V2 AES-GCM|object-metadata", "mix/instr/csefs-instr": "V2 AES-GCM|instruction-file",
		"mix/GO1-V1-kms-CBC": "V2 AES-CBC (unauthenticated)|object-metadata", "mix/plain": "plaintext|<nil>",
		"mix/GO1-V2-kms+context-instruction": "V2 AES-GCM|instruction-file",
		"mix/go4-v3":                         "V3 AES-GCM key-committing (suite 115)|object-metadata",
	}
	for k, v := range want {
		if formats[k] != v {
			t.Errorf("inspect %s: %q, want %q", k, formats[k], v)
		}
	}

	// Damage: one ciphertext byte of GO3's object, the wrapped key of
	// csefs-small.
	body, meta := w.getRaw(t, "mix/go3")
	body[1234] ^= 1
	w.putRaw(t, "mix/go3", body, meta)
	body, meta = w.getRaw(t, "mix/csefs-small")
	k := []byte(meta[metadata.KeyV2])
	k[10] = map[bool]byte{true: 'B', false: 'A'}[k[10] == 'A']
	meta[metadata.KeyV2] = string(k)
	w.putRaw(t, "mix/csefs-small", body, meta)

	r = w.tool(t, w.KMS.KeyID, "verify", "--json", "s3://"+w.Bucket+"/mix/")
	mustTool(t, r, 1)
	if got := r.keysWith(t, "failed"); !slices.Equal(got, []string{"mix/csefs-small", "mix/go3"}) {
		t.Fatalf("failed %v, want exactly the two damaged objects\n%s", got, r.stdout)
	}
	for _, res := range r.results(t) {
		if res["error"] == nil || res["error"] == "" {
			t.Errorf("failure of %s has no cause: %v", res["key"], res)
		}
	}
	// A damaged V3 key commitment.
	body, meta = w.getRaw(t, "mix/go4-v3")
	d := []byte(meta[metadata.KeyV3Commitment])
	d[3] = map[bool]byte{true: 'B', false: 'A'}[d[3] == 'A']
	meta[metadata.KeyV3Commitment] = string(d)
	w.putRaw(t, "mix/go4-v3", body, meta)
	r = w.tool(t, w.KMS.KeyID, "verify", "s3://"+w.Bucket+"/mix/go4-v3")
	mustTool(t, r, 1)
	if !strings.Contains(r.stdout, "key commitment") {
		t.Fatalf("damaged commitment reported as %q", r.stdout)
	}
	// One object by key.
	mustTool(t, w.tool(t, w.KMS.KeyID, "verify", "s3://"+w.Bucket+"/mix/csefs-big"), 0)
	mustTool(t, w.tool(t, w.KMS.KeyID, "verify", "s3://"+w.Bucket+"/mix/go3"), 1)
}

// toolNoKMS runs a tool with KMS pointed at a closed port.
func (w *world) toolNoKMS(t *testing.T, args ...string) toolRun {
	t.Helper()
	saved := w.KMS
	dead := *w.KMS
	dead.Endpoint = "http://127.0.0.1:1"
	w.KMS = &dead
	defer func() { w.KMS = saved }()
	return w.tool(t, w.KMS.KeyID, args...)
}

// fleetObjects writes n objects under prefix through a mount with keyID
// (one of them multipart) and returns their plaintexts.
func (w *world) fleetObjects(t *testing.T, prefix, keyID string, n int, extra ...string) map[string][]byte {
	t.Helper()
	m := w.mount(t, prefix, append([]string{"--kms-key-id", keyID, "--part-size", "5MiB"}, extra...)...)
	want := map[string][]byte{}
	for i := range n {
		size := 100 + i*37
		if i == 0 {
			size = 11 << 20 // multipart
		}
		name := fmt.Sprintf("f%03d", i)
		b := randBytes(t, int64(size))
		if err := os.WriteFile(m.path(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[prefix+"/"+name] = b
	}
	m.Unmount(t)
	return want
}

// rawBodies returns the stored bytes of keys.
func (w *world) rawBodies(t *testing.T, keys []string) map[string][]byte {
	out := map[string][]byte{}
	for _, k := range keys {
		out[k], _ = w.getRaw(t, k)
	}
	return out
}

// TestFleetRewrap: rewrap 200 objects from KMS key A to key B in both
// storage modes; then A is disabled and every object still decrypts with
// GO3 and through a mount, with the same stored bytes; a second run
// changes nothing.
func TestFleetRewrap(t *testing.T) {
	w := newWorld(t)
	setGO3InstructionEnv(t, w)
	keyA, _ := w.KMS.NewKey(t)
	keyB, arnB := w.KMS.NewKey(t)
	all := map[string][]byte{}
	for _, mode := range []string{"object-metadata", "instruction-file"} {
		for k, v := range w.fleetObjects(t, mode, keyA, 100, "--storage-mode", mode) {
			all[k] = v
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range all {
			if !yield(k) {
				return
			}
		}
	})
	before := w.rawBodies(t, keys)
	_, metaBefore := w.head(t, "object-metadata/f001")
	etag := func(key string) string {
		out, err := w.S3.Client(t).HeadObject(bg, &s3.HeadObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.ETag)
	}
	multipartETag := etag("object-metadata/f000")

	dry := w.tool(t, keyA, "rewrap", "--json", "--dry-run", "--to-kms-key-id", keyB, "s3://"+w.Bucket)
	mustTool(t, dry, 0)
	if n := len(dry.keysWith(t, "changed")); n != 200 {
		t.Fatalf("dry run: %d would change, want 200", n)
	}
	r := w.tool(t, keyA, "rewrap", "--json", "--to-kms-key-id", keyB, "s3://"+w.Bucket)
	mustTool(t, r, 0)
	if got := r.keysWith(t, "changed"); !slices.Equal(got, keys) {
		t.Fatalf("rewrapped %d objects, want 200\n%s", len(got), r.stderr)
	}
	t.Logf("rewrap progress and summary:\n%s", r.stderr)

	if _, err := w.KMS.Client(t).DisableKey(bg, &kms.DisableKeyInput{KeyId: aws.String(keyA)}); err != nil {
		t.Fatal(err)
	}
	go3, err := oracle.GO3(w.servers(), keyB, false)
	if err != nil {
		t.Fatal(err)
	}
	after := w.rawBodies(t, keys)
	for _, k := range keys {
		if !bytes.Equal(before[k], after[k]) {
			t.Fatalf("%s: stored body changed by rewrap", k)
		}
		got, err := oracle.GO3Get(bg, go3, w.Bucket, k)
		if err != nil || !bytes.Equal(got, all[k]) {
			t.Fatalf("%s: GO3 after rewrap with key A disabled: %v", k, err)
		}
	}
	// MinIO gives a multipart object's self-copy a new, single-part ETag:
	// rewrap then authenticates the copy instead of comparing ETags.
	t.Logf("multipart object's ETag: %s before rewrap, %s after", multipartETag, etag("object-metadata/f000"))
	_, metaAfter := w.head(t, "object-metadata/f001")
	for _, a := range []string{metadata.AttrMode, metadata.AttrMtime, metadata.AttrUID} {
		if metaBefore[a] != metaAfter[a] {
			t.Errorf("%s changed: %q → %q", a, metaBefore[a], metaAfter[a])
		}
	}
	ins := w.tool(t, keyB, "inspect", "--json", "--unwrap", "s3://"+w.Bucket+"/instruction-file/f007")
	mustTool(t, ins, 0)
	if d := ins.results(t)[0]; d["kms_key"] != arnB || d["unwrap"] != "ok" {
		t.Fatalf("inspect --unwrap: %v, want key %s", d, arnB)
	}
	for _, mode := range []string{"object-metadata", "instruction-file"} {
		m := w.mount(t, mode, "--kms-key-id", keyB, "--storage-mode", mode)
		for _, name := range []string{"f000", "f001", "f099"} {
			got, err := os.ReadFile(m.path(name))
			if err != nil || !bytes.Equal(got, all[mode+"/"+name]) {
				t.Fatalf("%s/%s through a mount after rewrap: %v", mode, name, err)
			}
		}
		m.Unmount(t)
	}
	again := w.tool(t, keyB, "rewrap", "--json", "--to-kms-key-id", keyB, "s3://"+w.Bucket)
	mustTool(t, again, 0)
	if n := len(again.keysWith(t, "changed")); n != 0 || !strings.Contains(again.stderr, "200 objects checked, 0 changed, 200 skipped") {
		t.Fatalf("second run changed %d\n%s", n, again.stderr)
	}
}

// TestFleetRewrapInterrupt: SIGINT after the 50th object reported stops
// rewrap after the objects in flight (exit 130); a second run does the rest
// and a third finds nothing to do.
func TestFleetRewrapInterrupt(t *testing.T) {
	w := newWorld(t)
	keyA, _ := w.KMS.NewKey(t)
	keyB, _ := w.KMS.NewKey(t)
	for i := range 200 {
		w.putRaw(t, fmt.Sprintf("p/%03d", i), []byte(fmt.Sprintf("object %d", i)), nil)
	}
	mustTool(t, w.tool(t, keyA, "encrypt", "s3://"+w.Bucket+"/p"), 0)

	args := append([]string{"rewrap"}, w.s3Flags(keyA)...)
	args = append(args, "--concurrency", "2", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/p")
	cmd := exec.Command(csefsBin(t), args...)
	cmd.Env = w.env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	first, sent := 0, false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "changed\t") {
			first++
		}
		if first == 50 && !sent {
			cmd.Process.Signal(syscall.SIGINT) // once: a second one would abandon the objects in flight
			sent = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted rewrap: %v, want exit 130\n%s", err, stderr.String())
	}
	if first < 50 || first >= 200 || !strings.Contains(stderr.String(), "interrupted") {
		t.Fatalf("interrupted rewrap changed %d objects\n%s", first, stderr.String())
	}
	r := w.tool(t, keyA, "rewrap", "--json", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/p")
	mustTool(t, r, 0)
	if n := len(r.keysWith(t, "changed")); n != 200-first {
		t.Fatalf("second run changed %d, want %d", n, 200-first)
	}
	if _, err := w.KMS.Client(t).DisableKey(bg, &kms.DisableKeyInput{KeyId: aws.String(keyA)}); err != nil {
		t.Fatal(err)
	}
	r = w.tool(t, keyB, "verify", "s3://"+w.Bucket+"/p")
	mustTool(t, r, 0)
	mustTool(t, w.tool(t, keyB, "rewrap", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/p"), 0)
}

// TestFleetEncrypt: encrypt turns plaintext objects (one multipart) into
// CSE objects GO3 decrypts to the original bytes, keeping user metadata and
// csefs attributes, and leaves encrypted objects untouched; with
// --upgrade-legacy a V1 CBC object becomes V2 GCM.
func TestFleetEncrypt(t *testing.T) {
	w := newWorld(t)
	setGO3InstructionEnv(t, w)
	plain := map[string][]byte{
		"e/a":       []byte("hello"),
		"e/empty":   {},
		"e/big":     randBytes(t, 12<<20+3),
		"e/sub/dir": randBytes(t, 70000),
	}
	for k, b := range plain {
		w.putRaw(t, k, b, map[string]string{"owner": "hue", metadata.AttrMode: "100600"})
	}
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := oracle.GO3Put(bg, go3, w.Bucket, "e/go3", []byte("already"), nil); err != nil {
		t.Fatal(err)
	}
	if err := oracle.FindGO1Writer("GO1-V1-kms-CBC").Put(bg, w.servers(), w.KMS.KeyID, w.Bucket, "e/cbc", []byte("legacy cbc object")); err != nil {
		t.Fatal(err)
	}
	go3Raw, _ := w.getRaw(t, "e/go3")
	cbcRaw, _ := w.getRaw(t, "e/cbc")

	r := w.tool(t, w.KMS.KeyID, "encrypt", "--json", "--part-size", "5MiB", "s3://"+w.Bucket+"/e")
	mustTool(t, r, 0)
	if got := r.keysWith(t, "changed"); !slices.Equal(got, []string{"e/a", "e/big", "e/empty", "e/sub/dir"}) {
		t.Fatalf("encrypted %v\n%s", got, r.stdout)
	}
	for k, b := range plain {
		got, err := oracle.GO3Get(bg, go3, w.Bucket, k)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s: GO3 after encrypt: %v", k, err)
		}
		_, meta := w.head(t, k)
		if meta["owner"] != "hue" || meta[metadata.AttrMode] != "100600" {
			t.Fatalf("%s: metadata not kept: %v", k, meta)
		}
	}
	if raw, _ := w.getRaw(t, "e/go3"); !bytes.Equal(raw, go3Raw) {
		t.Fatal("an encrypted object was rewritten")
	}
	if raw, _ := w.getRaw(t, "e/cbc"); !bytes.Equal(raw, cbcRaw) {
		t.Fatal("a CBC object was rewritten without --upgrade-legacy")
	}
	r = w.tool(t, w.KMS.KeyID, "encrypt", "--json", "--upgrade-legacy", "s3://"+w.Bucket+"/e")
	mustTool(t, r, 0)
	if got := r.keysWith(t, "changed"); !slices.Equal(got, []string{"e/cbc"}) {
		t.Fatalf("--upgrade-legacy changed %v", got)
	}
	env := storedEnvelope(t, w, "e/cbc", false)
	if env.Version != 2 || env.Key.CEKAlg != "AES/GCM/NoPadding" {
		t.Fatalf("upgraded object is %+v", env)
	}
	if got, err := oracle.GO3Get(bg, go3, w.Bucket, "e/cbc"); err != nil || string(got) != "legacy cbc object" {
		t.Fatalf("upgraded object: %q %v", got, err)
	}
	mustTool(t, w.tool(t, w.KMS.KeyID, "verify", "s3://"+w.Bucket+"/e"), 0)
	// V3 with --commitment-policy.
	w.putRaw(t, "v3/x", []byte("to V3"), nil)
	mustTool(t, w.tool(t, w.KMS.KeyID, "encrypt", "--commitment-policy", "require-encrypt-allow-decrypt", "s3://"+w.Bucket+"/v3/x"), 0)
	if env := storedEnvelope(t, w, "v3/x", false); env.Version != 3 {
		t.Fatalf("--commitment-policy require-encrypt-allow-decrypt wrote V%d", env.Version)
	}
	if got, err := oracle.GO3Get(bg, go3, w.Bucket, "v3/x"); err != nil || string(got) != "to V3" {
		t.Fatalf("V3 object: %q %v", got, err)
	}
}

// gate holds the first request of op that reaches the proxy until release
// is closed; arrived is closed when it comes. Other requests pass (the
// tools run with --concurrency 1, so none is waiting behind it).
type gate struct {
	arrived, release chan struct{}
	once             sync.Once
}

func newGate(p *testenv.FaultProxy, op string) *gate {
	g := &gate{arrived: make(chan struct{}), release: make(chan struct{})}
	p.Add(testenv.Rule{Op: op, Fault: testenv.Latency, If: func(*http.Request) bool {
		held := false
		g.once.Do(func() { close(g.arrived); held = true })
		if held {
			<-g.release
		}
		return false
	}})
	return g
}

// TestFleetRace: an object another client overwrites while rewrap or
// encrypt works on it is left as that client wrote it, and reported. The
// overwrite happens while a request of the tool is held at a proxy: for
// rewrap the KMS Encrypt that wraps the key anew (after the object was
// read, before anything is written), for encrypt the conditional PutObject.
func TestFleetRace(t *testing.T) {
	w := newWorld(t)
	setGO3InstructionEnv(t, w)
	keyA, _ := w.KMS.NewKey(t)
	keyB, _ := w.KMS.NewKey(t)
	s3p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	kmsp := testenv.NewFaultProxy(t, w.KMS.Endpoint, testenv.KMSOp)
	go3, err := oracle.GO3(w.servers(), keyA, false)
	if err != nil {
		t.Fatal(err)
	}
	instr := oracle.FindGO1Writer("GO1-V2-kms+context-instruction")
	viaProxies := func(args ...string) chan toolRun {
		pw := *w
		pw.S3, pw.KMS = w.S3.Via(s3p), w.KMS.Via(kmsp)
		done := make(chan toolRun, 1)
		go func() { done <- pw.tool(t, keyA, args...) }()
		return done
	}
	for _, tc := range []struct {
		name  string
		proxy *testenv.FaultProxy
		op    string
		args  []string
		// put writes the object as the other client does.
		put func(key string, plain []byte)
		// first is the object's first version, as put makes it unless set.
		first func(key string)
	}{{
		name: "rewrap", proxy: kmsp, op: "Encrypt",
		args: []string{"rewrap", "--json", "--concurrency", "1", "--to-kms-key-id", keyB},
		put: func(key string, plain []byte) {
			if err := oracle.GO3Put(bg, go3, w.Bucket, key, plain, nil); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "rewrap-instruction-file", proxy: kmsp, op: "Encrypt",
		args: []string{"rewrap", "--json", "--concurrency", "1", "--to-kms-key-id", keyB},
		put: func(key string, plain []byte) {
			if err := instr.Put(bg, w.servers(), keyA, w.Bucket, key, plain); err != nil {
				t.Fatal(err)
			}
		},
	}, {
		name: "encrypt", proxy: s3p, op: "PutObject",
		args:  []string{"encrypt", "--json", "--concurrency", "1"},
		first: func(key string) { w.putRaw(t, key, []byte("first plaintext"), nil) },
		put: func(key string, plain []byte) {
			if err := oracle.GO3Put(bg, go3, w.Bucket, key, plain, nil); err != nil {
				t.Fatal(err)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			key := "race/" + tc.name
			if tc.first != nil {
				tc.first(key)
			} else {
				tc.put(key, []byte("first version"))
			}
			g := newGate(tc.proxy, tc.op)
			defer tc.proxy.Clear()
			done := viaProxies(append(tc.args, "s3://"+w.Bucket+"/"+key)...)
			<-g.arrived
			newPlain := []byte("second version, written meanwhile")
			tc.put(key, newPlain)
			raw, meta := w.getRaw(t, key)
			close(g.release)
			r := <-done
			mustTool(t, r, 1)
			if got := r.keysWith(t, "failed"); !slices.Equal(got, []string{key}) || !strings.Contains(r.stdout, "changed while") {
				t.Fatalf("the race is not reported: %s", r.stdout)
			}
			after, metaAfter := w.getRaw(t, key)
			if !bytes.Equal(after, raw) || fmt.Sprint(meta) != fmt.Sprint(metaAfter) {
				t.Fatal("the other client's object was rewritten")
			}
			got, err := oracle.GO3Get(bg, go3, w.Bucket, key)
			if err != nil || !bytes.Equal(got, newPlain) {
				t.Fatalf("the other client's object does not decrypt: %q %v", got, err)
			}
		})
	}
}

// TestFleetRewrapKeyring: rewrap from a KMS key to a keyring key and on to
// another keyring key, in both storage modes; each step reads back with
// verify and a mount that has only the new key, and a second run changes
// nothing.
func TestFleetRewrapKeyring(t *testing.T) {
	w := newWorld(t)
	keyA, _ := w.KMS.NewKey(t)
	all := map[string][]byte{}
	for _, mode := range []string{"object-metadata", "instruction-file"} {
		for k, v := range w.fleetObjects(t, mode, keyA, 5, "--storage-mode", mode) {
			all[k] = v
		}
	}
	dir := t.TempDir()
	kr := filepath.Join(dir, "kr.json")
	csefsIn(t, w.env, "keyring", "create", kr)
	conn := []string{"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region, "--kms-endpoint-url", w.KMS.Endpoint}
	custom := append(slices.Clone(conn), "--cse", "custom", "--keyring", kr)
	target := "s3://" + w.Bucket

	r := w.tool(t, keyA, "rewrap", "--json", "--to-keyring", kr, target)
	mustTool(t, r, 0)
	if n := len(r.keysWith(t, "changed")); n != 10 {
		t.Fatalf("KMS -> keyring changed %d, want 10\n%s", n, r.stderr)
	}
	if _, err := w.KMS.Client(t).DisableKey(bg, &kms.DisableKeyInput{KeyId: aws.String(keyA)}); err != nil {
		t.Fatal(err)
	}
	mustTool(t, w.toolRaw(t, append(append([]string{"verify"}, custom...), target)...), 0)

	csefsIn(t, w.env, "keyring", "add", kr, "second")
	r = w.toolRaw(t, append(append([]string{"rewrap", "--json"}, custom...), "--to-keyring", kr, "--to-keyname", "second", target)...)
	mustTool(t, r, 0)
	if n := len(r.keysWith(t, "changed")); n != 10 {
		t.Fatalf("keyring -> keyring changed %d, want 10\n%s", n, r.stderr)
	}
	if env := storedEnvelope(t, w, "instruction-file/f002", true); env.Key.MatDesc["keyname"] != "second" {
		t.Fatalf("instruction file names %v", env.Key.MatDesc)
	}
	r = w.toolRaw(t, append(append([]string{"rewrap", "--json"}, custom...), "--to-keyring", kr, "--to-keyname", "second", target)...)
	mustTool(t, r, 0)
	if n := len(r.keysWith(t, "changed")); n != 0 {
		t.Fatalf("second run changed %d", n)
	}
	for _, mode := range []string{"object-metadata", "instruction-file"} {
		m := mountWith(t, w.env, target+"/"+mode, append(slices.Clone(custom), "--storage-mode", mode)...)
		for _, name := range []string{"f000", "f004"} {
			got, err := os.ReadFile(m.path(name))
			if err != nil || !bytes.Equal(got, all[mode+"/"+name]) {
				t.Fatalf("%s/%s through a keyring mount: %v", mode, name, err)
			}
		}
		m.Unmount(t)
	}
}

// TestFleetProgress: on a terminal (script(1) gives the tool a pty) the
// progress is a bar with the count, rate and ETA, cleared before each
// report line; piped, there is no bar; both end with the summary.
func TestFleetProgress(t *testing.T) {
	needTool(t, "script")
	w := newWorld(t)
	for i := range 30 {
		w.putRaw(t, fmt.Sprintf("pg/%02d", i), []byte("plain"), nil)
	}
	args := append([]string{csefsBin(t), "encrypt"}, w.s3Flags(w.KMS.KeyID)...)
	args = append(args, "s3://"+w.Bucket+"/pg")
	cmd := exec.Command("script", "-qefc", strings.Join(args, " "), "/dev/null")
	cmd.Env = w.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("csefs encrypt on a pty: %v\n%s", err, out)
	}
	s := string(out)
	// The bar: drawn at once as a spinner ("\r| encrypted (0/-, 0
	// objects/hr)"), a bar once the second listing has counted the objects
	// and its 100 ms throttle has passed ("\rencrypted ... (3/30, ...)"),
	// which a fast run may never reach.
	if !regexp.MustCompile(`\r(. )?encrypted.*objects/`).MatchString(s) {
		t.Fatalf("terminal output lacks the bar:\n%q", s)
	}
	if want := "csefs: encrypted done: 30 objects checked, 30 changed"; !strings.Contains(s, want) {
		t.Fatalf("terminal output lacks %q:\n%q", want, s)
	}
	if strings.Count(s, "changed\ts3://") != 30 {
		t.Fatalf("report lines missing on the terminal:\n%q", s)
	}
	r := w.tool(t, w.KMS.KeyID, "verify", "s3://"+w.Bucket+"/pg")
	mustTool(t, r, 0)
	if strings.Contains(r.stderr, "\r") || strings.Contains(r.stderr, "% |") || !strings.Contains(r.stderr, "csefs: verified done: 30 objects checked") {
		t.Fatalf("piped progress: %q", r.stderr)
	}
}

// TestFleetRewrapLegacyKMS: objects with EMRFS's legacy kms wrap (a CBC
// one from GO1's V1 client, a GCM one from a --kms-wrap kms mount) keep that
// wrap under the new key, so EMRFS still reads them, and name the new key in
// kms_cmk_id; an explicit --kms-wrap kms+context converts them.
func TestFleetRewrapLegacyKMS(t *testing.T) {
	w := newWorld(t)
	keyA, _ := w.KMS.NewKey(t)
	keyB, _ := w.KMS.NewKey(t)
	if err := oracle.FindGO1Writer("GO1-V1-kms-CBC").Put(bg, w.servers(), keyA, w.Bucket, "legacy/cbc", []byte("emrfs cbc object")); err != nil {
		t.Fatal(err)
	}
	m := w.mount(t, "legacy", "--kms-key-id", keyA, "--kms-wrap", "kms")
	if err := os.WriteFile(m.path("gcm"), []byte("emrfs gcm object"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	mustTool(t, w.tool(t, keyA, "rewrap", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/legacy/"), 0)
	if _, err := w.KMS.Client(t).DisableKey(bg, &kms.DisableKeyInput{KeyId: aws.String(keyA)}); err != nil {
		t.Fatal(err)
	}
	go3, err := oracle.GO3(w.servers(), keyB, true)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"legacy/cbc": "emrfs cbc object", "legacy/gcm": "emrfs gcm object"} {
		env := storedEnvelope(t, w, key, false)
		if env.Key.WrapAlg != "kms" || env.Key.MatDesc["kms_cmk_id"] != keyB {
			t.Fatalf("%s after rewrap: wrap %s, matdesc %v; want kms naming %s", key, env.Key.WrapAlg, env.Key.MatDesc, keyB)
		}
		if got, err := oracle.GO3Get(bg, go3, w.Bucket, key); err != nil || string(got) != want {
			t.Fatalf("%s: GO3 (legacy) after rewrap: %q %v", key, got, err)
		}
	}
	r := w.tool(t, keyB, "rewrap", "--json", "--kms-wrap", "kms+context", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/legacy/")
	mustTool(t, r, 0)
	if got := r.keysWith(t, "changed"); len(got) != 2 {
		t.Fatalf("--kms-wrap kms+context converted %v", got)
	}
	if env := storedEnvelope(t, w, "legacy/gcm", false); env.Key.WrapAlg != "kms+context" {
		t.Fatalf("converted wrap is %s", env.Key.WrapAlg)
	}
	mustTool(t, w.tool(t, keyB, "verify", "s3://"+w.Bucket+"/legacy/"), 0)
}

// TestFleetLocalDir: the tools on a file:// directory with a keyring:
// --dry-run writes nothing, encrypt encrypts in place, inspect (text) of one
// file describes it, verify passes, and a mount of the directory reads the
// original bytes.
func TestFleetLocalDir(t *testing.T) {
	requireFUSE(t)
	env := cleanEnv(t)
	dir := t.TempDir()
	kr := filepath.Join(t.TempDir(), "kr.json")
	csefsIn(t, env, "keyring", "create", kr)
	want := map[string][]byte{"a.txt": []byte("hello\n"), "sub/b.bin": randBytes(t, 200000)}
	for name, b := range want {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := "file://" + dir
	w := &world{env: env}
	r := w.toolRaw(t, "encrypt", "--dry-run", "--keyring", kr, src)
	mustTool(t, r, 0)
	if got, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(got) != "hello\n" || strings.Count(r.stdout, "would encrypt") != 2 {
		t.Fatalf("--dry-run: %q\n%s", got, r.stdout)
	}
	mustTool(t, w.toolRaw(t, "encrypt", "--keyring", kr, src), 0)
	if got, _ := os.ReadFile(filepath.Join(dir, "a.txt")); len(got) != 6+16 {
		t.Fatalf("a.txt holds %d bytes after encrypt, want 22", len(got))
	}
	ins := w.toolRaw(t, "inspect", src+"/a.txt")
	mustTool(t, ins, 0)
	for _, s := range []string{"format:                V2 AES-GCM", "storage:               object-metadata", "keyring key:           default", "plaintext size:        6"} {
		if !strings.Contains(ins.stdout, s) {
			t.Fatalf("inspect lacks %q:\n%s", s, ins.stdout)
		}
	}
	mustTool(t, w.toolRaw(t, "verify", "--keyring", kr, src), 0)
	m := mountWith(t, env, src, "--keyring", kr)
	for name, b := range want {
		if got, err := os.ReadFile(m.path(name)); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s through the mount: %v", name, err)
		}
	}
}

// TestFleetRewrapAbort: a second SIGINT abandons the objects in flight;
// every object is still whole (under the old key or the new), and a new run
// finishes.
func TestFleetRewrapAbort(t *testing.T) {
	w := newWorld(t)
	keyA, _ := w.KMS.NewKey(t)
	keyB, _ := w.KMS.NewKey(t)
	for i := range 100 {
		w.putRaw(t, fmt.Sprintf("q/%03d", i), randBytes(t, 3000), nil)
	}
	mustTool(t, w.tool(t, keyA, "encrypt", "s3://"+w.Bucket+"/q"), 0)
	args := append([]string{"rewrap"}, w.s3Flags(keyA)...)
	args = append(args, "--concurrency", "8", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/q")
	cmd := exec.Command(csefsBin(t), args...)
	cmd.Env = w.env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	n := 0
	for sc.Scan() {
		if n++; n == 10 {
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Process.Signal(syscall.SIGINT)
		}
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("aborted rewrap: %v, want exit 130", err)
	}
	mustTool(t, w.tool(t, keyA, "verify", "s3://"+w.Bucket+"/q"), 0)
	mustTool(t, w.tool(t, keyA, "rewrap", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/q"), 0)
	r := w.tool(t, keyB, "rewrap", "--to-kms-key-id", keyB, "s3://"+w.Bucket+"/q")
	mustTool(t, r, 0)
	if !strings.Contains(r.stderr, "100 objects checked, 0 changed, 100 skipped") {
		t.Fatalf("after the aborted run and a new one: %s", r.stderr)
	}
}
