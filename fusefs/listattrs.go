package fusefs

import (
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
)

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
	prefix, name := splitKey(key)
	c := &f.meta
	c.mu.Lock()
	l := c.listings[prefix]
	if l == nil || !l.usable(f.opt.MetadataTTL) {
		c.mu.Unlock()
		return nil
	}
	in, ok := l.infos[name]
	began := l.began
	c.mu.Unlock()
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
