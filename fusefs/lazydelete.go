package fusefs

import (
	"context"
	"strings"
	"sync"
	"time"
)

// Deferred deletes of renamed files.
//
// A file rename within one directory is a copy and a delete (rename.go).
// The copy is what makes the new name; rename returns once it has landed,
// and the source's delete goes on in the background: rsync renames every
// file it writes from a temp name, one after the other, and that delete was
// one of its three serial round trips per file.
//
// Until the delete has landed, this mount hides the old name (lookup says
// ENOENT, readdir leaves it out, a directory holding only it is empty),
// and anything that would use the key or the directory's contents waits
// for it: create, mkdir, symlink, mknod, unlink and rename of that name;
// rmdir, an emptiness check and a rename of a directory above it; fsync(2)
// of its directory, which returns the delete's error (as on a local
// filesystem, a rename is durable once its directory is fsync-ed); and
// unmount. Other clients see both names for that round trip, and a crash
// before it leaves both (as a crash between the copy and the delete always
// could). A delete that fails is retried after 1, 2, 4 … seconds,
// lazyDeleteAttempts times in all; then the old name is visible again and
// the failure is logged.

// lazyDeleteAttempts bounds the tries of one deferred delete.
const lazyDeleteAttempts = 6

// lazyDeletes holds the deferred deletes by key.
type lazyDeletes struct {
	mu sync.Mutex
	m  map[string]*lazyDelete
	// failed holds, by directory, the first delete given up since that
	// directory's last fsync(2), which reports it.
	failed map[string]error
	// retry is the first retry's delay (tests shorten it).
	retry time.Duration
}

type lazyDelete struct {
	done chan struct{} // closed when the delete has landed or was given up
	err  error         // its result, once done
}

// deleteLater deletes key in the background (see above).
func (f *FS) deleteLater(key string) {
	d := &lazyDelete{done: make(chan struct{})}
	f.deletes.mu.Lock()
	if f.deletes.m == nil {
		f.deletes.m = make(map[string]*lazyDelete)
	}
	f.deletes.m[key] = d
	retry := f.deletes.retry
	f.deletes.mu.Unlock()
	if retry == 0 {
		retry = time.Second
	}
	go func() {
		var err error
		for attempt := 0; attempt < lazyDeleteAttempts; attempt++ {
			if attempt > 0 {
				f.log.Warn("could not delete a renamed file's old name; retrying", "object", f.uri(key), "attempt", attempt, "cause", err.Error())
				time.Sleep(retry << (attempt - 1))
			}
			if err = f.store.Delete(context.Background(), key); err == nil || isNotFound(err) {
				err = nil
				break
			}
		}
		if err != nil {
			f.log.Error("could not delete a renamed file's old name; both names exist", "object", f.uri(key), "attempts", lazyDeleteAttempts, "cause", err.Error())
		}
		f.putStat(key, nil)
		dir, _ := splitKey(key)
		f.deletes.mu.Lock()
		d.err = err
		delete(f.deletes.m, key)
		if err != nil {
			if f.deletes.failed == nil {
				f.deletes.failed = make(map[string]error)
			}
			if f.deletes.failed[dir] == nil {
				f.deletes.failed[dir] = err
			}
		}
		f.deletes.mu.Unlock()
		close(d.done)
		if err != nil {
			f.dirChanged(dir) // the old name shows again
		}
	}()
}

// deleting reports whether key's deferred delete is still under way.
func (f *FS) deleting(key string) bool {
	f.deletes.mu.Lock()
	defer f.deletes.mu.Unlock()
	_, ok := f.deletes.m[key]
	return ok
}

// awaitDelete waits for key's deferred delete, if any, and returns its
// error.
func (f *FS) awaitDelete(ctx context.Context, key string) error {
	return f.awaitDeletes(ctx, func(k string) bool { return k == key })
}

// beforeUse waits for key's deferred delete before an operation that makes
// or removes key; only the wait's interruption is an error (a delete given
// up leaves an old object that the operation replaces or removes).
func (f *FS) beforeUse(ctx context.Context, key string) error {
	if err := f.awaitDelete(ctx, key); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// awaitDeletesUnder waits for the deferred deletes of every key under
// prefix ("" for all) and returns the first error.
func (f *FS) awaitDeletesUnder(ctx context.Context, prefix string) error {
	return f.awaitDeletes(ctx, func(k string) bool { return strings.HasPrefix(k, prefix) })
}

// awaitDeletesIn waits for the deferred deletes of the files directly in
// the directory prefix, and returns the first that failed since the last
// call for prefix (its fsync).
func (f *FS) awaitDeletesIn(ctx context.Context, prefix string) error {
	err := f.awaitDeletes(ctx, func(k string) bool {
		return strings.HasPrefix(k, prefix) && !strings.Contains(k[len(prefix):], "/")
	})
	f.deletes.mu.Lock()
	defer f.deletes.mu.Unlock()
	if ferr := f.deletes.failed[prefix]; ferr != nil {
		delete(f.deletes.failed, prefix)
		if err == nil {
			err = ferr
		}
	}
	return err
}

func (f *FS) awaitDeletes(ctx context.Context, match func(string) bool) error {
	f.deletes.mu.Lock()
	var ds []*lazyDelete
	for k, d := range f.deletes.m {
		if match(k) {
			ds = append(ds, d)
		}
	}
	f.deletes.mu.Unlock()
	var first error
	for _, d := range ds {
		select {
		case <-d.done:
			if d.err != nil && first == nil {
				first = d.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}
