package fusefs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// Rename.
//
// Object stores cannot rename: a file is moved by a server-side copy (which
// keeps the body, the envelope and every other metadata key byte for byte),
// then its instruction file if it has one, then deleting the source. A
// directory is moved object by object: every key under the prefix (the
// "dir/" marker and instruction files included) is copied, then the old keys
// are deleted. Neither is atomic: a crash in between leaves both copies (never
// neither), and a concurrent reader may see a directory half moved.
//
// What is refused:
//   - RENAME_EXCHANGE and RENAME_WHITEOUT: EINVAL (not implementable on an
//     object store without a window where one of the two names is missing).
//   - a file whose new version is streaming up right now (written and not yet
//     closed), or with a stream in progress anywhere under a directory being
//     moved: EBUSY, since the multipart upload cannot change its key. Staged
//     changes are fine: they are uploaded, under the new name, when the file
//     is flushed.
//   - a file over a directory: EISDIR; a directory over a file: ENOTDIR; a
//     directory over a non-empty directory: ENOTEMPTY; RENAME_NOREPLACE over
//     anything: EEXIST.
//   - renames renameAllowed refuses: across encryption zones, EXDEV.
//
// Limitation: a file open for reading that is renamed keeps reading from the
// old key; reads not yet served from memory then fail (ENOENT/EIO).

// Flags of renameat2(2).
const (
	renameNoReplace = 0x1
	renameExchange  = fs.RENAME_EXCHANGE
	renameWhiteout  = 0x4
)

var _ fs.NodeRenamer = (*dirNode)(nil)

// errCrossZone: a rename between encryption zones (Options.ZoneOf). It wraps
// syscall.EXDEV, so toErrno returns EXDEV and mv falls back to copy and
// delete, which re-encrypts under the destination zone's key.
var errCrossZone = fmt.Errorf("fusefs: rename across encryption zones: %w", syscall.EXDEV)

// renameAllowed refuses moving src to dst (keys of files, or of directories
// without the trailing slash) when they lie in different encryption zones:
// for a directory, when any object under it would change zone. Without
// Options.ZoneOf every rename is allowed. With it, this costs one recursive
// listing of src + "/" (which also tells a directory from a file).
func (f *FS) renameAllowed(ctx context.Context, src, dst string) error {
	zoneOf := f.opt.ZoneOf
	if zoneOf == nil {
		return nil
	}
	check := func(s, d string) error {
		zs, zd := zoneOf(f.opt.KeyPrefix+s), zoneOf(f.opt.KeyPrefix+d)
		if zs != zd {
			return fmt.Errorf("%s (zone %q) to %s (zone %q): %w", f.uri(s), zs, f.uri(d), zd, errCrossZone)
		}
		return nil
	}
	dir := false
	err := f.store.List(ctx, src+"/", "", func(p objectstore.ListPage) error {
		for _, o := range p.Objects {
			dir = true
			nk, ok := movedKey(o.Key, src+"/", dst+"/")
			if !ok {
				continue
			}
			if err := check(o.Key, nk); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || dir {
		return err
	}
	return check(src, dst)
}

// movedKey maps key, which lies under srcPrefix, to its place under
// dstPrefix. ok is false for a key outside srcPrefix.
func movedKey(key, srcPrefix, dstPrefix string) (string, bool) {
	rest, ok := strings.CutPrefix(key, srcPrefix)
	if !ok {
		return "", false
	}
	return dstPrefix + rest, true
}

// renamedKey maps key to its name after the file or directory src (no
// trailing slash) became dst: src itself becomes dst, and src/... becomes
// dst/... . ok is false for any other key ("ab" is not under "a").
func renamedKey(key, src, dst string) (string, bool) {
	if key == src {
		return dst, true
	}
	return movedKey(key, src+"/", dst+"/")
}

// renameTargets maps every key of a directory tree (a recursive listing of
// srcPrefix) to its new key under dstPrefix, in listing order.
func renameTargets(keys []string, srcPrefix, dstPrefix string) ([][2]string, error) {
	moves := make([][2]string, 0, len(keys))
	for _, k := range keys {
		nk, ok := movedKey(k, srcPrefix, dstPrefix)
		if !ok {
			return nil, errors.New("fusefs: internal error: listed key " + k + " outside " + srcPrefix)
		}
		moves = append(moves, [2]string{k, nk})
	}
	return moves, nil
}

func (d *dirNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) (errno syscall.Errno) {
	ctx = mutating(ctx)
	// A file moved here updates the two listings and the stat cache
	// precisely (movedFile); anything else drops every listing, a
	// directory before it starts moving (below) and every other case when
	// it ends. A file's listings stay usable meanwhile: until the rename
	// returns, either state is right, and a LIST that sees the copy half
	// done is not kept (its generation is bumped by movedFile).
	precise := false
	defer func() {
		if !precise {
			d.fsys.allDirsChanged()
		}
	}()
	defer func() { d.fsys.renamedIn(d, newParent, name, newName, errno) }() // dirstate.go
	f := d.fsys
	if f.opt.ReadOnly {
		return syscall.EROFS
	}
	if flags&^renameNoReplace != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE, RENAME_WHITEOUT
	}
	nd, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	if !validName(name) || !validName(newName) || metadata.IsInstructionKey(name) || metadata.IsInstructionKey(newName) {
		return syscall.EINVAL
	}
	if err := f.checkName(nd.prefix(), newName); err != nil {
		return f.logErr("rename", nd.prefix()+newName, err)
	}
	src, dst := childKey(d.prefix(), name), childKey(nd.prefix(), newName)
	// Either name may be an earlier rename's old name still being deleted
	// (lazydelete.go), and a directory may hold some.
	for _, k := range []string{src, dst} {
		if err := f.beforeUse(ctx, k); err != nil {
			return f.logErr("rename", k, err)
		}
	}
	if err := f.awaitDeletesUnder(ctx, src+"/"); err != nil && ctx.Err() != nil {
		return f.logErr("rename", src, err)
	}
	if err := f.renameAllowed(ctx, src, dst); err != nil {
		return f.logErr("rename", src, err)
	}
	if src == dst {
		return 0
	}
	// A directory rename a crash cut short, involving either name, is
	// finished first, so that `mv src dst` run again does not nest src
	// under the half-made dst (intent.go).
	if busy, err := f.settleRenames(ctx, src, dst); err != nil {
		return f.logErr("rename", src, err)
	} else if busy {
		return syscall.EBUSY
	}
	child := d.GetChild(name)
	lk := lockTree(child)
	defer lk.unlock()
	if lk.streaming || f.pendingIn(src) || f.pendingNode(dst) != nil {
		f.log.Debug("rename refused: upload in progress", "object", f.uri(src))
		return syscall.EBUSY
	}
	// A file's deferred attributes (lazyattr.go) ride on its copy; they
	// stay deferred if it does not happen.
	lazy, hasLazy := f.takeLazyAttrs(src)
	moved := false
	defer func() {
		if hasLazy && !moved {
			f.deferAttrs(src, lazy)
		}
	}()
	// Decide on the store's current state, not the cache's, except where
	// the cache is this mount's own recent work: a file this mount stat'ed
	// or wrote within the TTL is moved from that version (the copy is
	// pinned to its ETag, so a newer version written elsewhere meanwhile
	// fails the rename with ESTALE rather than being moved blind), and a
	// name a fresh listing does not have is taken as free. rsync's
	// rename of each temp file so costs a copy and a delete, not two
	// LIST+HEAD probes more.
	sobj := f.cachedStat(src)
	if sobj != nil && (sobj.listed || sobj.instr && sobj.instrETag == "") {
		sobj = nil // not enough to pin the copies to: probe
	}
	sk := entryFile
	dk, dlisted, _ := f.listed(nd.prefix(), newName)
	var dobj *object
	f.putStat(src, nil)
	f.putStat(dst, nil)
	var err error
	if sobj == nil {
		if sk, sobj, err = f.probe(ctx, src); err != nil {
			return f.logErr("rename", src, err)
		}
	}
	if !dlisted || dk != entryNone {
		if dk, dobj, err = f.probe(ctx, dst); err != nil {
			return f.logErr("rename", dst, err)
		}
	}
	switch sk {
	case entryNone:
		if lk.staged {
			return syscall.EBUSY // a new file that exists only in staging
		}
		return syscall.ENOENT
	case entryFile:
		switch {
		case dk == entryDir:
			return syscall.EISDIR
		case dk == entryFile && flags&renameNoReplace != 0:
			return syscall.EEXIST
		}
		var with *attrChange
		if hasLazy {
			with = &lazy
		}
		var info *objectstore.Info
		info, err = f.moveFile(ctx, sobj, dst, dobj, with, d == nd)
		if err == nil {
			moved = true
			if dobj != nil {
				f.takeLazyAttrs(dst) // replaced
			}
			if regular(sobj) {
				f.movedFile(sobj, dst, info, with, d.prefix(), name, nd.prefix(), newName)
				precise = true
			}
		}
	case entryDir:
		f.allDirsChanged()
		if err := f.flushAttrsUnder(ctx, src+"/"); err != nil {
			return f.logErr("rename", src, err)
		}
		// The markers are copied as stored: store their pending
		// attributes first (dirstate.go).
		if err := f.flushDirsUnder(ctx, src+"/"); err != nil {
			return f.logErr("rename", src, err)
		}
		switch {
		case dk == entryFile:
			return syscall.ENOTDIR
		case strings.HasPrefix(dst+"/", src+"/"):
			return syscall.EINVAL // into itself
		case dk == entryDir && flags&renameNoReplace != 0:
			return syscall.EEXIST
		case dk == entryDir:
			empty, err := f.dirEmpty(ctx, dst+"/")
			if err != nil {
				return f.logErr("rename", dst+"/", err)
			}
			if !empty {
				return syscall.ENOTEMPTY
			}
		}
		err = f.moveTree(ctx, src+"/", dst+"/")
	}
	if err != nil {
		return f.logErr("rename", src, err)
	}
	if child != nil {
		lk.retarget(child, src, dst)
	}
	if d != nd {
		f.keepDir(ctx, d.prefix())
	}
	return 0
}

// regular reports whether o is a regular file (not a symlink or special
// file) resolved from a HEAD or a commit.
func regular(o *object) bool {
	return o != nil && !o.listed && !o.attrs.Symlink && !isSpecial(o.attrs)
}

// movedFile records a file moved from dir/name to ndir/newName as dst
// (its copy's info, with the attribute change lazy applied): the source
// leaves its listing, dst joins its own, and dst's stat is the copy's, so
// that the lookups and the getattr that follow a rename (rsync's) need no
// LIST or HEAD.
func (f *FS) movedFile(o *object, dst string, info *objectstore.Info, lazy *attrChange, dir, name, ndir, newName string) {
	no := *o
	no.key = dst
	no.info.Key = dst
	if info != nil {
		no.info.ETag = info.ETag
		if !info.LastModified.IsZero() {
			no.info.LastModified = info.LastModified
		}
	}
	if lazy != nil {
		if meta, err := f.withLazyAttrs(o.info.Metadata, o.info.LastModified, *lazy); err == nil {
			no.info.Metadata = meta
			no.attrs = metadata.ParseAttrs(meta)
		}
	}
	f.listingRemove(dir, name)
	f.listingAdd(ndir, fuse.DirEntry{Name: newName, Mode: syscall.S_IFREG, Ino: ino(dst, false)}, entryFile)
	if !o.instr { // an instruction file's new ETag is not known here
		f.putStat(dst, &no)
	}
}

// moveFile moves the object o to dst (where dobj, if not nil, is replaced),
// with the attribute change lazy applied to its metadata if not nil, and
// returns the copy's info. With later (a rename within one directory), an
// encrypted object without an instruction file has its old name deleted in
// the background (lazydelete.go).
func (f *FS) moveFile(ctx context.Context, o *object, dst string, dobj *object, lazy *attrChange, later bool) (*objectstore.Info, error) {
	src := o.key
	defer f.putStat(src, nil)
	defer f.putStat(dst, nil)
	if !o.instr && (o.kind == kindPlain || dobj != nil && dobj.instr) {
		// An instruction file left at dst would be taken for the moved
		// object's envelope (plaintext) or linger as garbage.
		if err := f.store.Delete(ctx, metadata.InstructionKey(dst)); err != nil {
			return nil, err
		}
	}
	// Pinned to the version that was looked at (a newer src written
	// meanwhile fails the copy with ESTALE), and so is the instruction
	// file's copy. The deletes below are not conditional: S3 has no
	// conditional DELETE for an ETag on unversioned buckets.
	cctx := ctx
	if o.env != nil && !o.instr {
		// The copy keeps the envelope (unique IV and wrapped key): proof
		// enough for a copy whose reply was lost.
		cctx = objectstore.WithUniqueMetadata(ctx)
	}
	opts := objectstore.CopyOptions{IfMatch: o.info.ETag, Source: &o.info}
	if lazy != nil {
		meta, err := f.withLazyAttrs(o.info.Metadata, o.info.LastModified, *lazy)
		if err != nil {
			return nil, fmt.Errorf("attributes do not fit beside the envelope: %w: %w", err, errUnsupported)
		}
		opts.Metadata = meta
	}
	info, err := f.store.Copy(cctx, src, dst, opts)
	if err != nil {
		return nil, err
	}
	if o.instr {
		if _, err := f.store.Copy(ctx, metadata.InstructionKey(src), metadata.InstructionKey(dst), objectstore.CopyOptions{IfMatch: o.instrETag}); err != nil {
			// dst without its envelope is unreadable: take it away; the
			// source is intact.
			if derr := f.store.Delete(context.WithoutCancel(ctx), dst); derr != nil {
				f.log.Error("could not remove copy after its instruction file failed", "object", f.uri(dst), "cause", derr.Error())
			}
			return nil, err
		}
	}
	if later && !o.instr && o.kind != kindPlain {
		f.deleteLater(src)
		return info, nil
	}
	if err := f.store.Delete(ctx, src); err != nil {
		return nil, err
	}
	if o.instr || o.kind == kindPlain {
		if err := f.store.Delete(ctx, metadata.InstructionKey(src)); err != nil {
			f.log.Warn("could not delete instruction file", "object", f.uri(src), "cause", err.Error())
		}
	}
	return info, nil
}

// renameParallel bounds the copies and deletes of a directory move.
const renameParallel = 8

// moveTree moves every object under srcPrefix to dstPrefix: all copies
// first (undone if one fails), then the deletes. Its intent (intent.go) is
// stored before the first copy and deleted after the last delete, or once
// the copies are undone; a failure among the deletes leaves it, for the
// next rename of either tree or the next mount to finish.
func (f *FS) moveTree(ctx context.Context, srcPrefix, dstPrefix string) error {
	in, err := f.beginRename(ctx, srcPrefix, dstPrefix)
	if err != nil {
		return err
	}
	keys, moves, err := f.copyTree(ctx, srcPrefix, dstPrefix, true)
	if err != nil {
		f.endRename(in, true) // undone: nothing to finish
		return err
	}
	renameHook(len(moves))
	if err := f.deleteTree(ctx, keys, moves, srcPrefix); err != nil {
		f.endRename(in, false)
		return err
	}
	f.endRename(in, true)
	return nil
}

// renameHook runs between a directory rename's copies and its deletes
// (tests).
var renameHook = func(objects int) {}

// copyTree copies every object under srcPrefix to its place under
// dstPrefix, renameParallel at a time, and returns the keys and the moves.
// With undo, a failure deletes the copies made.
func (f *FS) copyTree(ctx context.Context, srcPrefix, dstPrefix string, undo bool) (keys []string, moves [][2]string, err error) {
	var etags []string // etags[i] pins the copy of keys[i] to the listed version
	err = f.store.List(ctx, srcPrefix, "", func(p objectstore.ListPage) error {
		for _, o := range p.Objects {
			keys = append(keys, o.Key)
			etags = append(etags, o.ETag)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	moves, err = renameTargets(keys, srcPrefix, dstPrefix)
	if err != nil {
		return nil, nil, err
	}
	all := moves
	defer func() {
		for _, m := range all {
			f.putStat(m[0], nil)
			f.putStat(m[1], nil)
		}
	}()
	copied := make([]bool, len(moves))
	err = forEach(ctx, len(moves), func(ctx context.Context, i int) error {
		if _, err := f.store.Copy(ctx, moves[i][0], moves[i][1], objectstore.CopyOptions{IfMatch: etags[i]}); err != nil {
			return err
		}
		copied[i] = true
		return nil
	})
	if err != nil && undo {
		uctx := context.WithoutCancel(ctx)
		for i, m := range moves {
			if copied[i] {
				if derr := f.store.Delete(uctx, m[1]); derr != nil {
					f.log.Warn("could not remove partial copy", "object", f.uri(m[1]), "cause", derr.Error())
				}
			}
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return keys, moves, nil
}

// deleteTree deletes the sources of moves, then the directories of keys
// under srcPrefix (srcPrefix's marker included).
func (f *FS) deleteTree(ctx context.Context, keys []string, moves [][2]string, srcPrefix string) error {
	defer func() {
		for _, m := range moves {
			f.putStat(m[0], nil)
		}
	}()
	// Objects first, then every directory of the tree, deepest first: a
	// store that keeps directories (LocalStore, where an empty directory is
	// a marker) removes one only once it is empty.
	var objs []string
	for _, m := range moves {
		if !strings.HasSuffix(m[0], "/") {
			objs = append(objs, m[0])
		}
	}
	markers := treeDirs(keys, srcPrefix)
	err := forEach(ctx, len(objs), func(ctx context.Context, i int) error {
		return f.store.Delete(ctx, objs[i])
	})
	if err != nil {
		return err
	}
	for _, k := range markers {
		if err := f.store.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// treeDirs returns srcPrefix and every directory prefix between it and
// keys (all under srcPrefix), deepest first.
func treeDirs(keys []string, srcPrefix string) []string {
	seen := map[string]bool{srcPrefix: true}
	dirs := []string{srcPrefix}
	for _, k := range keys {
		for i := len(srcPrefix); i < len(k); i++ {
			if k[i] == '/' && !seen[k[:i+1]] {
				seen[k[:i+1]] = true
				dirs = append(dirs, k[:i+1])
			}
		}
	}
	sort.Slice(dirs, func(i, j int) bool {
		if len(dirs[i]) != len(dirs[j]) {
			return len(dirs[i]) > len(dirs[j])
		}
		return dirs[i] < dirs[j]
	})
	return dirs
}

// forEach runs fn(0..n-1), renameParallel at a time, and returns the first
// error; after one, the calls not yet started are skipped.
func forEach(ctx context.Context, n int, fn func(context.Context, int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, renameParallel)
	for i := range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// keepDir stores a marker for prefix if the directory has become empty and
// has none: a directory without a marker exists only through its entries,
// and moving its last entry away must not make it vanish. An existing
// marker is left alone, since it holds the directory's mode, owner and
// times (a sticky directory must stay sticky and keep its owner). The
// check and the write are serialised with the mount's other marker writes
// (setDirMeta, flushDir).
func (f *FS) keepDir(ctx context.Context, prefix string) {
	if prefix == "" {
		return
	}
	empty, err := f.dirEmpty(ctx, prefix)
	if err == nil && empty {
		err = f.putMissingMarker(ctx, prefix)
	}
	if err != nil {
		f.log.Warn("could not keep directory after rename", "object", f.uri(prefix), "cause", err.Error())
	}
}

// putMissingMarker creates prefix's marker, with no attributes (the mount's
// defaults, as the prefix-only directory showed), unless it exists.
func (f *FS) putMissingMarker(ctx context.Context, prefix string) error {
	f.dirs.wmu.Lock()
	defer f.dirs.wmu.Unlock()
	_, err := f.store.Head(ctx, prefix)
	if !isNotFound(err) {
		return err // nil: the marker is there
	}
	_, err = f.store.Put(ctx, prefix, nil, nil)
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	st := f.dirStateLocked(prefix)
	st.gen++
	st.at = time.Time{} // HEAD again for the new marker
	return err
}

// treeLock holds the locks of every loaded file node of a subtree (and of
// their write handles) while it is renamed, so that no upload starts,
// commits or changes its key meanwhile.
//
// Lock order (file.go): every writeHandle.mu first, then each node's
// stageMu. No other code holds two handles' or two nodes' locks at once,
// and the kernel serialises renames of one inode, so taking several here
// cannot deadlock.
type treeLock struct {
	nodes     []*fileNode
	writers   []*writeHandle
	streaming bool // a stream of a new version is in progress
	staged    bool // some node has a staging file
}

// lockTree locks the file nodes at and under the inode ch (nil: none).
func lockTree(ch *fs.Inode) *treeLock {
	lk := &treeLock{}
	var walk func(*fs.Inode)
	walk = func(in *fs.Inode) {
		switch n := in.Operations().(type) {
		case *fileNode:
			lk.nodes = append(lk.nodes, n)
		case *dirNode:
			for _, c := range in.Children() {
				walk(c)
			}
		}
	}
	if ch != nil {
		walk(ch)
	}
	lk.lock()
	return lk
}

// lock takes the locks of lk.nodes and of their write handles.
func (lk *treeLock) lock() {
	for _, n := range lk.nodes {
		n.mu.Lock()
		for w := range n.writers {
			lk.writers = append(lk.writers, w)
		}
		n.mu.Unlock()
	}
	for _, w := range lk.writers {
		w.mu.Lock()
		if w.mode == modeStream && !w.done {
			lk.streaming = true
		}
	}
	for _, n := range lk.nodes {
		n.stageMu.Lock()
		n.mu.Lock()
		if n.stage != nil {
			lk.staged = true
		}
		n.mu.Unlock()
	}
}

func (lk *treeLock) unlock() {
	for _, n := range lk.nodes {
		n.stageMu.Unlock()
	}
	for _, w := range lk.writers {
		w.mu.Unlock()
	}
}

// retarget gives the moved inode ch (whose key was src, now dst: keys of
// files, directories without the slash) and every loaded node below it
// their new keys, and the locked write handles theirs.
func (lk *treeLock) retarget(ch *fs.Inode, src, dst string) {
	var walk func(*fs.Inode)
	walk = func(in *fs.Inode) {
		switch n := in.Operations().(type) {
		case keyedNode:
			if k, ok := renamedKey(n.key(), src, dst); ok {
				n.setKey(k)
			}
		case *dirNode:
			if p, ok := renamedKey(n.prefix(), src, dst); ok {
				n.setPrefix(p)
			}
			for _, c := range in.Children() {
				walk(c)
			}
		}
	}
	walk(ch)
	for _, w := range lk.writers {
		if k, ok := renamedKey(w.key, src, dst); ok {
			w.key = k // w.mu is held
		}
	}
}
