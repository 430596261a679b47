package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/metadata"
)

// absent fails the test if key exists in the bucket.
func (w *world) absent(t *testing.T, key string) {
	t.Helper()
	_, err := w.S3.Client(t).HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String(key)})
	if err == nil {
		t.Errorf("%s still exists in the bucket", key)
	}
}

// runFails runs a command that must fail, with want in its output.
func runFails(t *testing.T, want, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err == nil {
		t.Errorf("%s %s succeeded:\n%s", name, strings.Join(args, " "), out)
	} else if !strings.Contains(string(out), want) {
		t.Errorf("%s %s: %v, output lacks %q:\n%s", name, strings.Join(args, " "), err, want, out)
	}
}

// TestFeatureRenameFile: mv keeps the content and the envelope (the same
// wrapped data key), and mv over an existing file replaces it.
func TestFeatureRenameFile(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	src := randomFile(t, t.TempDir(), "a", 3<<20)
	want, _ := os.ReadFile(src)
	run(t, "cp", src, m.path("a"))
	_, before := w.head(t, "a")
	if before["x-amz-key-v2"] == "" {
		t.Fatalf("no x-amz-key-v2 in %v", before)
	}
	run(t, "mv", m.path("a"), m.path("b"))
	_, after := w.head(t, "b")
	if after["x-amz-key-v2"] != before["x-amz-key-v2"] || after["x-amz-iv"] != before["x-amz-iv"] {
		t.Error("envelope changed by mv")
	}
	w.absent(t, "a")
	if _, err := os.Stat(m.path("a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of the old name: %v", err)
	}
	got, err := os.ReadFile(m.path("b"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content after mv: %v, equal %v", err, bytes.Equal(got, want))
	}

	// Over an existing file.
	if err := os.WriteFile(m.path("c"), []byte("short"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mv", m.path("b"), m.path("c"))
	got, err = os.ReadFile(m.path("c"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content after mv over a file: %v, equal %v", err, bytes.Equal(got, want))
	}
	w.absent(t, "b")

	// Into a subdirectory, and the moved inode still reads.
	run(t, "mkdir", m.path("sub"))
	run(t, "mv", m.path("c"), m.path("sub", "c"))
	run(t, "cmp", src, m.path("sub", "c"))
}

// TestFeatureRenameDir: mv of a nested tree with an empty subdirectory, then
// diff -r against a local copy, before and after a remount.
func TestFeatureRenameDir(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	local := filepath.Join(t.TempDir(), "tree")
	for _, d := range []string{"e/f", "empty", "g"} {
		if err := os.MkdirAll(filepath.Join(local, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	randomFile(t, local, "x", 1000)
	randomFile(t, filepath.Join(local, "e"), "y", 70000)
	randomFile(t, filepath.Join(local, "e", "f"), "z", 1)
	randomFile(t, filepath.Join(local, "g"), "w", 0)
	run(t, "cp", "-r", local, m.path("d"))
	run(t, "diff", "-r", local, m.path("d"))
	run(t, "mv", m.path("d"), m.path("moved"))
	run(t, "diff", "-r", local, m.path("moved"))
	if _, err := os.Stat(m.path("d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of the old directory: %v", err)
	}
	w.absent(t, "d/x")
	w.absent(t, "d/e/f/z")
	// Over an empty directory, and into a subdirectory.
	run(t, "mkdir", m.path("target"))
	run(t, "mv", "-T", m.path("moved"), m.path("target"))
	run(t, "mkdir", m.path("p"))
	run(t, "mv", m.path("target"), m.path("p", "q"))
	run(t, "diff", "-r", local, m.path("p", "q"))
	// A directory over a non-empty one is refused.
	run(t, "mkdir", "-p", m.path("full", "q"))
	if err := os.WriteFile(m.path("full", "q", "k"), []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Rename(m.path("p", "q"), m.path("full", "q")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("rename over a non-empty directory: %v, want ENOTEMPTY", err)
	}
	m.Unmount(t)
	m = w.mount(t, "")
	run(t, "diff", "-r", local, m.path("p", "q"))
}

// TestFeatureRenameInstructionFile: with --storage-mode instruction-file the
// .instruction moves with its object.
func TestFeatureRenameInstructionFile(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "", "--storage-mode", "instruction-file")
	src := randomFile(t, t.TempDir(), "a", 100000)
	run(t, "cp", src, m.path("a"))
	instr, _ := w.getRaw(t, "a.instruction")
	run(t, "mv", m.path("a"), m.path("b"))
	moved, _ := w.getRaw(t, "b.instruction")
	if !bytes.Equal(instr, moved) {
		t.Error("instruction file changed by mv")
	}
	w.absent(t, "a")
	w.absent(t, "a.instruction")
	run(t, "cmp", src, m.path("b"))
	run(t, "mkdir", m.path("d"))
	run(t, "mv", m.path("b"), m.path("d", "b"))
	run(t, "mv", m.path("d"), m.path("e"))
	w.head(t, "e/b.instruction")
	w.absent(t, "d/b.instruction")
	m.Unmount(t)
	m = w.mount(t, "")
	run(t, "cmp", src, m.path("e", "b"))
}

// TestFeatureAttrs: touch -d, chmod and chown persist across a remount.
func TestFeatureAttrs(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	if err := os.WriteFile(m.path("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "touch", "-d", "2001-02-03 04:05:06 UTC", m.path("f"))
	run(t, "chmod", "640", m.path("f"))
	run(t, "chown", "123:456", m.path("f"))
	const want = "640 123 456 981173106 4"
	format := "%a %u %g %Y %s"
	if got := strings.TrimSpace(run(t, "stat", "-c", format, m.path("f"))); got != want {
		t.Errorf("stat = %q, want %q", got, want)
	}
	// Right after the write these changes are deferred (docs/semantics.md,
	// "Deferred attributes"): fsync stores them.
	fsyncPath(t, m.path("f"))
	_, meta := w.head(t, "f")
	if meta["x-amz-key-v2"] == "" || meta[metadata.AttrMode] != "100640" || meta[metadata.AttrUID] != "123" {
		t.Errorf("stored metadata %v", meta)
	}
	m.Unmount(t)
	m = w.mount(t, "")
	if got := strings.TrimSpace(run(t, "stat", "-c", format, m.path("f"))); got != want {
		t.Errorf("stat after remount = %q, want %q", got, want)
	}
	if got, err := os.ReadFile(m.path("f")); err != nil || string(got) != "data" {
		t.Errorf("content after attribute changes: %q, %v", got, err)
	}
}

// TestFeatureSymlink: ln -s, readlink, cat through the link, and the target
// is stored encrypted.
func TestFeatureSymlink(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	if err := os.WriteFile(m.path("target"), []byte("through the link"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "ln", "-s", "target", m.path("link"))
	if got := strings.TrimSpace(run(t, "readlink", m.path("link"))); got != "target" {
		t.Errorf("readlink = %q", got)
	}
	if got := run(t, "cat", m.path("link")); got != "through the link" {
		t.Errorf("cat through the link = %q", got)
	}
	if got := strings.TrimSpace(run(t, "stat", "-c", "%F %s", m.path("link"))); got != "symbolic link 6" {
		t.Errorf("stat = %q", got)
	}
	body, meta := w.getRaw(t, "link")
	if meta[metadata.AttrSymlink] != "1" || meta["x-amz-key-v2"] == "" || bytes.Contains(body, []byte("target")) {
		t.Errorf("stored symlink: metadata %v, body %q", meta, body)
	}
	run(t, "mv", m.path("link"), m.path("link2"))
	m.Unmount(t)
	m = w.mount(t, "")
	if got := strings.TrimSpace(run(t, "readlink", m.path("link2"))); got != "target" {
		t.Errorf("readlink after mv and remount = %q", got)
	}
}

// TestFeatureLinkXattr: hard links and setfattr are not supported; by
// default no xattr call is answered, and with --xattrs user.csefs.encryption
// shows how an object is stored.
func TestFeatureLinkXattr(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	if err := os.WriteFile(m.path("enc"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.putRaw(t, "plain", []byte("public"), nil)
	runFails(t, "Operation not supported", "ln", m.path("enc"), m.path("hard"))
	runFails(t, "Operation not supported", "setfattr", "-n", "user.x", "-v", "1", m.path("enc"))
	runFails(t, "Operation not supported", "getfattr", "-n", "user.csefs.encryption", m.path("enc"))
	m.Unmount(t)

	m = w.mount(t, "", "--xattrs")
	runFails(t, "Operation not supported", "setfattr", "-n", "user.x", "-v", "1", m.path("enc"))
	for name, want := range map[string]string{"enc": "kms+context AES/GCM/NoPadding", "plain": "plaintext"} {
		got := run(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.csefs.encryption", m.path(name))
		if got != want {
			t.Errorf("%s: user.csefs.encryption = %q, want %q", name, got, want)
		}
	}
	if got := run(t, "getfattr", "--absolute-names", "-d", "-m", "-", m.path("enc")); !strings.Contains(got, "user.csefs.encryption") {
		t.Errorf("getfattr -d lists no user.csefs.encryption:\n%s", got)
	}
}
