package fusefs

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func fileEntry(name string) fuse.DirEntry {
	return fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: ino(name, false)}
}

func entryNames(es []fuse.DirEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

// A LIST that started before a change through this mount must not be
// cached: it may lack what the change made.
func TestListingGeneration(t *testing.T) {
	f := &FS{opt: Options{MetadataTTL: time.Minute}}
	changes := map[string]func(){
		"create":     func() { f.listingAdd("d/", fileEntry("new"), entryFile) },
		"unlink":     func() { f.listingRemove("d/", "old") },
		"dirChanged": func() { f.dirChanged("d/") },
		"allDirs":    func() { f.allDirsChanged() },
	}
	for name, change := range changes {
		gen := f.listGen("d/")
		change()
		f.putListing("d/", gen, map[string]entryKind{"old": entryFile}, []fuse.DirEntry{fileEntry("old")})()
		if _, ok := f.listed("d/", "old"); ok {
			t.Errorf("%s: a listing begun before the change was cached", name)
		}
		f.dirChanged("d/")
	}
	gen := f.listGen("d/")
	f.listingAdd("other/", fileEntry("x"), entryFile) // another directory
	f.putListing("d/", gen, map[string]entryKind{"old": entryFile}, []fuse.DirEntry{fileEntry("old")})()
	if k, ok := f.listed("d/", "old"); !ok || k != entryFile {
		t.Errorf("a change elsewhere rejected the listing: %v %v", k, ok)
	}
}

// Versions survive the version map being reset when it grows large.
func TestListingGenerationFloor(t *testing.T) {
	f := &FS{opt: Options{MetadataTTL: time.Minute}}
	gen := f.listGen("d/") // not in the map yet
	for i := range 10002 {
		f.listingAdd(fmt.Sprintf("p%d/", i), fileEntry("x"), entryFile)
	}
	f.listingAdd("d/", fileEntry("x"), entryFile)
	for i := range 10002 { // resets the map at least once more
		f.listingAdd(fmt.Sprintf("q%d/", i), fileEntry("x"), entryFile)
	}
	f.putListing("d/", gen, map[string]entryKind{}, nil)()
	if _, ok := f.listed("d/", "x"); ok {
		t.Error("a listing older than a change was cached after the version map was reset")
	}
}

// Creates and unlinks through the mount keep a cached listing current
// instead of dropping it.
func TestListingMaintained(t *testing.T) {
	f := &FS{opt: Options{MetadataTTL: time.Minute}}
	f.putEmptyListing("d/")
	if k, ok := f.listed("d/", "a"); !ok || k != entryNone {
		t.Fatalf("empty listing: %v %v", k, ok)
	}
	f.listingAdd("d/", fileEntry("a"), entryFile)
	f.listingAdd("d/", fuse.DirEntry{Name: "sub", Mode: syscall.S_IFDIR}, entryDir)
	if k, ok := f.listed("d/", "a"); !ok || k != entryFile {
		t.Errorf("after create: %v %v", k, ok)
	}
	if k, ok := f.listed("d/", "sub"); !ok || k != entryDir {
		t.Errorf("after mkdir: %v %v", k, ok)
	}
	es, ok := f.cachedEntries("d/")
	if !ok || !equalStrings(entryNames(es), []string{"a", "sub"}) {
		t.Errorf("entries = %v %v", entryNames(es), ok)
	}
	f.listingRemove("d/", "a")
	if k, ok := f.listed("d/", "a"); !ok || k != entryNone {
		t.Errorf("after unlink: %v %v", k, ok)
	}
	if !equalStrings(entryNames(es), []string{"a", "sub"}) {
		t.Error("a slice handed out earlier was changed in place")
	}
	// A file replaced by a directory of the same name drops the listing.
	f.listingAdd("d/", fileEntry("sub"), entryFile)
	if _, ok := f.listed("d/", "sub"); ok {
		t.Error("kind change kept the listing")
	}
	// Without a cached listing, nothing is made up.
	f.listingAdd("e/", fileEntry("a"), entryFile)
	if _, ok := f.listed("e/", "a"); ok {
		t.Error("listingAdd created a listing")
	}
}

func TestSplitKey(t *testing.T) {
	for key, want := range map[string][2]string{"a": {"", "a"}, "d/a": {"d/", "a"}, "d/e/a": {"d/e/", "a"}} {
		if d, n := splitKey(key); d != want[0] || n != want[1] {
			t.Errorf("splitKey(%q) = %q, %q", key, d, n)
		}
	}
}
