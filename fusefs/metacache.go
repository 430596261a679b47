package fusefs

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/objectstore"
)

// The metadata cache (FS.meta) holds what this mount learnt of the store's
// metadata, bounded in time by Options.MetadataTTL:
//
//   - the stat cache holds resolved objects by key (a HEAD, a commit);
//   - the listing cache holds, per directory prefix, the kind of every name a
//     readdir saw, so the lookups that follow (ls -l, readdirplus) need no
//     LIST of their own and a name absent from a fresh listing is ENOENT at
//     once;
//   - negative entries: a name a probe found to be nothing, for absentTTL;
//   - heads in flight are shared (single flight), so a lookup joins the
//     read-ahead HEAD that a readdir started instead of sending its own;
//   - the verified ETags: the GCM objects whose whole body authenticated
//     (read.go), which no TTL bounds (an ETag names one version).
//
// Every change made through this mount updates or drops the entries it
// affects; changes made elsewhere show after at most MetadataTTL.
//
// One lock, metaCache.mu, guards all of it. It is held only while the maps
// are read or changed, never across a request to the store, and no other
// lock is taken under it. Only the methods in this file touch metaCache's
// fields (tests aside). They are methods of FS, which reads the TTL from
// its options at each call.

// metaCache is the metadata cache; every field is guarded by mu.
type metaCache struct {
	mu sync.Mutex
	// stats holds resolved objects by key (cachedStat, putStat).
	stats map[string]statEntry
	// verified holds "key\x00etag" of GCM objects whose tag verified.
	verified map[string]bool
	listings map[string]*listing
	heads    map[string]*headCall
	// absent holds keys a probe found to be nothing, briefly: the kernel
	// looks a name up twice before an exclusive create (it revalidates the
	// negative dentry), and the second answer need not cost a HEAD and a
	// LIST again.
	absent map[string]time.Time
	// gen versions each directory's listing: every change through this
	// mount bumps it, and a LIST that started before a change is not
	// cached (it may miss what the change made). Prefixes dropped from the
	// map read as genFloor.
	gen      map[string]uint64
	genNext  uint64
	genFloor uint64
	// refreshing holds the listing refreshes in flight (refreshListing).
	refreshing map[string]chan struct{}
}

type statEntry struct {
	obj *object
	at  time.Time
}

// listing is what one readdir saw.
type listing struct {
	began   time.Time // when its LIST started
	at      time.Time // when its LIST ended
	kinds   map[string]entryKind
	entries []fuse.DirEntry // what readdir returned (files being written aside)
	// infos holds what the LIST said of each file, with AttrsFromList.
	infos map[string]objectstore.Info
	// prefetching is set while the readdir's HEADs are still running, and
	// readers counts the readdir streams still being read. Until both are
	// done (or maxListingHold has passed) the listing stays usable, and so
	// do the stats obtained since it began: a big directory's ls -l takes
	// longer than the TTL, and its lookups must not each fall back to a
	// HEAD and a LIST half way through.
	prefetching bool
	readers     int
}

// maxListingHold bounds how long a listing being read stays usable past
// the TTL.
const maxListingHold = 2 * time.Minute

// usable says whether l answers lookups now. c.mu is held.
func (l *listing) usable(ttl time.Duration) bool {
	age := time.Since(l.at)
	return age <= ttl || ((l.prefetching || l.readers > 0) && age <= maxListingHold)
}

type headCall struct {
	done    chan struct{}
	waiters int // callers that joined it (for tests)
	obj     *object
	err     error
}

// cachedStat returns a fresh resolved object for key, if any.
func (f *FS) cachedStat(key string) *object {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.stats[key]
	if !ok || time.Since(e.at) > f.opt.MetadataTTL {
		return nil
	}
	return e.obj
}

// statSince is cachedStat, also accepting an expired stat obtained (or
// renewed by a LIST) at or after since: one as fresh as the listing that
// began then.
func (f *FS) statSince(key string, since time.Time) *object {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.stats[key]
	if !ok || (time.Since(e.at) > f.opt.MetadataTTL && (since.IsZero() || e.at.Before(since))) {
		return nil
	}
	return e.obj
}

// putStat caches o as key's resolved object; nil drops key's entry.
func (f *FS) putStat(key string, o *object) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	if o == nil {
		delete(c.stats, key)
		return
	}
	if c.stats == nil {
		c.stats = make(map[string]statEntry)
	}
	c.stats[key] = statEntry{obj: o, at: time.Now()}
	if len(c.stats) > 100000 {
		// Crude bound: drop everything expired.
		for k, e := range c.stats {
			if time.Since(e.at) > f.opt.MetadataTTL {
				delete(c.stats, k)
			}
		}
	}
}

// revalidate renews a cached stat (even an expired one) when a fresh listing
// shows the object unchanged: same ETag, size and modification second (HEAD
// dates have one-second resolution, listings milliseconds). A metadata-only
// rewrite (chmod through another mount) changes the modification time.
func (f *FS) revalidate(o objectstore.Info) bool {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.stats[o.Key]
	if !ok {
		return false
	}
	old := e.obj.info
	if old.ETag != o.ETag || old.Size != o.Size || !old.LastModified.Truncate(time.Second).Equal(o.LastModified.Truncate(time.Second)) {
		return false
	}
	e.at = time.Now()
	c.stats[o.Key] = e
	return true
}

// isVerified reports whether the version etag of key has authenticated.
func (f *FS) isVerified(key, etag string) bool {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verified[key+"\x00"+etag]
}

// setVerified records that the version etag of key has authenticated.
func (f *FS) setVerified(key, etag string) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verified == nil || len(c.verified) > 100000 {
		c.verified = make(map[string]bool)
	}
	c.verified[key+"\x00"+etag] = true
}

// head resolves key through the stat cache, sharing HEADs in flight.
func (f *FS) head(ctx context.Context, key string) (*object, error) {
	if o := f.cachedStat(key); o != nil {
		return o, nil
	}
	c := &f.meta
	c.mu.Lock()
	if call, ok := c.heads[key]; ok {
		call.waiters++
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.obj, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.heads == nil {
		c.heads = make(map[string]*headCall)
	}
	call := &headCall{done: make(chan struct{})}
	c.heads[key] = call
	c.mu.Unlock()

	// The HEAD is shared: it must not fail the others when the caller
	// that started it leaves (a killed caller, see untilKilled).
	go func() {
		call.obj, call.err = f.headUncached(context.WithoutCancel(ctx), key)
		c.mu.Lock()
		delete(c.heads, key)
		c.mu.Unlock()
		close(call.done)
	}()
	select {
	case <-call.done:
		return call.obj, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *FS) headUncached(ctx context.Context, key string) (*object, error) {
	info, err := f.store.Head(ctx, key)
	if err != nil {
		return nil, err
	}
	o, err := f.resolve(ctx, info)
	if err != nil {
		return nil, err
	}
	f.putStat(key, o)
	return o, nil
}

// absentTTL bounds how long a "no such name" answer is reused; the kernel
// keeps its own negative entries as long (MountOptions' NegativeTimeout).
const absentTTL = time.Second

func (f *FS) knownAbsent(key string) bool {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.absent[key]
	return ok && time.Since(at) < min(absentTTL, f.opt.MetadataTTL)
}

func (f *FS) markAbsent(key string) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.absent == nil || len(c.absent) > 10000 {
		c.absent = make(map[string]time.Time)
	}
	c.absent[key] = time.Now()
}

// listGen is prefix's listing version, to pass to putListing.
func (f *FS) listGen(prefix string) uint64 {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.genOf(prefix)
}

func (c *metaCache) genOf(prefix string) uint64 {
	if g, ok := c.gen[prefix]; ok {
		return g
	}
	return c.genFloor
}

// bump records a change of prefix's listing. c.mu is held.
func (c *metaCache) bump(prefix string) {
	c.genNext++
	if c.gen == nil || len(c.gen) > 10000 {
		c.gen = make(map[string]uint64)
		c.genFloor = c.genNext
	}
	c.gen[prefix] = c.genNext
}

// listed returns what a fresh listing of prefix says about name.
// began is when that listing's LIST started: a stat obtained since then is
// as fresh as the listing itself (statSince).
func (f *FS) listed(prefix, name string) (k entryKind, ok bool, began time.Time) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.listings[prefix]
	if l == nil || !l.usable(f.opt.MetadataTTL) {
		return entryNone, false, time.Time{}
	}
	return l.kinds[name], true, l.began
}

// cachedEntries returns a listing's entries while it is within the TTL.
func (f *FS) cachedEntries(prefix string) (*listing, []fuse.DirEntry, bool) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.listings[prefix]
	if l == nil || time.Since(l.at) > f.opt.MetadataTTL {
		return nil, nil, false
	}
	return l, l.entries, true
}

// listedInfo returns what the usable listing of key's directory said of
// key's object (with AttrsFromList), and when that listing's LIST began.
func (f *FS) listedInfo(key string) (info objectstore.Info, began time.Time, ok bool) {
	prefix, name := splitKey(key)
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.listings[prefix]
	if l == nil || !l.usable(f.opt.MetadataTTL) {
		return objectstore.Info{}, time.Time{}, false
	}
	info, ok = l.infos[name]
	return info, l.began, ok
}

// setListedInfos records in l what its LIST said of each file (by name),
// for listedInfo.
func (f *FS) setListedInfos(l *listing, infos map[string]objectstore.Info) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	l.infos = infos
}

// listingStream serves entries and keeps l (if not nil) usable until the
// stream is closed (RELEASEDIR), so that READDIRPLUS's lookups are answered
// by the listing however long the reader takes.
func (f *FS) listingStream(l *listing, entries []fuse.DirEntry) fs.DirStream {
	ds := fs.NewListDirStream(entries)
	if l == nil {
		return ds
	}
	c := &f.meta
	c.mu.Lock()
	l.readers++
	c.mu.Unlock()
	return &heldStream{DirStream: ds, release: func() {
		c.mu.Lock()
		l.readers--
		c.mu.Unlock()
	}}
}

type heldStream struct {
	fs.DirStream
	once    sync.Once
	release func()
}

func (h *heldStream) Close() {
	h.DirStream.Close()
	h.once.Do(h.release)
}

// The stream must keep what it wraps can do: go-fuse refuses a seek
// (telldir/seekdir, or a re-read from an offset) with ENOTSUP otherwise.
var _ fs.FileSeekdirer = (*heldStream)(nil)

func (h *heldStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if sd, ok := h.DirStream.(fs.FileSeekdirer); ok {
		return sd.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

// putListing records a listing made by a LIST that started at version gen
// (listGen), unless prefix changed since; the returned func marks its
// read-ahead done.
func (f *FS) putListing(prefix string, gen uint64, began time.Time, kinds map[string]entryKind, entries []fuse.DirEntry) (*listing, func()) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.genOf(prefix) != gen {
		return nil, func() {}
	}
	if c.listings == nil {
		c.listings = make(map[string]*listing)
	}
	if len(c.listings) > 10000 {
		for p, l := range c.listings {
			if time.Since(l.at) > f.opt.MetadataTTL {
				delete(c.listings, p)
			}
		}
	}
	l := &listing{began: began, at: time.Now(), kinds: kinds, entries: entries, prefetching: true}
	c.listings[prefix] = l
	return l, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		l.prefetching = false
	}
}

// putEmptyListing records that prefix, a directory this mount just made
// after finding nothing under it, is empty.
func (f *FS) putEmptyListing(prefix string) {
	_, done := f.putListing(prefix, f.listGen(prefix), time.Now(), map[string]entryKind{}, nil)
	done()
}

// dirChanged drops the listings of the given directory prefixes after a
// change through this mount.
func (f *FS) dirChanged(prefixes ...string) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range prefixes {
		delete(c.listings, p)
		c.bump(p)
	}
	clear(c.absent)
}

// listingAdd records in prefix's cached listing, if there is one, an entry
// created through this mount, so that the lookups of a create loop keep
// being answered by the listing. A create whose upload fails drops the
// listing (dirChanged) instead.
func (f *FS) listingAdd(prefix string, e fuse.DirEntry, k entryKind) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.absent, prefix+e.Name)
	c.bump(prefix)
	l := c.listings[prefix]
	if l == nil {
		return
	}
	if old, ok := l.kinds[e.Name]; ok {
		if old == k {
			return
		}
		// A file replaced by a directory or the reverse: start over.
		delete(c.listings, prefix)
		return
	}
	// kinds is read under c.mu only; entries are used outside it, so they
	// are copied, never changed in place.
	l.kinds[e.Name] = k
	entries := make([]fuse.DirEntry, len(l.entries), len(l.entries)+1)
	copy(entries, l.entries)
	l.entries = append(entries, e)
}

// listingRemove forgets name in prefix's cached listing after an unlink
// through this mount.
func (f *FS) listingRemove(prefix, name string) {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump(prefix)
	l := c.listings[prefix]
	if l == nil {
		return
	}
	if _, ok := l.kinds[name]; !ok {
		return
	}
	delete(l.kinds, name)
	entries := make([]fuse.DirEntry, 0, len(l.entries))
	for _, e := range l.entries {
		if e.Name != name {
			entries = append(entries, e)
		}
	}
	l.entries = entries
}

// allDirsChanged drops every listing (a directory rename).
func (f *FS) allDirsChanged() {
	c := &f.meta
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.listings)
	clear(c.absent)
	c.gen = nil // every prefix reads as the new floor
	c.genNext++
	c.genFloor = c.genNext
}

// refreshMax is the largest directory whose expired listing a lookup
// refreshes with a LIST (one page) instead of probing its name.
const refreshMax = 1000

// refreshListing re-LISTs prefix when a lookup finds its listing expired
// and the directory small: one LIST then answers this lookup and the next
// ones for a TTL, where each name would otherwise cost a HEAD and a LIST
// (a create loop's lookups, a tool stat-ing many names). It reports whether
// a fresh listing may now be there; concurrent callers share one LIST.
func (f *FS) refreshListing(ctx context.Context, prefix string) bool {
	c := &f.meta
	c.mu.Lock()
	l := c.listings[prefix]
	if l == nil || len(l.kinds) > refreshMax {
		c.mu.Unlock()
		return false
	}
	if l.usable(f.opt.MetadataTTL) {
		c.mu.Unlock()
		return true // refreshed meanwhile
	}
	if ch, ok := c.refreshing[prefix]; ok {
		c.mu.Unlock()
		select {
		case <-ch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if c.refreshing == nil {
		c.refreshing = make(map[string]chan struct{})
	}
	ch := make(chan struct{})
	c.refreshing[prefix] = ch
	c.mu.Unlock()
	_, _, err := f.listDir(ctx, prefix, false)
	c.mu.Lock()
	delete(c.refreshing, prefix)
	c.mu.Unlock()
	close(ch)
	return err == nil
}
