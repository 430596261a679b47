package fusefs

import (
	"context"
	"maps"
	"strings"
	"time"

	"github.com/csefs/csefs/metadata"
)

// Deferred attributes.
//
// chmod, chown and utimes of a file that nothing is writing, right after
// this mount wrote it, are what tar x and rsync -a do after each close(2):
// three changes, each one a HEAD and a server-side copy of the object onto
// itself if stored at once. Within deferAfterCommit of the file's last
// commit through this mount they are instead kept in memory (FS.lazy), shown by getattr in this mount
// at once, merged with the ones that follow, and stored by one metadata
// copy (persistAttrs) attrFlushDelay later, off the caller's path. POSIX
// asks no durability of attributes before fsync(2): fsync of the file
// stores them before it returns, and unmount stores them all. A rename of
// the file carries them in its own copy instead (rsync's temp file), so
// they cost no request at all; an unlink drops them. Anything that starts
// a new version of the file (open for writing, truncate) stores them
// first, and so does a directory rename over them. Other mounts see the
// change once it is stored, within attrFlushDelay.
//
// Data is unaffected: close(2) still returns once the object is stored.

// deferAfterCommit is how soon after a commit through this mount a file's
// attribute changes are deferred; later ones (a chmod of an existing file)
// are stored at once, as before.
const deferAfterCommit = 2 * time.Second

// attrFlushDelay is how long a deferred attribute change waits for the
// ones that follow it before it is stored.
const attrFlushDelay = time.Second

// lazyAttr is the deferred change of one key.
type lazyAttr struct {
	c        attrChange // not yet being stored
	has      bool
	inflight attrChange    // being stored now (flushing != nil)
	flushing chan struct{} // closed when the store in flight ends
	timer    bool          // a timed flush is scheduled
}

// deferAttrs records c for key, to be stored later.
func (f *FS) deferAttrs(key string, c attrChange) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	f.deferAttrsLocked(key, c)
}

// deferAttrsLocked is deferAttrs with f.attrMu held.
func (f *FS) deferAttrsLocked(key string, c attrChange) {
	if f.lazy == nil {
		f.lazy = map[string]*lazyAttr{}
	}
	e := f.lazy[key]
	if e == nil {
		e = &lazyAttr{}
		f.lazy[key] = e
	}
	if e.has {
		e.c = e.c.then(c)
	} else {
		e.c, e.has = c, true
	}
	if !e.timer {
		e.timer = true
		time.AfterFunc(attrFlushDelay, func() {
			f.attrMu.Lock()
			if e := f.lazy[key]; e != nil {
				e.timer = false
			}
			f.attrMu.Unlock()
			if err := f.flushAttrs(context.Background(), key); err != nil {
				f.log.Warn("could not store a file's attributes; kept for fsync or unmount", "object", f.uri(key), "cause", err.Error())
			}
		})
	}
}

// lazyOf returns the deferred change of key that getattr must show: the
// one being stored and the one after it.
func (f *FS) lazyOf(key string) (attrChange, bool) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	e := f.lazy[key]
	if e == nil {
		return attrChange{}, false
	}
	c := e.inflight
	if e.has {
		c = c.then(e.c)
	}
	return c, e.has || e.flushing != nil
}

// waitLazyLocked waits until no store of key's change is in flight and
// returns its entry, if any. f.attrMu is held (and released while waiting).
func (f *FS) waitLazyLocked(key string) *lazyAttr {
	for {
		e := f.lazy[key]
		if e == nil || e.flushing == nil {
			return e
		}
		ch := e.flushing
		f.attrMu.Unlock()
		<-ch
		f.attrMu.Lock()
	}
}

// takeLazyAttrs removes and returns key's deferred change, once no store of
// it is in flight: the caller stores it (a rename's copy) or drops it (an
// unlink).
func (f *FS) takeLazyAttrs(key string) (attrChange, bool) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	e := f.waitLazyLocked(key)
	if e == nil || !e.has {
		return attrChange{}, false
	}
	c := e.c
	e.c, e.has = attrChange{}, false
	if !e.timer {
		delete(f.lazy, key)
	}
	return c, true
}

// flushAttrs stores key's deferred change now, if it has one, and returns
// once it is stored (or a store in flight has ended). On failure the change
// stays deferred, for the next fsync, flush or unmount.
func (f *FS) flushAttrs(ctx context.Context, key string) error {
	f.attrMu.Lock()
	e := f.waitLazyLocked(key)
	if e == nil || !e.has {
		if e != nil && !e.timer {
			delete(f.lazy, key)
		}
		f.attrMu.Unlock()
		return nil
	}
	c := e.c
	e.c, e.has, e.inflight, e.flushing = attrChange{}, false, c, make(chan struct{})
	f.attrMu.Unlock()

	err := f.persistAttrs(ctx, key, c)

	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	close(e.flushing)
	e.flushing, e.inflight = nil, attrChange{}
	if err != nil {
		if e.has {
			e.c = c.then(e.c)
		} else {
			e.c, e.has = c, true
		}
	}
	if !e.has && !e.timer {
		delete(f.lazy, key)
	}
	return err
}

// flushAttrsUnder stores the deferred changes of every key under prefix
// ("" for all); it returns the first error.
func (f *FS) flushAttrsUnder(ctx context.Context, prefix string) error {
	f.attrMu.Lock()
	var keys []string
	for k := range f.lazy {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	f.attrMu.Unlock()
	var first error
	for _, k := range keys {
		if err := f.flushAttrs(ctx, k); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// withLazyAttrs returns meta (an object's metadata, as a rename copies it)
// with the deferred change c applied, as persistAttrs would store it.
func (f *FS) withLazyAttrs(meta map[string]string, uploaded time.Time, c attrChange) (map[string]string, error) {
	m := maps.Clone(meta)
	if m == nil {
		m = map[string]string{}
	}
	c.apply(keepMtime(metadata.ParseAttrs(m), uploaded), f.opt.UID, f.opt.GID).Apply(m)
	if err := metadata.CheckSize(m); err != nil {
		return nil, err
	}
	return m, nil
}
