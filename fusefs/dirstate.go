package fusefs

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// Directory state: what this mount knows of each directory's marker, and
// the directory attributes it has yet to store.
//
// A directory with a marker object ("dir/") keeps its mode, owner, mtime and
// atime in the marker's user metadata, under the keys files use
// (metadata/attrs.go). mkdir stores them with the marker it creates (no
// extra request).
//
// A change inside a directory (create, mkdir, symlink, mknod, unlink, rmdir,
// rename) sets its mtime at once in this mount, and chmod, chown and utimes
// of it (setDirMeta) are shown at once too. Both are stored lazily, together:
// one HEAD and one self-copy of the marker per directory, dirFlushDelay after
// the first change of a burst, at fsync(2) of the directory, before a rename
// moves it, and at unmount. A create loop of N files therefore costs two
// requests, not N copies, and tar x's chmod, chown and utimes of each
// directory none on the caller's path. What a flush stores is kept as the
// marker's known state, so getattr and lookup need no HEAD within the TTL.
//
// A directory without a marker (a prefix another tool wrote) keeps such an
// mtime in memory only (creating a marker would make a directory that
// another client emptied and so removed reappear); it shows the mount's
// --dir-mode, --uid and --gid, and as mtime the time the mount started,
// until chmod, chown or utimes gives it a marker. The root has no marker: its
// attributes live in memory for the mount's lifetime.
//
// attr.go renders a directory's attributes from its state (fillDirAttr).

// dirFlushDelay is how long a directory's changed attributes wait, after
// the first change, before they are stored.
const dirFlushDelay = time.Second

// dirState is what this mount knows of one directory's attributes.
type dirState struct {
	attrs   metadata.Attrs // from the marker's metadata
	marker  bool           // the marker exists
	upload  time.Time      // the marker's upload time
	at      time.Time      // when the marker was HEADed; zero: not known
	mtime   time.Time      // set by a change through this mount; zero: none
	dirty   bool           // mtime is not stored yet
	pending bool           // a flush is scheduled
	gen     uint64         // bumped by every marker write of this mount
	// change is a chmod, chown or utimes not stored yet (setDirMeta),
	// inflight the one a flush is storing now; getattr shows both.
	change, inflight       attrChange
	hasChange, hasInflight bool
}

// dirStates holds the states by prefix.
type dirStates struct {
	mu sync.Mutex
	m  map[string]*dirState
	// flushing serializes the flushes of one directory, so that an
	// fsync(2) of it waits for a flush already storing its mtime instead
	// of returning before that is durable. Held across the store's
	// requests; entries are never removed (one small mutex per directory
	// ever changed).
	flushing map[string]*sync.Mutex
	// wmu serialises the read-modify-writes of markers (flushDir,
	// setDirMeta) in this mount, so that a lazy mtime copy never puts back
	// the metadata a chmod or chown just replaced.
	wmu sync.Mutex
	// delay replaces dirFlushDelay if set (tests).
	delay time.Duration
}

// flushLock returns prefix's flush mutex.
func (f *FS) flushLock(prefix string) *sync.Mutex {
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	if f.dirs.flushing == nil {
		f.dirs.flushing = make(map[string]*sync.Mutex)
	}
	mu := f.dirs.flushing[prefix]
	if mu == nil {
		mu = new(sync.Mutex)
		f.dirs.flushing[prefix] = mu
	}
	return mu
}

func (f *FS) dirStateLocked(prefix string) *dirState {
	if f.dirs.m == nil {
		f.dirs.m = make(map[string]*dirState)
	}
	st := f.dirs.m[prefix]
	if st == nil {
		st = &dirState{}
		f.dirs.m[prefix] = st
	}
	return st
}

// dirInfo returns prefix's attributes, HEADing its marker when what is
// known has expired. The root is never HEADed. A HEAD that a marker write of
// this mount overtook is not kept: it may show the metadata from before.
func (f *FS) dirInfo(ctx context.Context, prefix string) (dirState, error) {
	for {
		f.dirs.mu.Lock()
		st := f.dirStateLocked(prefix)
		if prefix == "" || (!st.at.IsZero() && time.Since(st.at) <= f.opt.MetadataTTL) {
			out := f.shownLocked(st)
			f.dirs.mu.Unlock()
			return out, nil
		}
		gen := st.gen
		f.dirs.mu.Unlock()
		info, err := f.store.Head(ctx, prefix)
		if err != nil && !isNotFound(err) {
			return dirState{}, err
		}
		f.dirs.mu.Lock()
		st = f.dirStateLocked(prefix)
		if st.gen != gen {
			f.dirs.mu.Unlock()
			continue
		}
		st.at = time.Now()
		st.marker = err == nil
		st.attrs, st.upload = metadata.Attrs{}, time.Time{}
		if err == nil {
			st.attrs, st.upload = metadata.ParseAttrs(info.Metadata), info.LastModified
		}
		out := f.shownLocked(st)
		f.dirs.mu.Unlock()
		return out, nil
	}
}

// knownDir reports whether prefix's marker is known to exist, seen or
// written by this mount within the metadata TTL.
func (f *FS) knownDir(prefix string) bool {
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	st := f.dirs.m[prefix]
	return st != nil && st.marker && !st.at.IsZero() && time.Since(st.at) <= f.opt.MetadataTTL
}

// shownLocked is st as getattr shows it: the stored attributes with the
// changes not stored yet applied (f.dirs.mu held).
func (f *FS) shownLocked(st *dirState) dirState {
	out := *st
	if !st.hasChange && !st.hasInflight {
		return out
	}
	var c attrChange
	if st.hasInflight {
		c = st.inflight
	}
	if st.hasChange {
		c = c.then(st.change)
	}
	out.attrs = c.apply(dirAttrsOr(f.storedDirAttrs(st.attrs, st.marker, st.upload), f.opt.DirMode), f.opt.UID, f.opt.GID)
	return out
}

// storedDirAttrs are a directory's stored attributes as a change starts
// from them: a marker's implicit mtime (its upload time) made explicit, a
// directory without a marker given the mount's start.
func (f *FS) storedDirAttrs(a metadata.Attrs, marker bool, upload time.Time) metadata.Attrs {
	if !marker {
		if !a.HasMtime {
			a.Mtime, a.HasMtime = f.started, true
		}
		return a
	}
	return keepMtime(a, upload)
}

// forgetDir drops what is known of prefix (and below), after rmdir or a
// rename moved it.
func (f *FS) forgetDir(prefix string) {
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	for p := range f.dirs.m {
		if len(p) >= len(prefix) && p[:len(prefix)] == prefix {
			delete(f.dirs.m, p)
		}
	}
}

// touchDir records a change inside prefix now: its mtime moves in this
// mount at once and is stored after dirFlushDelay.
func (f *FS) touchDir(prefix string) {
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	st := f.dirStateLocked(prefix)
	st.mtime, st.dirty = time.Now(), prefix != ""
	if st.dirty && !st.pending && !f.opt.ReadOnly {
		f.scheduleDirFlushLocked(prefix, st, 0)
	}
}

// dirFlushRetries bounds the delayed flushes of one change that fail (the
// store unreachable): they are retried after 2, 4, … times the delay, at
// most dirFlushMaxDelay apart. After the last, the mtime stays dirty in
// memory, and the next change, an fsync(2) of the directory or the unmount
// stores it.
const (
	dirFlushRetries  = 8
	dirFlushMaxDelay = time.Minute
)

// scheduleDirFlushLocked arms the delayed flush of prefix (st is its
// state; f.dirs.mu held). failures is how many delayed flushes of this
// change have failed so far; the delay doubles with each.
func (f *FS) scheduleDirFlushLocked(prefix string, st *dirState, failures int) {
	delay := f.dirs.delay
	if delay == 0 {
		delay = dirFlushDelay
	}
	delay = min(delay<<failures, max(dirFlushMaxDelay, delay))
	st.pending = true
	time.AfterFunc(delay, func() {
		f.dirs.mu.Lock()
		if s := f.dirs.m[prefix]; s != nil {
			s.pending = false
		}
		f.dirs.mu.Unlock()
		err := f.flushDir(context.Background(), prefix)
		if err == nil {
			return
		}
		f.dirs.mu.Lock()
		defer f.dirs.mu.Unlock()
		s := f.dirs.m[prefix]
		if s == nil || (!s.dirty && !s.hasChange) || s.pending {
			return // stored meanwhile, or another flush is armed
		}
		if failures+1 >= dirFlushRetries {
			f.log.Error("could not store a directory's attributes; giving up until the next change, fsync or unmount",
				"object", f.uri(prefix), "attempts", failures+1, "cause", err.Error())
			return
		}
		f.log.Warn("could not store a directory's attributes; retrying", "object", f.uri(prefix), "attempt", failures+1, "cause", err.Error())
		f.scheduleDirFlushLocked(prefix, s, failures+1)
	})
}

// flushDir stores prefix's changed mtime and its deferred chmod, chown and
// utimes (setDirMeta) in its marker, and returns once they are durable, also
// when another flush of prefix was already under way (the timer's, while
// fsync(2) asks). A copy that loses to another writer of the marker (412:
// another mount's flush, chmod or utimes) reads the marker again and
// retries, up to attrCopyAttempts times, as persistAttrs does: an fsync(2)
// of the directory must not fail because another mount changed it too. On
// failure what was to be stored stays to be stored, before anything changed
// since.
func (f *FS) flushDir(ctx context.Context, prefix string) error {
	fl := f.flushLock(prefix)
	fl.Lock()
	defer fl.Unlock()
	f.dirs.mu.Lock()
	st := f.dirs.m[prefix]
	if st == nil || (!st.dirty && !st.hasChange) {
		f.dirs.mu.Unlock()
		return nil
	}
	var mtime time.Time
	if st.dirty {
		mtime = st.mtime
	}
	c, hasC := st.change, st.hasChange
	st.dirty, st.change, st.hasChange = false, attrChange{}, false
	st.inflight, st.hasInflight = c, hasC
	f.dirs.mu.Unlock()
	var (
		err    error
		stored *storedMarker
	)
	for attempt := 0; attempt < attrCopyAttempts; attempt++ {
		stored, err = f.storeDir(ctx, prefix, mtime, c, hasC)
		if !errors.Is(err, objectstore.ErrPreconditionFailed) {
			break
		}
	}
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	st = f.dirs.m[prefix]
	if st == nil {
		return err // removed meanwhile (rmdir): nothing left to store
	}
	st.inflight, st.hasInflight = attrChange{}, false
	if err != nil {
		if !mtime.IsZero() && st.mtime.Equal(mtime) {
			st.dirty = true
		}
		if hasC {
			if st.hasChange {
				c = c.then(st.change)
			}
			st.change, st.hasChange = c, true
		}
		return err
	}
	if stored == nil {
		return nil // no marker: the mtime stays in memory
	}
	// What was just stored is what the marker holds now: kept, so that
	// getattr and the next chmod need no HEAD (and work while the store
	// is unreachable). A HEAD this write overtook is dropped (gen).
	st.gen++
	st.attrs, st.marker, st.upload, st.at = stored.attrs, true, stored.upload, time.Now()
	if !st.dirty && st.mtime.Equal(mtime) {
		st.mtime = time.Time{}
	}
	return nil
}

// storedMarker is what storeDir wrote: the marker's attributes and its new
// upload time.
type storedMarker struct {
	attrs  metadata.Attrs
	upload time.Time
}

// storeDir is one round of flushDir: it copies prefix's marker onto itself
// with c applied (if hasC) and mtime set (if not zero; a change inside the
// directory after c), pinned to the ETag of its HEAD. A directory without a
// marker gets one if there is a change c (chmod, chown or utimes give it
// one); an mtime alone stays in memory, and storeDir returns nil.
func (f *FS) storeDir(ctx context.Context, prefix string, mtime time.Time, c attrChange, hasC bool) (*storedMarker, error) {
	f.dirs.wmu.Lock()
	defer f.dirs.wmu.Unlock()
	info, err := f.store.Head(ctx, prefix)
	marker := err == nil
	meta := map[string]string{}
	var a metadata.Attrs
	switch {
	case isNotFound(err):
		if !hasC {
			return nil, nil
		}
		a = f.storedDirAttrs(a, false, time.Time{})
	case err != nil:
		return nil, err
	default:
		if info.Metadata != nil {
			meta = maps.Clone(info.Metadata)
		}
		a = f.storedDirAttrs(metadata.ParseAttrs(meta), true, info.LastModified)
	}
	if hasC {
		a = c.apply(dirAttrsOr(a, f.opt.DirMode), f.opt.UID, f.opt.GID)
	}
	if !mtime.IsZero() {
		a.Mtime, a.HasMtime = mtime, true
	}
	a.Apply(meta)
	var out *objectstore.Info
	if marker {
		out, err = f.store.Copy(ctx, prefix, prefix, objectstore.CopyOptions{Metadata: meta, IfMatch: info.ETag, Source: info})
	} else {
		out, err = f.store.Put(ctx, prefix, nil, meta)
	}
	if err != nil {
		return nil, err
	}
	sm := &storedMarker{attrs: metadata.ParseAttrs(meta), upload: time.Now()}
	if out != nil && !out.LastModified.IsZero() {
		sm.upload = out.LastModified
	}
	return sm, nil
}

// flushDirsUnder stores the changed mtimes and deferred attributes of
// every directory at or under prefix (a directory about to be renamed);
// it returns the first error.
func (f *FS) flushDirsUnder(ctx context.Context, prefix string) error {
	f.dirs.mu.Lock()
	var dirty []string
	for p, st := range f.dirs.m {
		if strings.HasPrefix(p, prefix) && (st.dirty || st.hasChange) {
			dirty = append(dirty, p)
		}
	}
	f.dirs.mu.Unlock()
	var first error
	for _, p := range dirty {
		if err := f.flushDir(ctx, p); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// FlushDirs stores every deferred file attribute change (lazyattr.go) and
// every changed directory mtime now (unmount).
func (f *FS) FlushDirs(ctx context.Context) {
	if err := f.awaitDeletesUnder(ctx, ""); err != nil {
		f.log.Warn("a renamed file's old name could not be deleted", "cause", err.Error())
	}
	if err := f.flushAttrsUnder(ctx, ""); err != nil {
		f.log.Warn("could not store deferred file attributes", "cause", err.Error())
	}
	f.dirs.mu.Lock()
	var dirty []string
	for p, st := range f.dirs.m {
		if st.dirty || st.hasChange {
			dirty = append(dirty, p)
		}
	}
	f.dirs.mu.Unlock()
	for _, p := range dirty {
		if err := f.flushDir(ctx, p); err != nil {
			f.log.Warn("could not store a directory's attributes", "object", f.uri(p), "cause", err.Error())
		}
	}
}

// newDirAttrs are the attributes mkdir stores with a new marker.
func newDirAttrs(mode uint32, now time.Time) metadata.Attrs {
	return metadata.Attrs{Mode: syscall.S_IFDIR | mode&0o7777, HasMode: true, Mtime: now, HasMtime: true}
}

// renamedIn records a rename's change to the directories involved: both
// parents' mtimes move, and what was known of a moved directory is dropped.
func (f *FS) renamedIn(d *dirNode, newParent any, name, newName string, errno syscall.Errno) {
	if errno != 0 {
		return
	}
	f.forgetDir(d.prefix() + name + "/")
	f.touchDir(d.prefix())
	if nd, ok := newParent.(*dirNode); ok {
		f.forgetDir(nd.prefix() + newName + "/")
		if nd.prefix() != d.prefix() {
			f.touchDir(nd.prefix())
		}
	}
}
