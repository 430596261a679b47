package fusefs

import (
	"context"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fileNode is one object.
type fileNode struct {
	fs.Inode
	fsys *FS
	key  string

	mu    sync.Mutex
	w     *writeHandle // the upload in progress, if any
	mtime time.Time    // set by utimes while no upload is pending
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
)

// pendingNode returns the node of a file being written under key.
func (f *FS) pendingNode(key string) *fileNode {
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	return f.pend[key]
}

// pendingUnder lists the keys being written directly under prefix.
func (f *FS) pendingUnder(prefix string) []string {
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	var keys []string
	for k := range f.pend {
		if rest, ok := strings.CutPrefix(k, prefix); ok && !strings.Contains(rest, "/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (f *FS) setPending(key string, n *fileNode, on bool) {
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	if on {
		f.pend[key] = n
	} else if f.pend[key] == n {
		delete(f.pend, key)
	}
}

// writer returns the upload in progress, if one has started.
func (n *fileNode) writer() *writeHandle {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.w == nil {
		return nil
	}
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	if !n.w.started {
		return nil
	}
	return n.w
}

// currentMode is the permission bits the object has now, for a new version.
func (n *fileNode) currentMode(ctx context.Context) uint32 {
	if o, err := n.fsys.head(ctx, n.key); err == nil && o.attrs.HasMode {
		return o.attrs.Mode & 0o7777
	}
	return n.fsys.opt.FileMode
}

// basePlainSize is the size of the object as stored, 0 if there is none.
func (n *fileNode) basePlainSize(ctx context.Context) int64 {
	if o, err := n.fsys.head(ctx, n.key); err == nil {
		return o.plainSize
	}
	return 0
}

// fillAttr fills the attributes of a file with an upload in progress.
func (n *fileNode) fillAttr(a *fuse.Attr) {
	f := n.fsys
	w := n.writer()
	a.Mode = syscall.S_IFREG | f.opt.FileMode
	a.Nlink = 1
	a.Uid, a.Gid = f.opt.UID, f.opt.GID
	a.Blksize = 1 << 20
	now := time.Now()
	if w != nil {
		size, mode := w.status()
		a.Size = uint64(size)
		a.Blocks = (a.Size + 511) / 512
		a.Mode = syscall.S_IFREG | mode
	}
	a.SetTimes(nil, &now, &now)
}

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	if n.writer() != nil {
		n.fillAttr(&out.Attr)
		return 0
	}
	if r, ok := fh.(*readHandle); ok {
		f.fileAttr(r.obj, &out.Attr)
		return 0
	}
	o, err := f.head(ctx, n.key)
	if err != nil {
		return f.logErr("getattr", n.key, err)
	}
	f.fileAttr(o, &out.Attr)
	n.applyLocal(&out.Attr)
	return 0
}

func (n *fileNode) applyLocal(a *fuse.Attr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.mtime.IsZero() {
		a.SetTimes(nil, &n.mtime, nil)
	}
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fsys
	acc := flags & syscall.O_ACCMODE
	if acc == syscall.O_WRONLY || acc == syscall.O_RDWR {
		if f.opt.ReadOnly {
			return nil, 0, syscall.EROFS
		}
		w, err := f.newWriter(ctx, n, n.currentMode(ctx), flags&syscall.O_TRUNC != 0)
		if err != nil {
			return nil, 0, f.logErr("open", n.key, err)
		}
		return w, 0, 0
	}
	// Close-to-open: every open sees the object as it is now.
	f.putStat(n.key, nil)
	o, err := f.head(ctx, n.key)
	if err != nil {
		return nil, 0, f.logErr("open", n.key, err)
	}
	r, err := f.newReader(ctx, o)
	if err != nil {
		return nil, 0, f.logErr("open", n.key, err)
	}
	return r, 0, 0
}

func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	if f.opt.ReadOnly {
		return syscall.EROFS
	}
	n.mu.Lock()
	w := n.w
	n.mu.Unlock()
	if size, ok := in.GetSize(); ok {
		switch {
		case w != nil:
			if err := w.truncate(ctx, int64(size)); err != nil {
				return f.logErr("truncate", n.key, err)
			}
		case size == 0:
			// truncate(path, 0): replace the object with an empty one.
			nw, err := f.newWriter(ctx, n, n.currentMode(ctx), true)
			if err != nil {
				return f.logErr("truncate", n.key, err)
			}
			errno := nw.Fsync(ctx, 0)
			nw.Release(ctx)
			if errno != 0 {
				return errno
			}
		default:
			o, err := f.head(ctx, n.key)
			if err != nil {
				return f.logErr("truncate", n.key, err)
			}
			if int64(size) != o.plainSize {
				f.log.Warn("truncate to a non-zero size is not supported", "object", f.uri(n.key), "size", size)
				return syscall.ENOTSUP
			}
		}
	}
	if mode, ok := in.GetMode(); ok && w != nil {
		w.setMode(mode & 0o7777)
	}
	if mt, ok := in.GetMTime(); ok {
		n.mu.Lock()
		n.mtime = mt
		n.mu.Unlock()
	}
	return n.Getattr(ctx, fh, out)
}
