package fusefs

import (
	"context"
	"hash/fnv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
)

// Special files (fifos, sockets, character and block devices) are empty
// objects whose csefs-mode holds their type and permission bits, and
// csefs-rdev a device's number, like symlinks (symlink.go) an object with
// attributes only. The kernel serves their opens itself (a fifo's pipe, a
// device's driver); csefs only stores, lists, stats, renames and deletes
// them. Like symlinks, readdir reports them as regular files unless their
// HEAD is cached.

// specialNode is a fifo, socket or device object.
type specialNode struct {
	fs.Inode
	fsys    *FS
	nodeKey // the object key: key(), setKey()
}

var (
	_ fs.NodeGetattrer = (*specialNode)(nil)
	_ fs.NodeSetattrer = (*specialNode)(nil)
	_ fs.NodeMknoder   = (*dirNode)(nil)
)

func newSpecialNode(f *FS, key string) *specialNode {
	n := &specialNode{fsys: f}
	n.setKey(key)
	return n
}

// isSpecial says whether a stored mode is that of a special file.
func isSpecial(a metadata.Attrs) bool {
	if !a.HasMode {
		return false
	}
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		return true
	}
	return false
}

// specialStable gives special files inode numbers of their own, so that an
// object replaced by one of another type is a new inode.
func specialStable(key string, mode uint32) fs.StableAttr {
	h := fnv.New64a()
	h.Write([]byte{'s'})
	h.Write([]byte(key))
	n := h.Sum64()
	if n <= 1 {
		n += 2
	}
	return fs.StableAttr{Mode: mode & syscall.S_IFMT, Ino: n}
}

// Mknod stores a fifo, socket or device as an empty object with its type,
// mode and rdev in metadata (the kernel has checked CAP_MKNOD for devices);
// S_IFREG makes an empty regular file.
func (d *dirNode) Mknod(ctx context.Context, name string, mode uint32, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = mutating(ctx)
	d.fsys.dirChanged(d.prefix())
	defer d.fsys.dirChanged(d.prefix())
	f := d.fsys
	if f.opt.ReadOnly {
		return nil, syscall.EROFS
	}
	if !validName(name) || metadata.IsInstructionKey(name) {
		return nil, syscall.EINVAL
	}
	if err := f.checkName(d.prefix(), name); err != nil {
		return nil, f.logErr("mknod", d.prefix()+name, err)
	}
	attrs := metadata.Attrs{Mode: mode&syscall.S_IFMT | mode&0o7777, HasMode: true}
	switch mode & syscall.S_IFMT {
	case syscall.S_IFCHR, syscall.S_IFBLK:
		attrs.Rdev, attrs.HasRdev = uint64(rdev), true
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFREG:
	default:
		return nil, syscall.EINVAL
	}
	key := childKey(d.prefix(), name)
	if f.pendingNode(key) != nil {
		return nil, syscall.EEXIST
	}
	if err := f.beforeUse(ctx, key); err != nil {
		return nil, f.logErr("mknod", key, err)
	}
	if k, _, err := f.probe(ctx, key); err != nil {
		return nil, f.logErr("mknod", key, err)
	} else if k != entryNone {
		return nil, syscall.EEXIST
	}
	u, err := f.beginUpload(ctx, key, f.withCreator(ctx, attrs))
	if err != nil {
		return nil, f.logErr("mknod", key, err)
	}
	o, err := u.commit(ctx)
	if err != nil {
		u.abort(ctx)
		return nil, f.logErr("mknod", key, err)
	}
	f.touchDir(d.prefix())
	f.fileAttr(o, &out.Attr)
	if mode&syscall.S_IFMT == syscall.S_IFREG {
		return linked(d.NewInode(ctx, newFileNode(f, key), fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino(key, false)})), 0
	}
	return d.NewInode(ctx, newSpecialNode(f, key), specialStable(key, mode)), 0
}

func (n *specialNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.fsys.headAttr(ctx, n.key(), out)
}

// Setattr persists chmod, chown and utimes like a file's (setattr.go); the type
// and rdev stay.
func (n *specialNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.fsys.setMetaOnly(ctx, n.key(), in, changeFrom(in), out)
}
