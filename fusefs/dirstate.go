package fusefs

import (
	"context"
	"errors"
	"maps"
	"sync"
	"syscall"
	"time"

	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// Directory state: what this mount knows of each directory's marker, and
// the directory mtimes it has yet to store.
//
// A directory with a marker object ("dir/") keeps its mode, owner, mtime and
// atime in the marker's user metadata, under the keys files use
// (metadata/attrs.go). mkdir stores them with the marker it creates (no
// extra request); chmod, chown and utimes copy the marker onto itself with
// the metadata replaced, or create the marker of a directory that had none.
//
// A change inside a directory (create, mkdir, symlink, mknod, unlink, rmdir,
// rename) sets its mtime at once in this mount, and stores it lazily: one
// HEAD and one self-copy of the marker per directory, dirFlushDelay after the
// last change of a burst, at fsync(2) of the directory, and at unmount. A
// create loop of N files therefore costs two requests, not N copies. A
// directory without a marker (a prefix another tool wrote) keeps such an
// mtime in memory only (creating a marker would make a directory that
// another client emptied and so removed reappear); it shows the mount's
// --dir-mode, --uid and --gid, and as mtime the time the mount started,
// until chmod, chown or utimes gives it a marker. The root has no marker: its
// attributes live in memory for the mount's lifetime.
//
// setattr.go stores chmod, chown and utimes (setDirMeta); attr.go renders a
// directory's attributes from its state (fillDirAttr).

// dirFlushDelay is how long a directory's changed mtime waits, after the
// last change, before it is stored.
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
			out := *st
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
		out := *st
		f.dirs.mu.Unlock()
		return out, nil
	}
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
		if s == nil || !s.dirty || s.pending {
			return // stored meanwhile, or another flush is armed
		}
		if failures+1 >= dirFlushRetries {
			f.log.Error("could not store a directory's mtime; giving up until the next change, fsync or unmount",
				"object", f.uri(prefix), "attempts", failures+1, "cause", err.Error())
			return
		}
		f.log.Warn("could not store a directory's mtime; retrying", "object", f.uri(prefix), "attempt", failures+1, "cause", err.Error())
		f.scheduleDirFlushLocked(prefix, s, failures+1)
	})
}

// flushDir stores prefix's changed mtime in its marker, if it has one, and
// returns once that is durable, also when another flush of prefix was
// already under way (the timer's, while fsync(2) asks). A copy that loses to another writer of the marker (412: another mount's
// flush, chmod or utimes) reads the marker again and retries, up to
// attrCopyAttempts times, as persistAttrs does: an fsync(2) of the
// directory must not fail because another mount changed it too.
func (f *FS) flushDir(ctx context.Context, prefix string) error {
	fl := f.flushLock(prefix)
	fl.Lock()
	defer fl.Unlock()
	f.dirs.mu.Lock()
	st := f.dirs.m[prefix]
	if st == nil || !st.dirty {
		f.dirs.mu.Unlock()
		return nil
	}
	mtime := st.mtime
	st.dirty = false
	f.dirs.mu.Unlock()
	var err error
	stored := false
	for attempt := 0; attempt < attrCopyAttempts; attempt++ {
		stored, err = f.storeDirMtime(ctx, prefix, mtime)
		if !errors.Is(err, objectstore.ErrPreconditionFailed) {
			break
		}
	}
	if err != nil {
		f.redirty(prefix, mtime)
		return err
	}
	if !stored {
		return nil // no marker: the mtime stays in memory
	}
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	if st := f.dirs.m[prefix]; st != nil {
		st.gen++
		st.at = time.Time{} // HEAD again for the stored state
		if !st.dirty && st.mtime.Equal(mtime) {
			st.mtime = time.Time{}
		}
	}
	return nil
}

// storeDirMtime is one round of flushDir: it copies prefix's marker onto
// itself with mtime set, pinned to the ETag of its HEAD. It reports false,
// and no error, when there is no marker.
func (f *FS) storeDirMtime(ctx context.Context, prefix string, mtime time.Time) (bool, error) {
	f.dirs.wmu.Lock()
	defer f.dirs.wmu.Unlock()
	info, err := f.store.Head(ctx, prefix)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	meta := maps.Clone(info.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	a := metadata.ParseAttrs(meta)
	a.Mtime, a.HasMtime = mtime, true
	a.Apply(meta)
	if _, err := f.store.Copy(ctx, prefix, prefix, objectstore.CopyOptions{Metadata: meta, IfMatch: info.ETag, Source: info}); err != nil {
		return false, err
	}
	return true, nil
}

// redirty marks a failed flush's mtime as still to be stored, unless a
// later change did.
func (f *FS) redirty(prefix string, mtime time.Time) {
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	if st := f.dirs.m[prefix]; st != nil && st.mtime.Equal(mtime) {
		st.dirty = true
	}
}

// FlushDirs stores every deferred file attribute change (lazyattr.go) and
// every changed directory mtime now (unmount).
func (f *FS) FlushDirs(ctx context.Context) {
	if err := f.flushAttrsUnder(ctx, ""); err != nil {
		f.log.Warn("could not store deferred file attributes", "cause", err.Error())
	}
	f.dirs.mu.Lock()
	var dirty []string
	for p, st := range f.dirs.m {
		if st.dirty {
			dirty = append(dirty, p)
		}
	}
	f.dirs.mu.Unlock()
	for _, p := range dirty {
		if err := f.flushDir(ctx, p); err != nil {
			f.log.Warn("could not store a directory's mtime", "object", f.uri(p), "cause", err.Error())
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
