package e2e

import (
	"bytes"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestAttrsFromList: with --attrs-from-list, ls -l of a directory makes no
// HEAD. Sizes are the stored size less the GCM tag, and modes are the
// mount's. Opening a file corrects what the LIST could not know: a plaintext
// object reads whole right after ls -l showed it 16 bytes short.
func TestAttrsFromList(t *testing.T) {
	w := newWorld(t)
	m0 := w.mount(t, "")
	if err := os.Mkdir(m0.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"a": 100, "b": 0, "c": 1 << 20} {
		if err := os.WriteFile(m0.path("d", name), bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(m0.path("d", "a"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A chmod right after the write is stored within a second, or at
	// fsync (docs/semantics.md): the other mount below must see it.
	fsyncPath(t, m0.path("d", "a"))
	plain := []byte(strings.Repeat("plaintext object, no envelope. ", 3))
	w.putRaw(t, "d/plain", plain, nil)

	proxy := newHoldProxy(t, w.S3.Endpoint)
	m := w.mountVia(t, proxy.URL, "--attrs-from-list", "--metadata-ttl", "60s")
	if _, err := os.Stat(m.path("d")); err != nil { // its own lookup may HEAD "d"
		t.Fatal(err)
	}
	before := proxy.heads.Load()
	out := run(t, "ls", "-ln", m.path("d"))
	if n := proxy.heads.Load() - before; n != 0 {
		t.Errorf("ls -l of 4 files made %d HEADs, want 0", n)
	}
	sizes := map[string]string{}
	modes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] { // "total N" first
		f := strings.Fields(line)
		name := f[len(f)-1]
		sizes[name], modes[name] = f[4], f[0]
	}
	want := map[string]string{"a": "100", "b": "0", "c": "1048576", "plain": "77"}
	for name, size := range want {
		if sizes[name] != size {
			t.Errorf("ls -l shows %s with size %s, want %s (from the LIST)\n%s", name, sizes[name], size, out)
		}
	}
	if modes["a"] != "-rw-r--r--" {
		t.Errorf("ls -l shows a as %s, want the mount's -rw-r--r-- (the chmod needs a HEAD)", modes["a"])
	}

	// Right after: the kernel holds size 77 for plain; open must fix it.
	got, err := os.ReadFile(m.path("d", "plain"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("read %d bytes of the plaintext object, want %d", len(got), len(plain))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(m.path("d", "plain"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(plain)) {
		t.Errorf("stat after open: size %d, want %d", st.Size, len(plain))
	}
	// The exact attributes once opened.
	f, err := os.Open(m.path("d", "a"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("fstat of an open file: mode %v, want 0600", fi.Mode().Perm())
	}
}

// fsyncPath opens p read-only and fsyncs it: what makes a deferred chmod,
// chown or utimes durable (and visible to other mounts) at once.
func fsyncPath(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", p, err)
	}
}
