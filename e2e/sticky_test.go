package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestStickyDirRenameByOwner: in a sticky directory owned by another user,
// that user may rename a file it does not own out and back (the sticky bit
// restricts only users who own neither the directory nor the file), and a
// directory that such a rename leaves empty keeps its mode and owner, also
// after a remount. A user who owns neither is refused (EPERM). On s3:// and
// file:// mounts with --allow-other, the renames run as uid 65534.
//
// (Before the fix, the rename that emptied a directory stored a fresh marker
// with no attributes over the existing one: the sticky 01777 directory of
// 65534 became root's 0755, and the rename back was refused with EACCES;
// pjdfstest's rename/09 and rename/10 hit this.)
func TestStickyDirRenameByOwner(t *testing.T) {
	needRoot(t, "to chown and to rename as another user")
	w := newWorld(t)
	fileEnv, fileSrc := cleanEnv(t), "file://"+t.TempDir()
	stores := map[string]func() *mounted{
		"s3":   func() *mounted { return w.mount(t, "", "--allow-other") },
		"file": func() *mounted { return mountWith(t, fileEnv, fileSrc, "--allow-other") },
	}
	for name, mount := range stores {
		t.Run(name, func(t *testing.T) {
			m := mount()
			reachable(t, m)
			s, d := m.path("sticky"), m.path("other")
			for _, dir := range []string{s, d} {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := syscall.Chmod(s, 0o1777); err != nil {
				t.Fatal(err)
			}
			for _, dir := range []string{s, d} {
				if err := os.Chown(dir, 65534, 65534); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(m.path("sticky", "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(m.path("sticky", "f"), 65533, 65533); err != nil {
				t.Fatal(err)
			}
			wantAttrs := func(m *mounted, when string) {
				t.Helper()
				for _, c := range []struct {
					name     string
					mode     uint32
					uid, gid uint32
				}{{"sticky", 0o1777, 65534, 65534}, {"other", 0o755, 65534, 65534}} {
					var st syscall.Stat_t
					if err := syscall.Lstat(m.path(c.name), &st); err != nil {
						t.Fatal(err)
					}
					if st.Mode&0o7777 != c.mode || st.Uid != c.uid || st.Gid != c.gid {
						t.Errorf("%s: %s is %04o %d:%d, want %04o %d:%d", when, c.name,
							st.Mode&0o7777, st.Uid, st.Gid, c.mode, c.uid, c.gid)
					}
				}
			}
			if out, err := asNobody(t, "mv "+m.path("sticky", "f")+" "+m.path("other", "g")); err != nil {
				t.Fatalf("the sticky directory's owner renaming another user's file out of it: %v: %s", err, out)
			}
			wantAttrs(m, "after the rename out")
			m.Unmount(t)
			m = mount()
			wantAttrs(m, "after the rename out and a remount")
			if out, err := asNobody(t, "mv "+m.path("other", "g")+" "+m.path("sticky", "f")); err != nil {
				t.Fatalf("renaming the file back into the sticky directory: %v: %s", err, out)
			}
			m.Unmount(t)
			m = mount()
			wantAttrs(m, "after the rename back and a remount")
			var st syscall.Stat_t
			if err := syscall.Lstat(m.path("sticky", "f"), &st); err != nil || st.Uid != 65533 {
				t.Fatalf("the renamed file: uid %d, %v; want 65533", st.Uid, err)
			}

			// Owning neither the sticky directory nor the file: refused.
			if err := os.Chown(m.path("sticky"), 0, 0); err != nil {
				t.Fatal(err)
			}
			out, err := asNobody(t, "mv "+m.path("sticky", "f")+" "+m.path("other", "h"))
			if err == nil || !strings.Contains(out, "Operation not permitted") {
				t.Errorf("a user owning neither the sticky directory nor the file renamed it: %q, %v; want Operation not permitted", out, err)
			}
			if _, err := os.Lstat(m.path("sticky", "f")); err != nil {
				t.Errorf("the refused rename's source: %v", err)
			}
			m.checkLog(t)
		})
	}
}
