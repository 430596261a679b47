package fusefs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// fileNode is one object.
//
// Lock order: stageMu before mu; a writeHandle's mu before either.
type fileNode struct {
	fs.Inode
	fsys    *FS
	nodeKey // the object key: key(), setKey()

	stageMu    sync.Mutex // serialises staging setup, uploads and teardown
	stage      *stageFile
	stageRefs  int
	stageDirty bool
	stageAttrs metadata.Attrs

	mu      sync.Mutex
	writers map[*writeHandle]bool

	unlinked atomic.Bool // removed while the kernel still holds it (open): nlink 0

	lastCommit atomic.Int64 // UnixNano of the last version committed through this node
}

// newFileNode returns the node of the object key.
func newFileNode(f *FS, key string) *fileNode {
	n := &fileNode{fsys: f}
	n.setKey(key)
	return n
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
)

func (n *fileNode) addWriter(w *writeHandle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.writers == nil {
		n.writers = make(map[*writeHandle]bool)
	}
	n.writers[w] = true
}

func (n *fileNode) removeWriter(w *writeHandle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.writers, w)
}

// streaming returns the size and mode of a streaming upload in progress.
func (n *fileNode) streaming() (int64, metadata.Attrs, bool) {
	n.mu.Lock()
	ws := make([]*writeHandle, 0, len(n.writers))
	for w := range n.writers {
		ws = append(ws, w)
	}
	n.mu.Unlock()
	for _, w := range ws {
		if size, attrs, ok := w.status(); ok {
			return size, attrs, true
		}
	}
	return 0, metadata.Attrs{}, false
}

// committed records a new version written through this node.
func (n *fileNode) committed(o *object) {
	n.lastCommit.Store(time.Now().UnixNano())
	key := n.key()
	n.fsys.putStat(key, o)
	dir, name := splitKey(key)
	n.fsys.listingAdd(dir, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: ino(key, false)}, entryFile)
}

// currentAttrs are the attributes a new version of the object keeps.
func (n *fileNode) currentAttrs(ctx context.Context) metadata.Attrs {
	if o, err := n.fsys.head(ctx, n.key()); err == nil && o.attrs.HasMode {
		a := o.attrs
		a.HasMtime = false
		return a
	}
	return fileAttrs(n.fsys.opt.FileMode)
}

// basePlainSize is the size of the object as stored, 0 if there is none.
func (n *fileNode) basePlainSize(ctx context.Context) int64 {
	if o, err := n.fsys.head(ctx, n.key()); err == nil {
		return o.plainSize
	}
	return 0
}

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	errno := n.getattr(ctx, fh, out)
	if errno == 0 && n.unlinked.Load() {
		out.Nlink = 0
	}
	return errno
}

func (n *fileNode) getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	if size, attrs, ok := n.streaming(); ok {
		f.pendingAttr(&out.Attr, size, attrs)
		return 0
	}
	if sf := n.stageFile(); sf != nil {
		n.mu.Lock()
		attrs := n.stageAttrs
		n.mu.Unlock()
		f.pendingAttr(&out.Attr, sf.Size(), attrs)
		return 0
	}
	if r, ok := fh.(*readHandle); ok {
		f.fileAttr(r.object(), &out.Attr)
		return 0
	}
	o := f.listedObject(n.key())
	if o == nil {
		ctx, done := f.untilKilled(ctx, "getattr", n.key())
		defer done()
		var err error
		if o, err = n.headFile(ctx); err != nil {
			return f.logErr("getattr", n.key(), err)
		}
	}
	f.fileAttr(o, &out.Attr)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ctx, done := n.fsys.untilKilled(ctx, "open", n.key())
	defer done()
	f := n.fsys
	acc := flags & syscall.O_ACCMODE
	if acc == syscall.O_WRONLY || acc == syscall.O_RDWR {
		if f.opt.ReadOnly {
			return nil, 0, syscall.EROFS
		}
		// A new version starts from the stored attributes: store the
		// deferred ones first (lazyattr.go).
		if err := f.flushAttrs(ctx, n.key()); err != nil {
			return nil, 0, f.logErr("open", n.key(), err)
		}
		w, err := f.newWriter(ctx, n, n.currentAttrs(ctx), flags&syscall.O_TRUNC != 0, acc == syscall.O_RDWR)
		if err != nil {
			return nil, 0, f.logErr("open", n.key(), err)
		}
		return w, f.openFlags(), 0
	}
	if n.stageFile() != nil {
		// Changes not yet uploaded: read them, as a local file would.
		w, err := f.newWriter(ctx, n, n.currentAttrs(ctx), false, true)
		if err != nil {
			return nil, 0, f.logErr("open", n.key(), err)
		}
		w.mu.Lock()
		err = w.startStage(ctx, nil)
		w.mu.Unlock()
		if err != nil {
			w.Release(ctx) // the kernel never sees this handle
			return nil, 0, f.logErr("open", n.key(), err)
		}
		return w, f.openFlags(), 0
	}
	// Close-to-open: every open sees the object as it is now. An object
	// replaced between the HEAD and the first GET is resolved once more.
	// The exception is a small file this node committed within
	// deferAfterCommit (rsync opens each file it just wrote, to fchmod it):
	// the version its commit returned is opened without a HEAD. A version
	// another client wrote in those two seconds is still what the first
	// read returns: a small file is read whole by a GET pinned to the
	// ETag, and loadWhole moves the handle to the new version. (A large
	// one's ranged reads could only fail, ESTALE: it is HEADed.)
	var r *readHandle
	listed := f.listedObject(n.key())
	for try := 0; ; try++ {
		var o *object
		var err error
		if try == 0 && time.Since(time.Unix(0, n.lastCommit.Load())) <= deferAfterCommit {
			if c := f.cachedStat(n.key()); c != nil && regular(c) && c.authenticated() && c.plainSize <= f.opt.VerifyThreshold {
				o = c
			}
		}
		if o == nil {
			f.putStat(n.key(), nil)
			o, err = n.headFile(ctx)
		}
		if err == nil && listed != nil && listed.listed && !f.sameAttr(listed, o) {
			// The kernel may hold the attributes derived from the LIST: a
			// size it would end reads at (a CBC or plaintext object), a
			// mode or mtime fstat would show. Make it ask again.
			n.NotifyContent(-1, 0)
		}
		if err == nil {
			r, err = f.newReader(ctx, o)
		}
		if errors.Is(err, objectstore.ErrPreconditionFailed) && try == 0 {
			continue
		}
		if err != nil {
			return nil, 0, f.logErr("open", n.key(), err)
		}
		return r, f.openFlags(), 0
	}
}

// errNotAFile: the key now holds a symlink (replaced by a rename); the
// kernel's inode for it is stale.
var errNotAFile = fmt.Errorf("object is no longer a regular file: %w", syscall.ESTALE)

// headFile resolves the node's object and checks it is still a regular
// file, so that a stale inode never opens what replaced it.
func (n *fileNode) headFile(ctx context.Context) (*object, error) {
	o, err := n.fsys.head(ctx, n.key())
	if err != nil {
		return nil, err
	}
	if o.attrs.Symlink || isSpecial(o.attrs) {
		return nil, errNotAFile
	}
	return o, nil
}
