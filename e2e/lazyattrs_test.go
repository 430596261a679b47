package e2e

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestDeferredAttrs: chmod, chown and utimes right after a file was written
// (tar x, rsync -a) show in the mount at once; a rename carries them in its
// copy (stored when rename returns); fsync stores them before it returns;
// untouched, they reach S3 by themselves within seconds; unmount stores the
// rest; and every file's bytes are intact. (docs/semantics.md, "Deferred
// attributes".)
func TestDeferredAttrs(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	old := time.Unix(1_500_000_000, 0)
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(m.path(name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setAll := func(name string, mode os.FileMode) {
		t.Helper()
		if err := os.Chmod(m.path(name), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(m.path(name), 12, 34); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(m.path(name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	shows := func(p string, mode os.FileMode) {
		t.Helper()
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != mode || !st.ModTime().Equal(old) || sys.Uid != 12 || sys.Gid != 34 {
			t.Errorf("%s: mode %v mtime %v owner %d:%d, want %v %v 12:34", p, st.Mode().Perm(), st.ModTime(), sys.Uid, sys.Gid, mode, old)
		}
	}
	stored := func(key string, mode string) bool {
		_, meta := w.head(t, key)
		return meta["csefs-mode"] == mode && meta["csefs-uid"] == "12" && meta["csefs-mtime"] == "1500000000000000000"
	}

	// rsync's pattern: temp file, attributes, rename.
	write(".final.XXXX", "rsync body")
	setAll(".final.XXXX", 0o600)
	shows(m.path(".final.XXXX"), 0o600)
	if err := os.Rename(m.path(".final.XXXX"), m.path("final")); err != nil {
		t.Fatal(err)
	}
	shows(m.path("final"), 0o600)
	if !stored("final", "100600") {
		_, meta := w.head(t, "final")
		t.Errorf("after rename, final's stored metadata %v lacks the attributes", meta)
	}

	// fsync stores them.
	write("g", "fsync body")
	setAll("g", 0o640)
	fsyncPath(t, m.path("g"))
	if !stored("g", "100640") {
		_, meta := w.head(t, "g")
		t.Errorf("after fsync, g's stored metadata %v lacks the attributes", meta)
	}

	// Untouched, they are stored by themselves.
	write("h", "timer body")
	setAll("h", 0o604)
	shows(m.path("h"), 0o604)
	deadline := time.Now().Add(20 * time.Second)
	for !stored("h", "100604") {
		if time.Now().After(deadline) {
			_, meta := w.head(t, "h")
			t.Fatalf("h's attributes not stored within 20 s: %v", meta)
		}
		time.Sleep(50 * time.Millisecond) // polling S3, with a deadline
	}

	// Unlinked before they are stored: the file stays gone.
	write("u", "gone")
	setAll("u", 0o700)
	if err := os.Remove(m.path("u")); err != nil {
		t.Fatal(err)
	}

	// Unmount stores the rest; a fresh mount sees them and the bytes.
	write("k", "unmount body")
	setAll("k", 0o660)
	m.Unmount(t)
	if !stored("k", "100660") {
		_, meta := w.head(t, "k")
		t.Errorf("after unmount, k's stored metadata %v lacks the attributes", meta)
	}
	m2 := w.mount(t, "")
	for name, want := range map[string]os.FileMode{"final": 0o600, "g": 0o640, "h": 0o604, "k": 0o660} {
		shows(m2.path(name), want)
	}
	for name, body := range map[string]string{"final": "rsync body", "g": "fsync body", "h": "timer body", "k": "unmount body"} {
		readMount(t, m2, name, body)
	}
	for _, gone := range []string{".final.XXXX", "u"} {
		if _, err := os.Stat(m2.path(gone)); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want it gone", gone, err)
		}
	}
}
