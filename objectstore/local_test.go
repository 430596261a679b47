package objectstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var errInjected = errors.New("injected failure")

func newLocalTest(t *testing.T, pageSize int) *LocalStore {
	t.Helper()
	s, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if pageSize > 0 {
		s.pageSize = pageSize
	}
	return s
}

func TestLocalConformance(t *testing.T) {
	runConformance(t, harness{
		newStore: func(t *testing.T, pageSize int) Store { return newLocalTest(t, pageSize) },
		partSize: 256 << 10,
		failing: func(t *testing.T, s Store) Store {
			fs, err := NewLocal(s.(*LocalStore).root)
			if err != nil {
				t.Fatal(err)
			}
			fs.writeHook = func(written int64) error {
				if written > 0 {
					return errInjected
				}
				return nil
			}
			return fs
		},
		incomplete: func(t *testing.T, s Store, _ string) int {
			entries, err := os.ReadDir(s.(*LocalStore).tmp)
			if err != nil {
				t.Fatal(err)
			}
			return len(entries)
		},
	})
}

func TestLocalCheck(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewLocal(filepath.Join(dir, "missing")); !errors.Is(err, ErrNoSuchBucket) {
		t.Errorf("missing root: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := NewLocal(file); !errors.Is(err, ErrNoSuchBucket) {
		t.Errorf("file root: %v", err)
	}
}

func TestLocalInvalidKeys(t *testing.T) {
	s := newLocalTest(t, 0)
	ctx := context.Background()
	for _, key := range []string{"", "/", "/abs", "a//b", "a/./b", "../up", "a/..", "nul\x00", ".csefs-tmp/x",
		".x.csefs-meta.json", "d/.x.csefs-meta.json"} {
		if _, err := s.Put(ctx, key, []byte("x"), nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Head(ctx, key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Head(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	if _, err := s.Put(ctx, "marker/", []byte("body"), nil); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("marker with body: %v", err)
	}
}

func TestLocalConflicts(t *testing.T) {
	s := newLocalTest(t, 0)
	ctx := context.Background()
	mustPut(t, s, "a", []byte("file"), nil)
	mustPut(t, s, "d/child", []byte("child"), nil)
	for _, key := range []string{"a/b", "a/", "d"} {
		if _, err := s.Put(ctx, key, nil, nil); !errors.Is(err, ErrKeyConflict) {
			t.Errorf("Put(%q) = %v, want ErrKeyConflict", key, err)
		}
	}
	checkObject(t, s, "a", []byte("file"), nil)
	checkObject(t, s, "d/child", []byte("child"), nil)
	if n := len(mustReadDir(t, s.tmp)); n != 0 {
		t.Errorf("%d temp files left", n)
	}
	// Deleting "d" (a directory, not an object) does nothing.
	if err := s.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, "d/child", []byte("child"), nil)
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	e, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestLocalLayout(t *testing.T) {
	s := newLocalTest(t, 0)
	ctx := context.Background()
	mustPut(t, s, "x/obj", []byte("body"), map[string]string{"K": "v"})
	// The body is the file; the sidecar is hidden from listings.
	if b, err := os.ReadFile(filepath.Join(s.root, "x", "obj")); err != nil || string(b) != "body" {
		t.Errorf("file = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(s.root, "x", ".obj.csefs-meta.json")); err != nil {
		t.Errorf("sidecar: %v", err)
	}
	keys, prefs, _ := listAll(t, s, "", "")
	if !slices.Equal(keys, []string{"x/obj"}) || prefs != nil {
		t.Errorf("listing %q %q", keys, prefs)
	}
	keys, prefs, _ = listAll(t, s, "x/", "/")
	if !slices.Equal(keys, []string{"x/obj"}) || prefs != nil {
		t.Errorf("listing %q %q", keys, prefs)
	}
	// A file copied in by hand is an object without metadata.
	os.WriteFile(filepath.Join(s.root, "x", "foreign"), []byte("hand made"), 0o644)
	info, err := s.Head(ctx, "x/foreign")
	if err != nil || info.Size != 9 || len(info.Metadata) != 0 || info.ETag == "" {
		t.Errorf("foreign Head = %+v, %v", info, err)
	}
	// An empty directory lists as a prefix (and as a "dir/" object
	// recursively), and Heads as a marker.
	os.Mkdir(filepath.Join(s.root, "emptydir"), 0o755)
	_, prefs, _ = listAll(t, s, "", "/")
	if !slices.Equal(prefs, []string{"emptydir/", "x/"}) {
		t.Errorf("prefixes %q", prefs)
	}
	keys, _, _ = listAll(t, s, "", "")
	if !slices.Equal(keys, []string{"emptydir/", "x/foreign", "x/obj"}) {
		t.Errorf("recursive %q", keys)
	}
	if _, err := s.Head(ctx, "emptydir/"); err != nil {
		t.Errorf("Head(empty dir) = %v", err)
	}
	// A directory with children but no sidecar is only a prefix.
	if _, err := s.Head(ctx, "x/"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head(implicit dir) = %v, want ErrNotFound", err)
	}
}

// A stale sidecar (the previous version's) still describes the file it was
// written for, so a reader holding the old file gets the old metadata: the
// window between the sidecar and the body renames is invisible.
func TestLocalSidecarVersions(t *testing.T) {
	s := newLocalTest(t, 0)
	ctx := context.Background()
	mustPut(t, s, "k", []byte("one"), map[string]string{"v": "1"})
	f, info1, err := s.open("k")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mustPut(t, s, "k", []byte("two!"), map[string]string{"v": "2"})
	fi, _ := f.Stat()
	old, ok, err := infoFor("k", filepath.Join(s.root, "k"), fi)
	if err != nil || !ok || old.Metadata["v"] != "1" || old.ETag != info1.ETag {
		t.Errorf("old file's info after rewrite = %+v ok=%v err=%v", old, ok, err)
	}
	// Simulate a crash between the sidecar rename and the body rename: the
	// new sidecar is in place, the body is still the old one.
	p := filepath.Join(s.root, "k")
	cur, _ := os.Stat(p)
	sc, _ := readSidecar(sidecarPath(p))
	crashed := sidecar{Versions: []sidecarEntry{{Ino: 1<<62 + 1, Size: 5, ETag: `"x"`}, *sc.find(inode(cur), cur.Size())}}
	if err := s.writeSidecar(sidecarPath(p), &crashed); err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, "k", []byte("two!"), map[string]string{"v": "2"})
	// A sidecar that describes neither version is an error, not silently
	// wrong metadata.
	s.writeSidecar(sidecarPath(p), &sidecar{Versions: crashed.Versions[:1]})
	if _, err := s.Head(ctx, "k"); err == nil {
		t.Errorf("Head with foreign sidecar succeeded")
	}
}
