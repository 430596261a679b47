package e2e

// POSIX behaviours that ordinary programs rely on, each on a real mount:
// permission checks under --allow-other, directory fsync, times kept by
// chmod and chown, directory attributes, name limits, special files, size
// limits and the mountpoint check.

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/csefs/csefs/e2e/testenv"
)

// asNobody runs a shell command as uid/gid 65534 and returns its output and
// error.
func asNobody(t *testing.T, script string) (string, error) {
	t.Helper()
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// reachable lets other users reach the mountpoint: the test's temporary
// directories are 0700.
func reachable(t *testing.T, m *mounted) {
	t.Helper()
	for d := filepath.Dir(m.Dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPermissionsEnforced: on an --allow-other mount the kernel checks the
// stored mode: a file chmod'ed 0000 shows as 0000, and another user cannot
// read it, also after a remount; a 0644 file beside it is readable by that
// user, and a 0600 one is not.
func TestPermissionsEnforced(t *testing.T) {
	needRoot(t, "to run a command as another user")
	w := newWorld(t)
	m := w.mount(t, "", "--allow-other")
	reachable(t, m)
	for name, mode := range map[string]os.FileMode{"open": 0o644, "private": 0o600, "none": 0} {
		p := m.path(name)
		if err := os.WriteFile(p, []byte("secret "+name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	check := func(m *mounted) {
		t.Helper()
		if got := run(t, "stat", "-c", "%a", m.path("none")); strings.TrimSpace(got) != "0" {
			t.Errorf("mode of the 0000 file shows as %s", got)
		}
		if out, err := asNobody(t, "cat "+m.path("open")); err != nil || out != "secret open" {
			t.Errorf("nobody reading the 0644 file: %q, %v", out, err)
		}
		for _, name := range []string{"none", "private"} {
			out, err := asNobody(t, "cat "+m.path(name))
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Errorf("nobody reading the %s file: %q, %v; want Permission denied", name, out, err)
			}
		}
		if out, err := asNobody(t, "echo x > "+m.path("open")); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("nobody writing root's 0644 file: %q, %v; want Permission denied", out, err)
		}
	}
	check(m)
	m.Unmount(t)
	m = w.mount(t, "", "--allow-other")
	reachable(t, m)
	check(m)
}

// TestDirFsync: fsync(2) and fdatasync(2) of a directory succeed (after a
// rename into it, the pattern of programs that make a rename durable), on
// s3:// and file:// mounts.
func TestDirFsync(t *testing.T) {
	w := newWorld(t)
	for _, m := range []*mounted{w.mount(t, ""), mountWith(t, cleanEnv(t), "file://"+t.TempDir())} {
		if err := os.Mkdir(m.path("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m.path("d", "tmp"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(m.path("d", "tmp"), m.path("d", "final")); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{m.path("d"), m.Dir} {
			f, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Errorf("fsync(%s): %v", dir, err)
			}
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				t.Errorf("fdatasync(%s): %v", dir, err)
			}
			f.Close()
		}
	}
}

// TestChmodKeepsMtime: chmod and chown of a file whose mtime was never set
// explicitly (its upload time) leave the mtime as it was and set the ctime,
// also after a remount. The clock must move past the upload's second for the old code's
// self-copy to show a new time, so the test waits for it.
func TestChmodKeepsMtime(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "", "--metadata-ttl", "100ms")
	p := m.path("f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 2100*time.Millisecond; {
		time.Sleep(50 * time.Millisecond) // the clock, not a race: see above
	}
	st, err := os.Stat(p) // the kernel's and the mount's caches have expired: from a HEAD
	if err != nil {
		t.Fatal(err)
	}
	before := st.ModTime()
	changed := time.Now()
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 123, 456); err != nil {
		t.Fatal(err)
	}
	check := func(m *mounted) {
		t.Helper()
		st, err := os.Stat(m.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		if !st.ModTime().Equal(before) {
			t.Errorf("mtime %v after chmod and chown, want %v", st.ModTime(), before)
		}
		if st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 123 {
			t.Errorf("mode %v uid %d, want 0600 and 123", st.Mode(), st.Sys().(*syscall.Stat_t).Uid)
		}
		// The ctime is the change's.
		if ct := time.Unix(st.Sys().(*syscall.Stat_t).Ctim.Unix()); ct.Before(changed) {
			t.Errorf("ctime %v after chmod and chown at %v", ct, changed)
		}
	}
	check(m)
	m.Unmount(t)
	check(w.mount(t, "", "--metadata-ttl", "100ms"))
}

// statT stats p (without following a symlink).
func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func mtimeOf(st *syscall.Stat_t) time.Time { return time.Unix(st.Mtim.Unix()) }
func atimeOf(st *syscall.Stat_t) time.Time { return time.Unix(st.Atim.Unix()) }

// TestDirAttrs: a directory's mode, owner and mtime persist in its marker:
// mkdir stores the mode and the time, a create or unlink inside moves the
// mtime, chmod, chown and utimes are stored, and a remount right after (the
// changed mtime is stored at unmount) shows them all; on s3:// and file://.
func TestDirAttrs(t *testing.T) {
	w := newWorld(t)
	local := t.TempDir()
	env := cleanEnv(t)
	for _, tc := range []struct {
		name  string
		mount func() *mounted
	}{
		{"s3", func() *mounted { return w.mount(t, "") }},
		{"file", func() *mounted { return mountWith(t, env, "file://"+local) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.mount()
			start := time.Now().Add(-2 * time.Second)
			if err := syscall.Mkdir(m.path("d"), 0o700); err != nil {
				t.Fatal(err)
			}
			st := statT(t, m.path("d"))
			if st.Mode != syscall.S_IFDIR|0o700 || mtimeOf(st).Before(start) {
				t.Fatalf("new directory: mode %o mtime %v, want 040700 and now", st.Mode, mtimeOf(st))
			}
			made := mtimeOf(st)
			if err := os.WriteFile(m.path("d", "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := mtimeOf(statT(t, m.path("d"))); !got.After(made) {
				t.Errorf("mtime %v after a create in the directory, want after %v", got, made)
			}
			if err := os.Chmod(m.path("d"), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(m.path("d"), 12, 34); err != nil {
				t.Fatal(err)
			}
			old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
			if err := os.Chtimes(m.path("d"), old, old); err != nil {
				t.Fatal(err)
			}
			st = statT(t, m.path("d"))
			if st.Mode != syscall.S_IFDIR|0o750 || st.Uid != 12 || st.Gid != 34 || !mtimeOf(st).Equal(old) || !atimeOf(st).Equal(old) {
				t.Fatalf("after chmod, chown, utimes: mode %o owner %d:%d mtime %v atime %v", st.Mode, st.Uid, st.Gid, mtimeOf(st), atimeOf(st))
			}
			if err := os.Remove(m.path("d", "f")); err != nil {
				t.Fatal(err)
			}
			unlinked := mtimeOf(statT(t, m.path("d")))
			if !unlinked.After(old) {
				t.Errorf("mtime %v after an unlink in the directory, want now", unlinked)
			}
			m.Unmount(t)
			m = tc.mount()
			st = statT(t, m.path("d"))
			if st.Mode != syscall.S_IFDIR|0o750 || st.Uid != 12 || st.Gid != 34 || !mtimeOf(st).Equal(unlinked) {
				t.Errorf("after remount: mode %o owner %d:%d mtime %v, want 040750 12:34 %v", st.Mode, st.Uid, st.Gid, mtimeOf(st), unlinked)
			}
		})
	}
}

// TestDirAttrsDeferred: chmod, chown and utimes of a directory (tar x
// and rsync -a end each directory with them) are shown at once and stored
// later, without a request of their own: they succeed while S3 is
// unreachable, one self-copy of the marker stores all three at the
// directory's fsync, a rename right after a chmod keeps the mode, and an
// rmdir right after one leaves no marker behind. The old code copied the
// marker at each call, so the chmods failed (EIO) during the outage.
func TestDirAttrsDeferred(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	m := w.mountVia(t, p.URL, "--metadata-ttl", "1h")
	for _, d := range []string{"d", "d/sub", "gone"} {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(m.path("d", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	statT(t, m.path("d"))
	statT(t, m.path("d", "sub"))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := p.Outage(true); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("d"), 0o750); err != nil {
		t.Errorf("chmod of a directory while S3 is unreachable: %v", err)
	}
	if err := os.Chown(m.path("d"), 12, 34); err != nil {
		t.Errorf("chown of a directory while S3 is unreachable: %v", err)
	}
	if err := os.Chtimes(m.path("d"), old, old); err != nil {
		t.Errorf("utimes of a directory while S3 is unreachable: %v", err)
	}
	want := func(m *mounted, mtime time.Time) {
		t.Helper()
		st := statT(t, m.path("d"))
		if st.Mode != syscall.S_IFDIR|0o750 || st.Uid != 12 || st.Gid != 34 || !mtimeOf(st).Equal(mtime) {
			t.Errorf("d: mode %o owner %d:%d mtime %v, want 040750 12:34 %v", st.Mode, st.Uid, st.Gid, mtimeOf(st), mtime)
		}
	}
	want(m, old)
	if err := p.Outage(false); err != nil {
		t.Fatal(err)
	}
	copies := p.Requests("CopyObject")
	dir, err := os.Open(m.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Sync(); err != nil {
		t.Errorf("fsync of the directory: %v", err)
	}
	dir.Close()
	// The delayed flush may have tried (and failed) during the outage;
	// whichever stores them, the three changes travel in one copy.
	if n := p.Requests("CopyObject") - copies; n > 1 {
		t.Errorf("chmod, chown and utimes of a directory stored in %d copies, want 1", n)
	}
	if _, meta := w.head(t, "d/"); len(meta) == 0 {
		t.Errorf("d/ has no stored attributes after its fsync")
	}

	if err := os.Chmod(m.path("d", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("d", "sub"), m.path("d", "moved")); err != nil {
		t.Fatal(err)
	}
	// The rename inside d moves its mtime again; the unmount stores it.
	renamed := mtimeOf(statT(t, m.path("d")))
	if !renamed.After(old) {
		t.Errorf("d's mtime %v after a rename inside it, want now", renamed)
	}
	if err := os.Chmod(m.path("gone"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.path("gone")); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	if keys := w.listKeys(t, "gone"); len(keys) != 0 {
		t.Errorf("after chmod and rmdir: %v stored, want nothing", keys)
	}
	m = w.mount(t, "")
	want(m, renamed)
	if st := statT(t, m.path("d", "moved")); st.Mode != syscall.S_IFDIR|0o700 {
		t.Errorf("d/moved after chmod, rename and remount: mode %o, want 040700", st.Mode)
	}
}

// TestMkdirTreeRequests: mkdir needs no HEAD and LIST of its own when the
// lookup before it, or the parent's listing, already found the name absent:
// a tree made with mkdir (tar x, rsync, mkdir -p) costs one PUT per
// directory. The old code probed every name again (a LIST and a HEAD) before
// its PUT. The names still get EEXIST when they exist.
func TestMkdirTreeRequests(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	m := w.mountVia(t, p.URL)
	if err := os.Mkdir(m.path("top"), 0o755); err != nil {
		t.Fatal(err)
	}
	lists, puts := p.Requests("ListObjects"), p.Requests("PutObject")
	dirs := []string{"top/a", "top/a/b", "top/a/b/c", "top/x", "top/x/y"}
	for _, d := range dirs {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.Requests("ListObjects") - lists; n != 0 {
		t.Errorf("%d mkdirs in a tree made by this mount: %d LISTs, want 0", len(dirs), n)
	}
	if n := p.Requests("PutObject") - puts; n != len(dirs) {
		t.Errorf("%d mkdirs: %d PUTs, want %d", len(dirs), n, len(dirs))
	}
	for _, d := range append(dirs, "top") {
		if err := os.Mkdir(m.path(d), 0o755); !errors.Is(err, os.ErrExist) {
			t.Errorf("mkdir %s again: %v, want EEXIST", d, err)
		}
	}
	m.Unmount(t)
	for _, d := range dirs {
		if keys := w.listKeys(t, d+"/"); len(keys) == 0 {
			t.Errorf("%s/ not stored", d)
		}
	}
}

// TestOpenAfterOwnCommit: opening a file this mount has just written (rsync
// opens each file it wrote, to fchmod it, before its rename) needs no HEAD;
// the old code HEADed at every open. What another client writes in that
// window is still what the next open reads.
func TestOpenAfterOwnCommit(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	m := w.mountVia(t, p.URL)
	other := w.mount(t, "")
	if err := os.WriteFile(m.path("f"), []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	heads := p.Requests("HeadObject")
	fd, err := os.Open(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.Chmod(0o644); err != nil {
		t.Error(err)
	}
	fd.Close()
	if n := p.Requests("HeadObject") - heads; n != 0 {
		t.Errorf("open and fchmod of a file just written: %d HEADs, want 0", n)
	}
	if err := os.WriteFile(other.path("f"), []byte("two-two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(m.path("f")); err != nil || string(got) != "two-two" {
		t.Errorf("read after another mount's overwrite: %q, %v; want two-two", got, err)
	}
}

// TestPrefixOnlyDir: a directory that exists only as a key prefix (written
// by another tool, no marker) shows the mount's --dir-mode and owner and a
// recent mtime (the mount's start), not 1970; chmod gives it a marker that
// keeps the mode.
func TestPrefixOnlyDir(t *testing.T) {
	w := newWorld(t)
	w.putRaw(t, "p/q/x", []byte("x"), nil)
	before := time.Now().Add(-2 * time.Second)
	m := w.mount(t, "", "--dir-mode", "0751", "--uid", "7", "--gid", "8")
	for _, d := range []string{"p", "p/q"} {
		st := statT(t, m.path(d))
		if st.Mode != syscall.S_IFDIR|0o751 || st.Uid != 7 || st.Gid != 8 || mtimeOf(st).Before(before) {
			t.Errorf("%s: mode %o owner %d:%d mtime %v, want 040751 7:8 and the mount's start", d, st.Mode, st.Uid, st.Gid, mtimeOf(st))
		}
	}
	if err := os.Chmod(m.path("p"), 0o700); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	m = w.mount(t, "")
	if st := statT(t, m.path("p")); st.Mode != syscall.S_IFDIR|0o700 {
		t.Errorf("after chmod and remount: mode %o, want 040700", st.Mode)
	}
	if got, _ := os.ReadFile(m.path("p", "q", "x")); string(got) != "x" {
		t.Errorf("p/q/x reads %q", got)
	}
}

// TestFileTooBig: a truncate or a write past the largest object the mount
// can store (64 GiB of plaintext in one GCM message for an encrypted mount)
// fails with EFBIG, not ENOSPC from the staging bound; on s3:// and file://.
func TestFileTooBig(t *testing.T) {
	w := newWorld(t)
	for _, m := range []*mounted{w.mount(t, ""), mountWith(t, cleanEnv(t), "file://"+t.TempDir())} {
		p := m.path("big")
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		const limit = 1<<36 - 32
		if err := syscall.Truncate(p, limit+1); err != syscall.EFBIG {
			t.Errorf("truncate to 64 GiB + 1: %v, want EFBIG", err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("y"), limit); !errors.Is(err, syscall.EFBIG) {
			t.Errorf("write at 64 GiB: %v, want EFBIG", err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("close after the refused write: %v", err)
		}
		if got, _ := os.ReadFile(p); string(got) != "x" {
			t.Errorf("file reads %q after the refused changes, want x", got)
		}
	}
}

// TestAtime: a new file's atime is its mtime (not 1970); an atime set
// explicitly (touch -a -d) is stored and survives a remount, leaving the
// mtime; reading a file makes no write request.
func TestAtime(t *testing.T) {
	w := newWorld(t)
	p0 := newCountingProxy(t, w.S3.Endpoint)
	m := w.mountVia(t, p0.URL)
	p := m.path("f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := statT(t, p)
	if !atimeOf(st).Equal(mtimeOf(st)) {
		t.Errorf("new file: atime %v, mtime %v; want them equal", atimeOf(st), mtimeOf(st))
	}
	mt := mtimeOf(st)
	run(t, "touch", "-a", "-d", "2001-02-03 04:05:06.5 UTC", p)
	want := time.Date(2001, 2, 3, 4, 5, 6, 5e8, time.UTC)
	p0.take()
	for range 3 {
		if b, err := os.ReadFile(p); err != nil || string(b) != "data" {
			t.Fatalf("read: %q, %v", b, err)
		}
	}
	for method, n := range p0.take() {
		if method != "GET" && method != "HEAD" {
			t.Errorf("reading made %d %s requests", n, method)
		}
	}
	check := func(m *mounted) {
		t.Helper()
		st := statT(t, m.path("f"))
		if !atimeOf(st).Equal(want) || !mtimeOf(st).Equal(mt) {
			t.Errorf("atime %v mtime %v, want %v and %v", atimeOf(st), mtimeOf(st), want, mt)
		}
	}
	check(m)
	m.Unmount(t)
	check(w.mount(t, ""))
}

// TestUnlinkedOpenNlink: fstat of an open file that was unlinked reports
// nlink 0; a new file of the same name has nlink 1; writes to an unlinked
// file, streamed or staged, are not committed by its fsync or close.
func TestUnlinkedOpenNlink(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	p := m.path("f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 0 {
		t.Errorf("fstat of the unlinked open file: nlink %d, want 0", st.Nlink)
	}
	if err := os.WriteFile(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := statT(t, p).Nlink; n != 1 {
		t.Errorf("the new file of the same name: nlink %d, want 1", n)
	}
	// A file written after its unlink, streamed or staged, is not
	// resurrected by its close: its directory can be removed.
	for _, staged := range []bool{false, true} {
		if err := os.Mkdir(m.path("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		q := m.path("d", "g")
		if staged {
			if err := os.WriteFile(q, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		g, err := os.OpenFile(q, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close() // on failure: the mount cannot unmount while it is open
		if _, err := g.Write([]byte("written before")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(q); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Write([]byte(" and after the unlink")); err != nil {
			t.Fatal(err)
		}
		if err := g.Sync(); err != nil {
			t.Errorf("fsync of the unlinked file: %v", err)
		}
		if err := g.Close(); err != nil {
			t.Errorf("close of the unlinked file: %v", err)
		}
		if _, err := os.Lstat(q); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staged=%v: the unlinked file is back after close: %v", staged, err)
		}
		if err := os.Remove(m.path("d")); err != nil {
			t.Errorf("staged=%v: rmdir after the unlinked file's close: %v", staged, err)
		}
	}
}

// TestNameLimits: statfs reports the longest name the store can hold (255,
// less where the key prefix leaves less of S3's 1024 bytes); a name that
// fits is created, closed and read back after a remount (on file:// too,
// where its metadata sidecar would pass the host's 255 bytes); a longer one
// gets ENAMETOOLONG from create, mkdir, symlink and rename; an object another
// tool wrote with a name that fits S3's key but not csefs' reserved suffix
// opens.
func TestNameLimits(t *testing.T) {
	w := newWorld(t)
	local := t.TempDir()
	env := cleanEnv(t)
	// 899 bytes in segments MinIO takes (at most 255 bytes each).
	longPrefix := strings.TrimSuffix(strings.Repeat(strings.Repeat("p", 224)+"/", 4), "/")
	for _, tc := range []struct {
		name  string
		max   int
		mount func() *mounted
	}{
		{"s3", 255, func() *mounted { return w.mount(t, "") }},
		{"file", 255, func() *mounted { return mountWith(t, env, "file://"+local) }},
		// 1024 − 900 (the prefix and its "/") − 12 (".instruction").
		{"s3-prefix", 112, func() *mounted { return w.mount(t, longPrefix) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.mount()
			var sfs syscall.Statfs_t
			if err := syscall.Statfs(m.Dir, &sfs); err != nil {
				t.Fatal(err)
			}
			if sfs.Namelen != int64(tc.max) {
				t.Errorf("statfs namelen %d, want %d", sfs.Namelen, tc.max)
			}
			fits := strings.Repeat("n", tc.max)
			if err := os.WriteFile(m.path(fits), []byte("fits"), 0o644); err != nil {
				t.Fatalf("%d-byte name: %v", tc.max, err)
			}
			long := strings.Repeat("l", tc.max+1)
			want := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, syscall.ENAMETOOLONG) {
					t.Errorf("%s of a %d-byte name: %v, want ENAMETOOLONG", op, len(long), err)
				}
			}
			_, err := os.Create(m.path(long))
			want("create", err)
			want("mkdir", os.Mkdir(m.path(long), 0o755))
			want("symlink", os.Symlink("target", m.path(long)))
			want("rename", os.Rename(m.path(fits), m.path(long)))
			if tc.name == "s3-prefix" {
				// Another tool's object whose name fits S3's key but not
				// csefs' reserved suffix still opens.
				other := strings.Repeat("o", tc.max+5)
				w.putRaw(t, longPrefix+"/"+other, []byte("another tool"), nil)
				if got, err := os.ReadFile(m.path(other)); err != nil || string(got) != "another tool" {
					t.Errorf("%d-byte name another tool wrote: %q, %v", len(other), got, err)
				}
			}
			m.Unmount(t)
			m = tc.mount()
			if got, err := os.ReadFile(m.path(fits)); err != nil || string(got) != "fits" {
				t.Errorf("%d-byte name after remount: %q, %v", tc.max, got, err)
			}
		})
	}
}

// mkdev is a Linux device number, for majors below 4096 and minors below
// 256.
func mkdev(major, minor uint64) uint64 { return major<<8 | minor }

// TestSpecialFiles: mkfifo, mknod of character and block devices, and a
// UNIX socket's bind make objects that stat, list, rename and delete like
// files and keep their type, mode and rdev across a remount; the fifo works
// as a pipe; cp -a copies a tree with a fifo onto the mount; on s3:// and
// file://.
func TestSpecialFiles(t *testing.T) {
	needRoot(t, "for mknod of devices")
	w := newWorld(t)
	local := t.TempDir()
	env := cleanEnv(t)
	for _, tc := range []struct {
		name  string
		mount func() *mounted
	}{
		{"s3", func() *mounted { return w.mount(t, "") }},
		{"file", func() *mounted { return mountWith(t, env, "file://"+local) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.mount()
			if err := syscall.Mkfifo(m.path("fifo"), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mknod(m.path("chr"), syscall.S_IFCHR|0o600, int(mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mknod(m.path("blk"), syscall.S_IFBLK|0o640, int(mkdev(7, 9))); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("unix", m.path("sock"))
			if err != nil {
				t.Fatal(err)
			}
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			ln.Close()
			want := map[string]struct {
				mode uint32
				rdev uint64
			}{
				"fifo": {syscall.S_IFIFO | 0o640, 0},
				"chr":  {syscall.S_IFCHR | 0o600, mkdev(1, 3)},
				"blk":  {syscall.S_IFBLK | 0o640, mkdev(7, 9)},
			}
			check := func(m *mounted, names map[string]string) {
				t.Helper()
				for name, as := range names {
					st := statT(t, m.path(as))
					if wt, ok := want[name]; ok && (st.Mode != wt.mode || st.Rdev != wt.rdev) {
						t.Errorf("%s: mode %o rdev %x, want %o %x", as, st.Mode, st.Rdev, wt.mode, wt.rdev)
					}
					if name == "sock" && st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
						t.Errorf("%s: mode %o, want a socket", as, st.Mode)
					}
				}
				ents, err := os.ReadDir(m.Dir)
				if err != nil {
					t.Fatal(err)
				}
				listed := map[string]bool{}
				for _, e := range ents {
					listed[e.Name()] = true
				}
				for _, as := range names {
					if !listed[as] {
						t.Errorf("%s is not listed (%v)", as, listed)
					}
				}
			}
			names := map[string]string{"fifo": "fifo", "chr": "chr", "blk": "blk", "sock": "sock"}
			check(m, names)
			// The fifo is a pipe (the kernel's).
			done := make(chan error, 1)
			go func() {
				f, err := os.OpenFile(m.path("fifo"), os.O_WRONLY, 0)
				if err == nil {
					_, err = f.Write([]byte("through the pipe"))
					f.Close()
				}
				done <- err
			}()
			if got, err := os.ReadFile(m.path("fifo")); err != nil || string(got) != "through the pipe" {
				t.Errorf("read from the fifo: %q, %v", got, err)
			}
			if err := <-done; err != nil {
				t.Errorf("write to the fifo: %v", err)
			}
			if err := os.Rename(m.path("fifo"), m.path("fifo2")); err != nil {
				t.Fatal(err)
			}
			names["fifo"] = "fifo2"
			m.Unmount(t)
			m = tc.mount()
			check(m, names)
			// A tree with a fifo copies onto the mount.
			src := t.TempDir()
			if err := syscall.Mkfifo(filepath.Join(src, "p"), 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, "cp", "-a", src, m.path("tree"))
			if st := statT(t, m.path("tree", "p")); st.Mode != syscall.S_IFIFO|0o600 {
				t.Errorf("copied fifo: mode %o", st.Mode)
			}
			for _, as := range []string{"fifo2", "chr", "blk", "sock", "tree/p"} {
				if err := os.Remove(m.path(as)); err != nil {
					t.Errorf("remove %s: %v", as, err)
				}
			}
			if _, err := os.Lstat(m.path("chr")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("chr after remove: %v", err)
			}
		})
	}
}

// TestNonEmptyMountpoint: mounting over a directory that has entries is
// refused (they would be hidden) unless --allow-non-empty is given.
func TestNonEmptyMountpoint(t *testing.T) {
	requireFUSE(t)
	env := cleanEnv(t)
	bin := csefsBin(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "hidden"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mount := func(extra ...string) (string, error) {
		args := append([]string{"mount", "--log-file", filepath.Join(dir, "log")}, extra...)
		cmd := exec.Command(bin, append(args, "file://"+filepath.Join(dir, "bucket"), mnt)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if err := os.Mkdir(filepath.Join(dir, "bucket"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := mount()
	if err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("mount over a non-empty directory: %v\n%s", err, out)
	}
	if out, err := mount("--allow-non-empty"); err != nil {
		t.Fatalf("mount --allow-non-empty: %v\n%s", err, out)
	}
	defer func() {
		cmd := exec.Command(bin, "unmount", mnt)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("unmount: %v\n%s", err, out)
		}
	}()
	if _, err := os.Stat(filepath.Join(mnt, "hidden")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the mount shows the hidden file: %v", err)
	}
}

// TestCreatorOwnsNewFiles: on an --allow-other mount, a file, directory,
// symlink and fifo another user creates belong to that user (also after a
// remount), so the kernel lets that user chmod them and refuses others.
func TestCreatorOwnsNewFiles(t *testing.T) {
	needRoot(t, "to run a command as another user")
	w := newWorld(t)
	m := w.mount(t, "", "--allow-other")
	reachable(t, m)
	if err := os.Mkdir(m.path("pub"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("pub"), 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	d := m.path("pub")
	script := "cd " + d + " && echo x > f && mkdir dir && ln -s f l && mkfifo p && chmod 600 f"
	if out, err := asNobody(t, script); err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	check := func(m *mounted) {
		t.Helper()
		for _, name := range []string{"f", "dir", "l", "p"} {
			if st := statT(t, m.path("pub", name)); st.Uid != 65534 || st.Gid != 65534 {
				t.Errorf("%s made by nobody is owned by %d:%d", name, st.Uid, st.Gid)
			}
		}
	}
	check(m)
	m.Unmount(t)
	m = w.mount(t, "", "--allow-other")
	reachable(t, m)
	check(m)
	if out, err := asNobody(t, "cat "+m.path("pub", "f")); err != nil || out != "x" {
		t.Errorf("nobody reading its own 0600 file: %q, %v", out, err)
	}
}
