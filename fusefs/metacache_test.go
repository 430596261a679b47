package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/objectstore"
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
		f.putListingNow("d/", gen, map[string]entryKind{"old": entryFile}, []fuse.DirEntry{fileEntry("old")})()
		if _, ok, _ := f.listed("d/", "old"); ok {
			t.Errorf("%s: a listing begun before the change was cached", name)
		}
		f.dirChanged("d/")
	}
	gen := f.listGen("d/")
	f.listingAdd("other/", fileEntry("x"), entryFile) // another directory
	f.putListingNow("d/", gen, map[string]entryKind{"old": entryFile}, []fuse.DirEntry{fileEntry("old")})()
	if k, ok, _ := f.listed("d/", "old"); !ok || k != entryFile {
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
	f.putListingNow("d/", gen, map[string]entryKind{}, nil)()
	if _, ok, _ := f.listed("d/", "x"); ok {
		t.Error("a listing older than a change was cached after the version map was reset")
	}
}

// Creates and unlinks through the mount keep a cached listing current
// instead of dropping it.
func TestListingMaintained(t *testing.T) {
	f := &FS{opt: Options{MetadataTTL: time.Minute}}
	f.putEmptyListing("d/")
	if k, ok, _ := f.listed("d/", "a"); !ok || k != entryNone {
		t.Fatalf("empty listing: %v %v", k, ok)
	}
	f.listingAdd("d/", fileEntry("a"), entryFile)
	f.listingAdd("d/", fuse.DirEntry{Name: "sub", Mode: syscall.S_IFDIR}, entryDir)
	if k, ok, _ := f.listed("d/", "a"); !ok || k != entryFile {
		t.Errorf("after create: %v %v", k, ok)
	}
	if k, ok, _ := f.listed("d/", "sub"); !ok || k != entryDir {
		t.Errorf("after mkdir: %v %v", k, ok)
	}
	_, es, ok := f.cachedEntries("d/")
	if !ok || !equalStrings(entryNames(es), []string{"a", "sub"}) {
		t.Errorf("entries = %v %v", entryNames(es), ok)
	}
	f.listingRemove("d/", "a")
	if k, ok, _ := f.listed("d/", "a"); !ok || k != entryNone {
		t.Errorf("after unlink: %v %v", k, ok)
	}
	if !equalStrings(entryNames(es), []string{"a", "sub"}) {
		t.Error("a slice handed out earlier was changed in place")
	}
	// A file replaced by a directory of the same name drops the listing.
	f.listingAdd("d/", fileEntry("sub"), entryFile)
	if _, ok, _ := f.listed("d/", "sub"); ok {
		t.Error("kind change kept the listing")
	}
	// Without a cached listing, nothing is made up.
	f.listingAdd("e/", fileEntry("a"), entryFile)
	if _, ok, _ := f.listed("e/", "a"); ok {
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

func (f *FS) putListingNow(prefix string, gen uint64, kinds map[string]entryKind, entries []fuse.DirEntry) func() {
	_, done := f.putListing(prefix, gen, time.Now(), kinds, entries)
	return done
}

// A listing being read stays usable past the TTL, with the stats obtained
// since its LIST began, until its stream is closed.
func TestListingHeldWhileRead(t *testing.T) {
	f := &FS{opt: Options{MetadataTTL: time.Second}, meta: metaCache{stats: map[string]statEntry{}}}
	began := time.Now().Add(-time.Minute) // everything below is past the TTL
	f.meta.stats["d/old"] = statEntry{obj: &object{key: "d/old"}, at: began.Add(-time.Second)}
	f.meta.stats["d/a"] = statEntry{obj: &object{key: "d/a"}, at: began.Add(time.Second)}
	l, done := f.putListing("d/", f.listGen("d/"), began, map[string]entryKind{"a": entryFile, "old": entryFile}, []fuse.DirEntry{fileEntry("a"), fileEntry("old")})
	done()
	l.at = began.Add(2 * time.Second)
	ds := f.listingStream(l, l.entries)
	k, ok, since := f.listed("d/", "a")
	if !ok || k != entryFile || !since.Equal(began) {
		t.Fatalf("listing being read: %v %v %v", k, ok, since)
	}
	if f.statSince("d/a", since) == nil {
		t.Error("a stat obtained since the listing began was refused")
	}
	if f.statSince("d/old", since) != nil {
		t.Error("a stat older than the listing was accepted")
	}
	if f.statSince("d/a", time.Time{}) != nil {
		t.Error("an expired stat was accepted outside a listing")
	}
	ds.Close()
	ds.Close() // RELEASEDIR once; a second Close must not underflow
	if _, ok, _ := f.listed("d/", "a"); ok {
		t.Error("listing still usable past the TTL after its stream was closed")
	}
	if l.readers != 0 {
		t.Errorf("readers = %d", l.readers)
	}
}

// A held stream seeks like the list it wraps (posixtest DirSeek).
func TestHeldStreamSeeks(t *testing.T) {
	f := &FS{opt: Options{MetadataTTL: time.Minute}}
	l, done := f.putListing("d/", f.listGen("d/"), time.Now(), map[string]entryKind{}, nil)
	done()
	ds := f.listingStream(l, []fuse.DirEntry{fileEntry("a"), fileEntry("b"), fileEntry("c")})
	defer ds.Close()
	for ds.HasNext() {
		ds.Next()
	}
	sd, ok := ds.(fs.FileSeekdirer)
	if !ok {
		t.Fatal("the held stream cannot seek")
	}
	if errno := sd.Seekdir(context.Background(), 1); errno != 0 {
		t.Fatalf("Seekdir: %v", errno)
	}
	if e, _ := ds.Next(); e.Name != "b" {
		t.Errorf("after Seekdir(1): %q, want b", e.Name)
	}
}

// countingStore counts LIST, HEAD and GET calls.
type countingStore struct {
	objectstore.Store
	lists, heads, gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string, opt objectstore.GetOptions) (io.ReadCloser, *objectstore.Info, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key, opt)
}

func (c *countingStore) List(ctx context.Context, prefix, delim string, fn func(objectstore.ListPage) error) error {
	c.lists.Add(1)
	return c.Store.List(ctx, prefix, delim, fn)
}

func (c *countingStore) Head(ctx context.Context, key string) (*objectstore.Info, error) {
	c.heads.Add(1)
	return c.Store.Head(ctx, key)
}

// A lookup that finds a small directory's listing expired refreshes it with
// one LIST (shared by concurrent lookups, no HEADs), which then sees what
// others wrote; a big directory's names are probed one by one instead.
func TestRefreshListing(t *testing.T) {
	f, _, st := newTestFS(t, ObjectMetadata, true)
	cs := &countingStore{Store: st}
	f.store = cs
	f.opt.MetadataTTL = time.Hour
	ctx := context.Background()
	writeObj(t, f, "d/a", []byte("a"))
	if _, _, err := f.listDir(ctx, "d/", true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, "d/other", []byte("x"), nil); err != nil { // another client
		t.Fatal(err)
	}
	if k, ok, _ := f.listed("d/", "other"); !ok || k != entryNone {
		t.Fatalf("fresh listing: %v %v", k, ok)
	}
	f.meta.mu.Lock()
	f.meta.listings["d/"].at = time.Now().Add(-2 * time.Hour) // expired
	f.meta.mu.Unlock()
	lists, heads := cs.lists.Load(), cs.heads.Load()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if !f.refreshListing(ctx, "d/") {
				t.Error("refreshListing: false")
			}
		})
	}
	waitOrFail(t, &wg, "8 concurrent refreshListing calls")
	if n := cs.lists.Load() - lists; n < 1 || n > 2 {
		t.Errorf("%d LISTs for 8 concurrent refreshes", n)
	}
	if k, ok, _ := f.listed("d/", "other"); !ok || k != entryFile {
		t.Errorf("refreshed listing misses another client's file: %v %v", k, ok)
	}
	if n := cs.heads.Load() - heads; n != 0 {
		t.Errorf("a refresh made %d HEADs", n)
	}
	// Too big to refresh.
	kinds := map[string]entryKind{}
	for i := range refreshMax + 1 {
		kinds[fmt.Sprintf("f%d", i)] = entryFile
	}
	_, done := f.putListing("big/", f.listGen("big/"), time.Now().Add(-2*time.Hour), kinds, nil)
	done()
	f.meta.mu.Lock()
	f.meta.listings["big/"].at = time.Now().Add(-2 * time.Hour)
	f.meta.mu.Unlock()
	if f.refreshListing(ctx, "big/") {
		t.Error("refreshed a listing of more than refreshMax entries")
	}
	if f.refreshListing(ctx, "never-listed/") {
		t.Error("refreshed a directory never listed")
	}
}

// gatedStore holds each Head until gate is closed, and reports its start.
type gatedStore struct {
	objectstore.Store
	started chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) Head(ctx context.Context, key string) (*objectstore.Info, error) {
	g.started <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.Head(ctx, key)
}

// A HEAD shared by concurrent lookups is not cancelled when the caller that
// started it leaves: the others still get the object.
func TestSharedHeadOutlivesItsStarter(t *testing.T) {
	f, _, st := newTestFS(t, ObjectMetadata, true)
	writeObj(t, f, "x", []byte("hello"))
	f.putStat("x", nil)
	gs := &gatedStore{Store: st, started: make(chan struct{}, 1), gate: make(chan struct{})}
	f.store = gs
	leaderCtx, kill := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := f.head(leaderCtx, "x")
		leader <- err
	}()
	recvOrFail(t, gs.started, "the leader's HEAD")
	waiter := make(chan *object, 1)
	go func() {
		o, err := f.head(context.Background(), "x")
		if err != nil {
			t.Errorf("the waiting lookup failed: %v", err)
		}
		waiter <- o
	}()
	deadline := time.Now().Add(hangBound)
	for joined := false; !joined; runtime.Gosched() { // until the waiter has joined the HEAD
		if time.Now().After(deadline) {
			t.Fatalf("the waiter did not join the HEAD within %v (hung?)", hangBound)
		}
		f.meta.mu.Lock()
		call := f.meta.heads["x"]
		joined = call != nil && call.waiters == 1
		f.meta.mu.Unlock()
	}
	kill()
	if err := recvOrFail(t, leader, "the killed caller's lookup"); !errors.Is(err, context.Canceled) {
		t.Fatalf("the killed caller got %v, want Canceled", err)
	}
	close(gs.gate)
	if o := recvOrFail(t, waiter, "the waiting lookup"); o == nil || o.plainSize != 5 {
		t.Fatalf("the waiter got %+v", o)
	}
}
