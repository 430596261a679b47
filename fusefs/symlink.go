package fusefs

import (
	"context"
	"fmt"
	"hash/fnv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
)

// Symbolic links are objects marked csefs-symlink: 1 whose body is the link
// target, encrypted like any file body (so targets do not leak to whoever
// can list the bucket beyond their length). Lookup turns such an object into
// a symlinkNode. Readdir has only the listing, which carries no metadata, so
// it reports them as regular files unless their HEAD is already cached:
// tools that trust d_type (find -type l) may miss them; ls -l and stat are
// right, since they look each name up.
//
// Hard links cannot be represented by objects: Link fails with ENOTSUP.

// maxSymlink bounds a link target read back (PATH_MAX is 4096).
const maxSymlink = 64 << 10

// symlinkNode is a symbolic link object.
type symlinkNode struct {
	fs.Inode
	fsys    *FS
	nodeKey // the object key: key(), setKey()
}

var (
	_ fs.NodeReadlinker = (*symlinkNode)(nil)
	_ fs.NodeGetattrer  = (*symlinkNode)(nil)
	_ fs.NodeSetattrer  = (*symlinkNode)(nil)
	_ fs.NodeSymlinker  = (*dirNode)(nil)
	_ fs.NodeLinker     = (*dirNode)(nil)
)

func newSymlinkNode(f *FS, key string) *symlinkNode {
	n := &symlinkNode{fsys: f}
	n.setKey(key)
	return n
}

func symlinkStable(key string) fs.StableAttr {
	return fs.StableAttr{Mode: syscall.S_IFLNK, Ino: symlinkIno(key)}
}

// symlinkIno differs from the file inode number of the same key, so that an
// object replaced by a symlink (or back) is a new inode, never an old node
// of the other type.
func symlinkIno(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte{'l'})
	h.Write([]byte(key))
	n := h.Sum64()
	if n <= 1 {
		n += 2
	}
	return n
}

// symlinkAttrs are the csefs attributes of a new symlink object.
func symlinkAttrs() metadata.Attrs {
	return metadata.Attrs{Mode: syscall.S_IFLNK | 0o777, HasMode: true, Symlink: true}
}

// Symlink stores target as the encrypted body of a new object marked as a
// symlink.
func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
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
		return nil, f.logErr("symlink", d.prefix()+name, err)
	}
	key := childKey(d.prefix(), name)
	if f.pendingNode(key) != nil {
		return nil, syscall.EEXIST
	}
	if err := f.beforeUse(ctx, key); err != nil {
		return nil, f.logErr("symlink", key, err)
	}
	if k, _, err := f.probe(ctx, key); err != nil {
		return nil, f.logErr("symlink", key, err)
	} else if k != entryNone {
		return nil, syscall.EEXIST
	}
	o, err := f.putSymlink(ctx, key, target, f.withCreator(ctx, symlinkAttrs()))
	if err != nil {
		return nil, f.logErr("symlink", key, err)
	}
	f.touchDir(d.prefix())
	f.fileAttr(o, &out.Attr)
	return d.NewInode(ctx, newSymlinkNode(f, key), symlinkStable(key)), 0
}

// putSymlink uploads a symlink object through the ordinary upload path.
func (f *FS) putSymlink(ctx context.Context, key, target string, attrs metadata.Attrs) (*object, error) {
	u, err := f.beginUpload(ctx, key, attrs)
	if err != nil {
		return nil, err
	}
	if _, err := u.Write([]byte(target)); err != nil {
		u.abort(ctx)
		return nil, err
	}
	o, err := u.commit(ctx)
	if err != nil {
		u.abort(ctx)
		return nil, err
	}
	return o, nil
}

// Readlink reads and decrypts the target (authenticated, like any whole-file
// read).
func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx, done := n.fsys.untilKilled(ctx, "readlink", n.key())
	defer done()
	f := n.fsys
	key := n.key()
	o, err := f.head(ctx, key)
	if err != nil {
		return nil, f.logErr("readlink", key, err)
	}
	if o.plainSize > maxSymlink {
		return nil, f.logErr("readlink", key, fmt.Errorf("symlink target of %d bytes: %w", o.plainSize, errUnsupported))
	}
	r, err := f.newReaderNoPreload(ctx, o)
	if err != nil {
		return nil, f.logErr("readlink", key, err)
	}
	defer r.Release(ctx)
	target, err := r.readAll(ctx)
	if err != nil {
		return nil, f.logErr("readlink", key, err)
	}
	return target, 0
}

func (n *symlinkNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.fsys.headAttr(ctx, n.key(), out)
}

// Setattr persists lchown and lutimes like a file's (see setattr.go); a
// symlink's mode is always 0777.
func (n *symlinkNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	c := changeFrom(in)
	c.setMode = false
	return n.fsys.setMetaOnly(ctx, n.key(), in, c, out)
}

// Link refuses hard links: an object has exactly one name.
func (d *dirNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d.fsys.log.Debug("hard link refused: not supported", "name", childKey(d.prefix(), name))
	return nil, syscall.ENOTSUP
}
