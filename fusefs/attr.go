package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
)

// Attributes as getattr, lookup, readdirplus and create show them: of an
// object as resolved or listed (fileAttr, headAttr, listedObject), of a file
// with changes not yet uploaded (pendingAttr), of a directory from what is
// known of its marker (fillDirAttr, dirAttrOf). Storing them is setattr.go's;
// changes deferred in memory (lazyattr.go) show here at once.

// fileAttr fills the attributes of the object o (a file, symlink or special
// file), with its deferred attribute changes applied.
func (f *FS) fileAttr(o *object, a *fuse.Attr) {
	if c, ok := f.lazyOf(o.key); ok {
		// Deferred chmod, chown or utimes (lazyattr.go).
		o2 := *o
		o2.attrs = c.apply(keepMtime(o.attrs, o.info.LastModified), f.opt.UID, f.opt.GID)
		o = &o2
	}
	mode := f.opt.FileMode
	if o.attrs.HasMode {
		mode = o.attrs.Mode & 0o7777
	}
	a.Mode = syscall.S_IFREG | mode
	switch {
	case o.attrs.Symlink:
		a.Mode = syscall.S_IFLNK | 0o777
	case isSpecial(o.attrs):
		a.Mode = o.attrs.Mode
		a.Rdev = uint32(o.attrs.Rdev)
	}
	a.Nlink = 1
	a.Uid, a.Gid = f.opt.UID, f.opt.GID
	if o.attrs.HasOwner {
		a.Uid, a.Gid = o.attrs.UID, o.attrs.GID
	}
	a.Size = uint64(o.plainSize)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 1 << 20
	// An upload time has whole seconds on S3 (an HTTP date); it is shown
	// so on every store, so that the time a commit reports and the one a
	// later HEAD or LIST gives agree.
	mt := o.info.LastModified.Truncate(time.Second)
	if o.attrs.HasMtime {
		mt = o.attrs.Mtime
	}
	at := mt // atime is stored only when set explicitly
	if o.attrs.HasAtime {
		at = o.attrs.Atime
	}
	ct := changeTime(o.attrs, mt)
	a.SetTimes(&at, &mt, &ct)
}

// pendingAttr fills the attributes of a file with changes not yet uploaded,
// from the attributes its new version will carry (a mode of 0000 included).
func (f *FS) pendingAttr(a *fuse.Attr, size int64, attrs metadata.Attrs) {
	mode := f.opt.FileMode
	if attrs.HasMode {
		mode = attrs.Mode & 0o7777
	}
	a.Mode = syscall.S_IFREG | mode
	a.Nlink = 1
	a.Uid, a.Gid = f.opt.UID, f.opt.GID
	if attrs.HasOwner {
		a.Uid, a.Gid = attrs.UID, attrs.GID
	}
	a.Size = uint64(size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 1 << 20
	// Whole seconds, as the committed object's upload time will be.
	now := time.Now().Truncate(time.Second)
	a.SetTimes(&now, &now, &now)
}

// fillAttr fills the attributes of a node that is being created.
func (n *fileNode) fillAttr(a *fuse.Attr) {
	size, attrs, _ := n.streaming()
	n.fsys.pendingAttr(a, size, attrs)
}

// headAttr answers getattr of a node whose attributes are all in its
// object's metadata (symlinks, special files): from a HEAD, or the cache.
func (f *FS) headAttr(ctx context.Context, key string, out *fuse.AttrOut) syscall.Errno {
	ctx, done := f.untilKilled(ctx, "getattr", key)
	defer done()
	o, err := f.head(ctx, key)
	if err != nil {
		return f.logErr("getattr", key, err)
	}
	f.fileAttr(o, &out.Attr)
	return 0
}

// fillDirAttr fills a directory's attributes from st.
func (f *FS) fillDirAttr(a *fuse.Attr, st dirState) {
	mode := f.opt.DirMode
	if st.attrs.HasMode {
		mode = st.attrs.Mode & 0o7777
	}
	a.Mode = syscall.S_IFDIR | mode
	a.Nlink = 2
	a.Uid, a.Gid = f.opt.UID, f.opt.GID
	if st.attrs.HasOwner {
		a.Uid, a.Gid = st.attrs.UID, st.attrs.GID
	}
	a.Size = 4096
	a.Blocks = 8
	a.Blksize = 4096
	mt := f.started
	switch {
	case !st.mtime.IsZero():
		mt = st.mtime
	case st.attrs.HasMtime:
		mt = st.attrs.Mtime
	case st.marker && !st.upload.IsZero():
		mt = st.upload.Truncate(time.Second)
	}
	at := mt
	if st.attrs.HasAtime {
		at = st.attrs.Atime
	}
	ct := changeTime(st.attrs, mt)
	a.SetTimes(&at, &mt, &ct)
}

// dirAttrOf fills prefix's attributes, HEADing its marker if needed.
func (f *FS) dirAttrOf(ctx context.Context, prefix string, a *fuse.Attr) error {
	st, err := f.dirInfo(ctx, prefix)
	if err != nil {
		return err
	}
	f.fillDirAttr(a, st)
	return nil
}

// changeTime is the ctime to show: the last attribute change stored, or the
// mtime if that is later (a write changes both).
func changeTime(a metadata.Attrs, mtime time.Time) time.Time {
	if a.HasCtime && a.Ctime.After(mtime) {
		return a.Ctime
	}
	return mtime
}

// With Options.AttrsFromList, stat(2) of a listed file is answered from
// what its directory's LIST said, without a HEAD: this is what a LIST of
// 10,000 files costs against 10,000 HEADs more (docs/semantics.md,
// "Attributes from LIST"). Such a listed object is used for attributes
// only, never cached as a stat nor opened: open(2) always HEADs.

// listedObject returns key's attributes as its directory's usable listing
// gives them, or nil (not listed, no AttrsFromList, or a stat obtained
// since the LIST is cached and wins).
func (f *FS) listedObject(key string) *object {
	if !f.opt.AttrsFromList {
		return nil
	}
	in, began, ok := f.listedInfo(key)
	if !ok {
		return nil
	}
	if o := f.statSince(key, began); o != nil {
		return o
	}
	size := in.Size
	if f.opt.Provider != nil {
		// What this mount writes: a GCM body.
		if n, err := cse.GCMPlainSize(size); err == nil {
			size = n
		}
	}
	return &object{key: key, info: in, plainSize: size, listed: true}
}

// sameAttr says whether a and b show the same attributes.
func (f *FS) sameAttr(a, b *object) bool {
	var x, y fuse.Attr
	f.fileAttr(a, &x)
	f.fileAttr(b, &y)
	return x == y
}
