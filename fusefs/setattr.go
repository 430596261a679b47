package fusefs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// Persisted attributes.
//
// chmod, chown and utimes on a file are stored in the object's user metadata
// (csefs-mode, csefs-uid/csefs-gid, csefs-mtime; see metadata/attrs.go) by a
// server-side copy of the object onto itself with the metadata replaced: the
// current metadata from a fresh HEAD, with only those keys changed, so the
// envelope keys are kept byte for byte. An mtime that was implicit (the
// upload time) is stored explicitly by the first such copy, so chmod and
// chown do not move it. atime is not stored. getattr shows
// them (uid/gid when present, else the mount's --uid/--gid; mtime when
// present, else the object's LastModified). chown is accepted from anyone
// and only recorded: csefs enforces no ownership.
//
// While the file has a write in progress the change rides on the upload
// instead: a staged version carries it in its attributes; a new version
// streaming up right now has its metadata fixed already, so the change is
// kept in FS.pendAttrs and handed to the deferred changes (lazyattr.go) by
// deferPendingAttrs once the stream commits.
//
// A directory keeps them in its marker object (setDirMeta; dirstate.go
// tells how), a symlink or special file in its object, as a file does
// (setMetaOnly).
//
// Rendering them for getattr, lookup and readdir is attr.go's.

// attrChange is what one SETATTR asks to change.
type attrChange struct {
	perm     uint32 // permission bits
	setMode  bool
	uid, gid uint32
	setUID   bool
	setGID   bool
	mtime    time.Time
	setMtime bool
	atime    time.Time
	setAtime bool
	ctime    time.Time // when the change was asked for: the new ctime
	setCtime bool
}

func changeFrom(in *fuse.SetAttrIn) attrChange {
	var c attrChange
	c.perm, c.setMode = in.GetMode()
	c.uid, c.setUID = in.GetUID()
	c.gid, c.setGID = in.GetGID()
	c.mtime, c.setMtime = in.GetMTime()
	c.atime, c.setAtime = in.GetATime()
	if !c.empty() {
		c.ctime, c.setCtime = time.Now(), true
	}
	return c
}

func (c attrChange) empty() bool {
	return !c.setMode && !c.setUID && !c.setGID && !c.setMtime && !c.setAtime
}

// then is c followed by a later change d.
func (c attrChange) then(d attrChange) attrChange {
	if d.setMode {
		c.perm, c.setMode = d.perm, true
	}
	if d.setUID {
		c.uid, c.setUID = d.uid, true
	}
	if d.setGID {
		c.gid, c.setGID = d.gid, true
	}
	if d.setMtime {
		c.mtime, c.setMtime = d.mtime, true
	}
	if d.setAtime {
		c.atime, c.setAtime = d.atime, true
	}
	if d.setCtime {
		c.ctime, c.setCtime = d.ctime, true
	}
	return c
}

// apply returns a with c made. A file without a stored mode gets type
// S_IFREG; an owner half given takes the other half from a, else from the
// mount's defaults uid and gid.
func (c attrChange) apply(a metadata.Attrs, uid, gid uint32) metadata.Attrs {
	if c.setMode {
		typ := a.Mode &^ 0o7777
		if !a.HasMode || typ == 0 {
			typ = syscall.S_IFREG
		}
		a.Mode, a.HasMode = typ|c.perm&0o7777, true
	}
	if c.setUID || c.setGID {
		if a.HasOwner {
			uid, gid = a.UID, a.GID
		}
		if c.setUID {
			uid = c.uid
		}
		if c.setGID {
			gid = c.gid
		}
		a.UID, a.GID, a.HasOwner = uid, gid, true
	}
	if c.setMtime {
		a.Mtime, a.HasMtime = c.mtime, true
	}
	if c.setAtime {
		a.Atime, a.HasAtime = c.atime, true
	}
	if c.setCtime {
		a.Ctime, a.HasCtime = c.ctime, true
	}
	return a
}

// withoutMtime is c for the attributes a later new version starts from: a
// write after utimes gives the file the write's time.
func (c attrChange) withoutMtime() attrChange {
	c.setMtime = false
	return c
}

func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = mutating(ctx)
	f := n.fsys
	if f.opt.ReadOnly {
		return syscall.EROFS
	}
	if size, ok := in.GetSize(); ok {
		if int64(size) > f.maxFileSize() || int64(size) < 0 {
			return f.logErr("truncate", n.key(), fmt.Errorf("truncate to %d: %w", size, errFileTooBig))
		}
		if err := n.setSize(ctx, fh, int64(size)); err != nil {
			return f.logErr("truncate", n.key(), err)
		}
	}
	if err := n.setMeta(ctx, in); err != nil {
		return f.logErr("setattr", n.key(), err)
	}
	return n.Getattr(ctx, fh, out)
}

// setSize truncates. Through a handle open for writing, the handle decides;
// otherwise the object is replaced (empty, or staged and re-uploaded).
func (n *fileNode) setSize(ctx context.Context, fh fs.FileHandle, size int64) error {
	f := n.fsys
	w, _ := fh.(*writeHandle)
	if w == nil {
		n.mu.Lock()
		var open []*writeHandle
		for h := range n.writers {
			open = append(open, h)
		}
		n.mu.Unlock()
		// A handle whose stream was committed by close(2) stays registered
		// until its RELEASE, which comes later: truncate(2) right after
		// close must not go to it.
		for _, h := range open {
			if !h.finished() {
				w = h
				break
			}
		}
	}
	if w != nil {
		return w.truncate(ctx, size)
	}
	if err := f.flushAttrs(ctx, n.key()); err != nil {
		return err
	}
	o, err := f.head(ctx, n.key())
	if err != nil {
		return err
	}
	if size == o.plainSize {
		return nil
	}
	nw, err := f.newWriter(ctx, n, n.currentAttrs(ctx), size == 0, false)
	if err != nil {
		return err
	}
	defer nw.Release(ctx)
	if size != 0 {
		if err := nw.truncate(ctx, size); err != nil {
			return err
		}
	}
	if errno := nw.Flush(ctx); errno != 0 {
		return errno
	}
	return nil
}

// setMeta applies chmod, chown and utimes (see above).
func (n *fileNode) setMeta(ctx context.Context, in *fuse.SetAttrIn) error {
	c := changeFrom(in)
	if c.empty() {
		return nil
	}
	f := n.fsys
	lk := lockNode(n)
	defer lk.unlock()
	// Handles that may start a new version later start from the new
	// attributes.
	for _, w := range lk.writers {
		w.attrs = c.withoutMtime().apply(w.attrs, f.opt.UID, f.opt.GID) // w.mu is held
	}
	if lk.streaming {
		f.addPendingAttrs(n, c)
		return nil
	}
	// A change deferred earlier (lazyattr.go) is older than c. Unless c is
	// deferred after it, store it first: otherwise its timer would later
	// put it back over c, stored now or carried by the staged upload.
	n.mu.Lock()
	hasStage := n.stage != nil
	n.mu.Unlock()
	active := false
	for _, w := range lk.writers {
		if !w.closed && !(w.mode == modeStream && w.done) { // w.mu is held
			active = true
		}
	}
	if hasStage || active || time.Since(time.Unix(0, n.lastCommit.Load())) > deferAfterCommit {
		if err := f.flushAttrs(ctx, n.key()); err != nil {
			return err
		}
	}
	n.mu.Lock()
	staged, dirty := n.stage != nil, n.stageDirty
	if staged {
		n.stageAttrs = c.apply(n.stageAttrs, f.opt.UID, f.opt.GID)
	}
	n.mu.Unlock()
	if dirty {
		return nil // the staged upload carries it
	}
	// Right after close(2) the handle stays registered until its RELEASE:
	// a handle whose stream is committed writes nothing more unless it
	// writes again, and then it starts from w.attrs, set above.
	for _, w := range lk.writers {
		if !w.closed && !(w.mode == modeStream && w.done) { // w.mu is held
			staged = true
		}
	}
	if staged || time.Since(time.Unix(0, n.lastCommit.Load())) > deferAfterCommit {
		return f.persistAttrs(ctx, n.key(), c)
	}
	f.deferAttrs(n.key(), c) // lazyattr.go
	return nil
}

// lockNode locks n and its write handles as lockTree does.
func lockNode(n *fileNode) *treeLock {
	lk := &treeLock{nodes: []*fileNode{n}}
	lk.lock()
	return lk
}

// setMetaOnly applies c to such a node: a size is EINVAL (there is no
// content to truncate), the rest is persisted like a file's (persistAttrs).
func (f *FS) setMetaOnly(ctx context.Context, key string, in *fuse.SetAttrIn, c attrChange, out *fuse.AttrOut) syscall.Errno {
	ctx = mutating(ctx)
	if f.opt.ReadOnly {
		return syscall.EROFS
	}
	if _, ok := in.GetSize(); ok {
		return syscall.EINVAL
	}
	if !c.empty() {
		if err := f.persistAttrs(ctx, key, c); err != nil {
			return f.logErr("setattr", key, err)
		}
	}
	return f.headAttr(ctx, key, out)
}

// attrCopyAttempts bounds persistAttrs' read-and-copy rounds: each round
// that loses to a concurrent writer (412) reads the object again.
const attrCopyAttempts = 5

// persistAttrs copies key onto itself with c applied to its metadata.
//
// The copy carries the ETag of the HEAD its metadata came from
// (CopySourceIfMatch), so it can never pair this version's envelope with the
// body of a newer one written meanwhile (by another mount or process). When
// the object changed between the HEAD and the copy (412), it is read again
// and the change applied to the new version, up to attrCopyAttempts times;
// then it fails with ErrPreconditionFailed, which is ESTALE (the kernel
// retries a path operation once on ESTALE).
func (f *FS) persistAttrs(ctx context.Context, key string, c attrChange) error {
	defer f.putStat(key, nil)
	var err error
	for attempt := 0; attempt < attrCopyAttempts; attempt++ {
		err = f.copyAttrs(ctx, key, c, attempt == 0)
		if !errors.Is(err, objectstore.ErrPreconditionFailed) {
			return err
		}
		f.log.Debug("object changed under a metadata copy; reading it again", "object", f.uri(key), "attempt", attempt+1)
	}
	return fmt.Errorf("metadata copy lost to concurrent writers %d times: %w", attrCopyAttempts, err)
}

// copyAttrs is one round of persistAttrs. The first round starts from the
// version this mount knows (it wrote or stat'ed it within the TTL), if it
// knows its metadata; the copy is pinned to that version's ETag, so if the
// object changed since, the copy fails (412) and the next round HEADs.
func (f *FS) copyAttrs(ctx context.Context, key string, c attrChange, first bool) error {
	var info *objectstore.Info
	if o := f.cachedStat(key); first && o != nil && o.info.Metadata != nil && o.info.ETag != "" {
		info = &o.info
	} else {
		var err error
		if info, err = f.store.Head(ctx, key); err != nil {
			return err
		}
	}
	meta := maps.Clone(info.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	c.apply(keepMtime(metadata.ParseAttrs(meta), info.LastModified), f.opt.UID, f.opt.GID).Apply(meta)
	if err := metadata.CheckSize(meta); err != nil {
		return fmt.Errorf("attributes do not fit beside the envelope: %w: %w", err, errUnsupported)
	}
	_, err := f.store.Copy(ctx, key, key, objectstore.CopyOptions{Metadata: meta, IfMatch: info.ETag, Source: info})
	return err
}

// keepMtime stores an implicit mtime (the upload time, which the self-copy
// of persistAttrs would change) explicitly: chmod and chown change only the
// ctime.
func keepMtime(a metadata.Attrs, uploaded time.Time) metadata.Attrs {
	if !a.HasMtime && !uploaded.IsZero() {
		a.Mtime, a.HasMtime = uploaded.Truncate(time.Second), true // as fileAttr shows it
	}
	return a
}

// setDirMeta applies chmod, chown and utimes to a directory. They show in
// this mount at once and are stored with its changed mtime by flushDir
// (dirstate.go), dirFlushDelay later, at fsync(2) of the directory, before
// a rename of it, and at unmount: tar x and rsync -a change each directory
// they make three times at the end, and storing each change at once cost
// a HEAD and a copy of the marker, one after the other, on the caller's
// path. POSIX asks no durability of attributes before fsync. The root keeps
// them in memory.
func (f *FS) setDirMeta(prefix string, c attrChange) {
	f.dirs.mu.Lock()
	defer f.dirs.mu.Unlock()
	st := f.dirStateLocked(prefix)
	if prefix == "" {
		st.attrs = c.apply(dirAttrsOr(st.attrs, f.opt.DirMode), f.opt.UID, f.opt.GID)
		if c.setMtime {
			st.mtime = time.Time{}
		}
		return
	}
	if st.hasChange {
		c = st.change.then(c)
	}
	st.change, st.hasChange = c, true
	if c.setMtime {
		// The change sets the mtime: an earlier change inside the
		// directory no longer shows, nor is stored. (A later one will,
		// over c's: flushDir applies c first.)
		st.mtime, st.dirty = time.Time{}, false
	}
	if !st.pending {
		f.scheduleDirFlushLocked(prefix, st, 0)
	}
}

// dirAttrsOr gives a directory without a stored mode the mount's, and a
// stored mode the directory type.
func dirAttrsOr(a metadata.Attrs, mode uint32) metadata.Attrs {
	switch {
	case !a.HasMode:
		a.Mode = syscall.S_IFDIR | mode
	case a.Mode&syscall.S_IFMT != syscall.S_IFDIR:
		a.Mode = syscall.S_IFDIR | a.Mode&0o7777
	}
	a.HasMode = true
	return a
}

// addPendingAttrs records c for the stream of n in progress.
func (f *FS) addPendingAttrs(n *fileNode, c attrChange) {
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	if f.pendAttrs == nil {
		f.pendAttrs = make(map[*fileNode]attrChange)
	}
	f.pendAttrs[n] = f.pendAttrs[n].then(c)
}

// deferPendingAttrs hands the attribute changes made while a new version
// of n was streaming up to the deferred ones (lazyattr.go), to be stored
// with whatever follows them. The write path calls it right after that
// stream's commit succeeded (without pending changes it does nothing).
func (n *fileNode) deferPendingAttrs() {
	f := n.fsys
	f.attrMu.Lock()
	defer f.attrMu.Unlock()
	c, ok := f.pendAttrs[n]
	delete(f.pendAttrs, n)
	if ok {
		f.deferAttrsLocked(n.key(), c)
	}
}

// stagePendingAttrs moves the attribute changes recorded for n's stream,
// which was aborted for staging, onto the staged version. The node's
// staging file is held.
func (n *fileNode) stagePendingAttrs() {
	f := n.fsys
	f.attrMu.Lock()
	c, ok := f.pendAttrs[n]
	delete(f.pendAttrs, n)
	f.attrMu.Unlock()
	if !ok {
		return
	}
	n.mu.Lock()
	n.stageAttrs = c.apply(n.stageAttrs, f.opt.UID, f.opt.GID)
	n.mu.Unlock()
}

// withCreator records the calling process as the owner of a new file,
// directory or special file, as POSIX has it (the creator's uid and gid),
// when that differs from the mount's --uid and --gid; otherwise nothing is
// stored and the defaults show.
func (f *FS) withCreator(ctx context.Context, a metadata.Attrs) metadata.Attrs {
	c, ok := fuse.FromContext(ctx)
	if !ok || (c.Uid == f.opt.UID && c.Gid == f.opt.GID) {
		return a
	}
	a.UID, a.GID, a.HasOwner = c.Uid, c.Gid, true
	return a
}
