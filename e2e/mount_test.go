package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/csefs/csefs/metadata"
)

// TestCopyInOut copies files into and out of a real mount and compares them,
// then checks that what S3 holds is ciphertext with a V2 envelope.
func TestCopyInOut(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	src := t.TempDir()
	out := t.TempDir()
	for _, n := range []int64{0, 1, 5_000_000, 200 << 20} {
		name := fmt.Sprintf("f%d", n)
		t.Run(name, func(t *testing.T) {
			p := randomFile(t, src, name, n)
			run(t, "cp", p, m.path(name))
			run(t, "cp", m.path(name), filepath.Join(out, name))
			run(t, "cmp", p, filepath.Join(out, name))

			size, meta := w.head(t, name)
			if size != n+16 {
				t.Errorf("stored size %d, want %d (plaintext + GCM tag)", size, n+16)
			}
			env, err := metadata.Detect(meta)
			if err != nil {
				t.Fatalf("stored envelope: %v (metadata %v)", err, meta)
			}
			if env.Key.CEKAlg != "AES/GCM/NoPadding" || env.Key.WrapAlg != "kms+context" {
				t.Errorf("envelope cek %q wrap %q", env.Key.CEKAlg, env.Key.WrapAlg)
			}
			if n >= 1000 {
				body, _ := w.getRaw(t, name)
				plain, _ := os.ReadFile(p)
				if bytes.Contains(body, plain[:1000]) {
					t.Error("stored object contains the plaintext")
				}
			}
		})
	}
}

// TestDirectories covers mkdir, rmdir, rm and the sizes ls -l shows.
func TestDirectories(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	run(t, "mkdir", m.path("d"))
	run(t, "mkdir", "-p", m.path("d", "e", "f"))
	if err := os.WriteFile(m.path("d", "x"), []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("d", "e", "y"), bytes.Repeat([]byte("z"), 70000), 0o644); err != nil {
		t.Fatal(err)
	}
	ls := run(t, "ls", "-l", m.path("d"))
	if !regexpLine(ls, "x", 5) {
		t.Errorf("ls -l shows no 5-byte x:\n%s", ls)
	}
	ls = run(t, "ls", "-l", m.path("d", "e"))
	if !regexpLine(ls, "y", 70000) {
		t.Errorf("ls -l shows no 70000-byte y:\n%s", ls)
	}
	// The marker is stored as an empty "d/" object.
	if size, _ := w.head(t, "d/"); size != 0 {
		t.Errorf("dir marker size %d", size)
	}
	err := syscall.Rmdir(m.path("d", "e"))
	if !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rmdir of a non-empty dir: %v, want ENOTEMPTY", err)
	}
	run(t, "rm", m.path("d", "e", "y"))
	run(t, "rmdir", m.path("d", "e", "f"))
	run(t, "rmdir", m.path("d", "e"))
	if _, err := os.Stat(m.path("d", "e")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after rmdir: %v", err)
	}
	run(t, "rm", m.path("d", "x"))
	entries, err := os.ReadDir(m.path("d"))
	if err != nil || len(entries) != 0 {
		t.Errorf("d after rm: %v %v", entries, err)
	}
	run(t, "rmdir", m.path("d"))
	entries, err = os.ReadDir(m.Dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("root at the end: %v %v", entries, err)
	}
}

// regexpLine reports whether ls -l output has a line for name with size.
func regexpLine(ls, name string, size int64) bool {
	for _, line := range strings.Split(ls, "\n") {
		f := strings.Fields(line)
		if len(f) >= 9 && f[len(f)-1] == name && f[4] == fmt.Sprint(size) {
			return true
		}
	}
	return false
}

// TestRemount writes through one mount and reads back through the next.
func TestRemount(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "pre/fix")
	src := t.TempDir()
	p := randomFile(t, src, "a", 3<<20+5)
	run(t, "mkdir", m.path("sub"))
	run(t, "cp", p, m.path("sub", "a"))
	m.Unmount(t)
	if size, _ := w.head(t, "pre/fix/sub/a"); size != 3<<20+5+16 {
		t.Errorf("stored size under the prefix: %d", size)
	}
	m2 := w.mount(t, "pre/fix")
	run(t, "cmp", p, m2.path("sub", "a"))
}

// TestTamperedObjectFailsRead flips one byte of stored objects, small and
// large, and expects reads to fail with EIO and a log line naming the object.
func TestTamperedObjectFailsRead(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "", "--verify-threshold", "1MiB")
	src := t.TempDir()
	for _, tc := range []struct {
		name string
		size int64
		at   func(n int) int
	}{
		{"small-body", 1000, func(n int) int { return 10 }},
		{"small-tag", 1000, func(n int) int { return n - 1 }},
		{"large-body-start", 3 << 20, func(n int) int { return 5 }},
		{"large-body-end", 3 << 20, func(n int) int { return n - 17 }},
		{"large-tag", 3 << 20, func(n int) int { return n - 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := randomFile(t, src, tc.name, tc.size)
			run(t, "cp", p, m.path(tc.name))
			body, meta := w.getRaw(t, tc.name)
			body[tc.at(len(body))] ^= 0x40
			w.putRaw(t, tc.name, body, meta)
			out, err := exec.Command("cat", m.path(tc.name)).Output()
			if err == nil {
				t.Fatalf("cat of a tampered object succeeded (%d bytes)", len(out))
			}
			if !strings.Contains(m.logText(t), tc.name) {
				t.Errorf("no log line names the object:\n%s", m.logText(t))
			}
		})
	}
}

// TestPlaintextObjects: objects written without an envelope (Hue, aws s3 cp)
// read as they are, or are refused under --plaintext=deny.
func TestPlaintextObjects(t *testing.T) {
	w := newWorld(t)
	body := []byte("written by a tool that bypasses encryption\n")
	w.putRaw(t, "plain.txt", body, nil)
	m := w.mount(t, "")
	got, err := os.ReadFile(m.path("plain.txt"))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("plaintext read: %q, %v", got, err)
	}
	st, err := os.Stat(m.path("plain.txt"))
	if err != nil || st.Size() != int64(len(body)) {
		t.Fatalf("plaintext size: %v %v", st, err)
	}
	deny := w.mount(t, "", "--plaintext", "deny")
	_, err = os.ReadFile(deny.path("plain.txt"))
	if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("--plaintext=deny read: %v, want EACCES", err)
	}
}

// TestEmbeddedDefault mounts a local directory with the default keyring and
// no AWS configuration or servers at all.
func TestEmbeddedDefault(t *testing.T) {
	requireFUSE(t)
	env := cleanEnv(t)
	bucket := t.TempDir()
	m := mountWith(t, env, "file://"+bucket)
	src := t.TempDir()
	marker := bytes.Repeat([]byte("CSEFS-PLAINTEXT-MARKER "), 50000)
	p := filepath.Join(src, "doc.txt")
	if err := os.WriteFile(p, marker, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mkdir", m.path("dir"))
	run(t, "cp", p, m.path("dir", "doc.txt"))
	run(t, "cmp", p, m.path("dir", "doc.txt"))
	m.Unmount(t)
	// Nothing under the bucket directory holds the plaintext.
	err := filepath.WalkDir(bucket, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("CSEFS-PLAINTEXT-MARKER")) {
			t.Errorf("%s holds plaintext", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m2 := mountWith(t, env, "file://"+bucket)
	run(t, "cmp", p, m2.path("dir", "doc.txt"))
}

// TestReadAuthenticationPolicy checks the policy of docs/security.md on an
// object above the verify threshold, fetched by parallel ranged GETs, with one
// byte flipped in the middle of its body.
func TestReadAuthenticationPolicy(t *testing.T) {
	w := newWorld(t)
	const size = 20 << 20
	const flip = 10 << 20
	src := t.TempDir()
	p := randomFile(t, src, "big", size)
	plain, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	m := w.mount(t, "")
	run(t, "cp", p, m.path("big"))
	body, meta := w.getRaw(t, "big")
	body[flip] ^= 0x01
	w.putRaw(t, "big", body, meta)

	pread := func(m *mounted, off, n int64) ([]byte, error) {
		f, err := os.Open(m.path("big"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		buf := make([]byte, n)
		k, err := f.ReadAt(buf, off)
		return buf[:k], err
	}

	// A whole-file read fails: the tag is checked before EOF.
	if out, err := exec.Command("cat", m.path("big")).Output(); err == nil {
		t.Fatalf("cat of the tampered object succeeded (%d bytes)", len(out))
	}
	// Random reads away from the end are AES-CTR, unauthenticated: they
	// return the stored bytes, the flipped one included.
	got, err := pread(m, 1<<20, 4096)
	if err != nil || !bytes.Equal(got, plain[1<<20:1<<20+4096]) {
		t.Fatalf("pread of an untouched range: %v", err)
	}
	got, err = pread(m, flip, 16)
	if err != nil || got[0] != plain[flip]^0x01 || !bytes.Equal(got[1:], plain[flip+1:flip+16]) {
		t.Fatalf("pread of the flipped range: %v, got %x", err, got)
	}
	// A read that includes the last byte authenticates the whole object.
	if _, err := pread(m, size-4096, 4096); !errors.Is(err, syscall.EIO) {
		t.Fatalf("pread of the last bytes: %v, want EIO", err)
	}
	// --strict-ranged-reads authenticates before serving any random read.
	strict := w.mount(t, "", "--strict-ranged-reads")
	if _, err := pread(strict, 1<<20, 4096); !errors.Is(err, syscall.EIO) {
		t.Fatalf("strict pread of an untouched range: %v, want EIO", err)
	}
}

// TestMountReadAhead: the mount raises the kernel's read-ahead for itself
// to 1 MiB (FUSE's INIT can only lower the 128 KiB default), so sequential
// reads arrive as 1 MiB READs.
func TestMountReadAhead(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	var st syscall.Stat_t
	if err := syscall.Stat(m.path(), &st); err != nil {
		t.Fatal(err)
	}
	dev := uint64(st.Dev)
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", (dev>>8)&0xfff|(dev>>32)&^0xfff, dev&0xff|(dev>>12)&^0xff)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "1024" {
		t.Errorf("%s = %s, want 1024", path, got)
	}
}
