package fusefs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// dirNode is a directory: every key under prefix.
type dirNode struct {
	fs.Inode
	fsys    *FS
	prefixp atomic.Pointer[string] // use prefix(): "" for the root, else "a/b/"; a rename changes it
}

// newDirNode returns the node of the directory prefix ("" or "a/b/").
func newDirNode(f *FS, prefix string) *dirNode {
	d := &dirNode{fsys: f}
	d.setPrefix(prefix)
	return d
}

// prefix is the directory's key prefix: "" for the root, else "a/b/".
func (d *dirNode) prefix() string { return *d.prefixp.Load() }

func (d *dirNode) setPrefix(prefix string) { d.prefixp.Store(&prefix) }

var (
	_ fs.NodeLookuper  = (*dirNode)(nil)
	_ fs.NodeReaddirer = (*dirNode)(nil)
	_ fs.NodeGetattrer = (*dirNode)(nil)
	_ fs.NodeCreater   = (*dirNode)(nil)
	_ fs.NodeMkdirer   = (*dirNode)(nil)
	_ fs.NodeUnlinker  = (*dirNode)(nil)
	_ fs.NodeRmdirer   = (*dirNode)(nil)
	_ fs.NodeStatfser  = (*dirNode)(nil)
	_ fs.NodeSetattrer = (*dirNode)(nil)
	_ fs.NodeFsyncer   = (*dirNode)(nil)
)

// Fsync (fsync(2) and fdatasync(2) of a directory) succeeds once the
// directory's entries are durable. Every create, mkdir, unlink, rmdir and
// rename is done in the store before its call returns, so only the
// directory's own attribute changes may still be pending; a file created in
// it becomes durable at its own commit (its fsync or close), as a file's
// data on a local filesystem needs the file's fsync, not the directory's.
// The pending attribute change is the directory's mtime (dirstate.go).
func (d *dirNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	ctx = mutating(ctx)
	if err := d.fsys.awaitDeletesIn(ctx, d.prefix()); err != nil {
		return d.fsys.logErr("fsync", d.prefix(), err)
	}
	if err := d.fsys.flushDir(ctx, d.prefix()); err != nil {
		return d.fsys.logErr("fsync", d.prefix(), err)
	}
	return 0
}

func (d *dirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx, done := d.fsys.untilKilled(ctx, "getattr", d.prefix())
	defer done()
	if err := d.fsys.dirAttrOf(ctx, d.prefix(), &out.Attr); err != nil {
		return d.fsys.logErr("getattr", d.prefix(), err)
	}
	return 0
}

// Setattr records chmod, chown and utimes of a directory, to be stored in
// its marker (setattr.go: setDirMeta).
func (d *dirNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = mutating(ctx)
	f := d.fsys
	if c := changeFrom(in); !c.empty() {
		if f.opt.ReadOnly {
			return syscall.EROFS
		}
		f.setDirMeta(d.prefix(), c)
	}
	return d.Getattr(ctx, fh, out)
}

// entryKind is what a name in a directory is.
type entryKind int

const (
	entryNone entryKind = iota
	entryFile
	entryDir
)

// probe finds out what key is: a directory (some key under key/), a file,
// or nothing. A name that is both is shown as the directory.
func (f *FS) probe(ctx context.Context, key string) (entryKind, *object, error) {
	if o := f.cachedStat(key); o != nil {
		// Known to be a file within the TTL: no LIST to check for a
		// directory of the same name.
		return entryFile, o, nil
	}
	var (
		wg      sync.WaitGroup
		isDir   bool
		dirErr  error
		obj     *object
		fileErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		dirErr = f.store.List(ctx, key+"/", "/", func(p objectstore.ListPage) error {
			isDir = len(p.Objects) > 0 || len(p.Prefixes) > 0
			return errStop
		})
		if errors.Is(dirErr, errStop) {
			dirErr = nil
		}
	}()
	obj, fileErr = f.head(ctx, key)
	wg.Wait()
	switch {
	case dirErr != nil:
		return entryNone, nil, dirErr
	case isDir:
		return entryDir, nil, nil
	case fileErr == nil:
		return entryFile, obj, nil
	case errors.Is(fileErr, objectstore.ErrNotFound):
		return entryNone, nil, nil
	default:
		return entryNone, nil, fileErr
	}
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, done := d.fsys.untilKilled(ctx, "lookup", childKey(d.prefix(), name))
	defer done()
	f := d.fsys
	if len(name) > f.lookupNameMax(d.prefix()) {
		// No object can have it. A shorter name that is still too long to
		// create (checkName) is refused by create, mkdir, symlink, mknod
		// and rename themselves.
		return nil, syscall.ENAMETOOLONG
	}
	if !validName(name) || metadata.IsInstructionKey(name) {
		return nil, syscall.ENOENT
	}
	key := childKey(d.prefix(), name)
	if f.deleting(key) {
		return nil, syscall.ENOENT // renamed away (lazydelete.go)
	}
	if n := f.pendingNode(key); n != nil {
		n.fillAttr(&out.Attr)
		return d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino(key, false)}), 0
	}
	var (
		k   entryKind
		obj *object
		err error
	)
	lk, ok, began := f.listed(d.prefix(), name)
	if !ok && !f.knownAbsent(key) && f.refreshListing(ctx, d.prefix()) {
		lk, ok, began = f.listed(d.prefix(), name)
	}
	if ok {
		// A fresh listing of this directory answers without a LIST.
		k = lk
		if k == entryFile {
			if obj = f.statSince(key, began); obj == nil {
				obj = f.listedObject(key)
			}
			if obj == nil {
				obj, err = f.head(ctx, key)
			}
			if isNotFound(err) {
				k, err = entryNone, nil
			}
		}
	} else if f.knownAbsent(key) {
		return nil, syscall.ENOENT
	} else if f.knownDir(key + "/") {
		// Its marker was seen (or written) within the TTL: a directory,
		// whatever else the name is (probe shows the directory too).
		k = entryDir
	} else {
		k, obj, err = f.probe(ctx, key)
		if err == nil && k == entryNone {
			f.markAbsent(key)
		}
	}
	if err != nil {
		return nil, f.logErr("lookup", key, err)
	}
	switch k {
	case entryDir:
		if err := f.dirAttrOf(ctx, key+"/", &out.Attr); err != nil {
			return nil, f.logErr("lookup", key+"/", err)
		}
		return d.NewInode(ctx, newDirNode(f, key+"/"), fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino(key, true)}), 0
	case entryFile:
		f.fileAttr(obj, &out.Attr)
		if obj.attrs.Symlink {
			return d.NewInode(ctx, newSymlinkNode(f, key), symlinkStable(key)), 0
		}
		if isSpecial(obj.attrs) {
			return d.NewInode(ctx, newSpecialNode(f, key), specialStable(key, obj.attrs.Mode)), 0
		}
		return linked(d.NewInode(ctx, newFileNode(f, key), fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino(key, false)})), 0
	}
	return nil, syscall.ENOENT
}

// unlinkedChild says whether name's loaded inode is a file just unlinked.
func (d *dirNode) unlinkedChild(name string) bool {
	if ch := d.GetChild(name); ch != nil {
		if n, ok := ch.Operations().(*fileNode); ok {
			return n.unlinked.Load()
		}
	}
	return false
}

// linked marks a file inode, which the kernel may still hold from before an
// unlink (inode numbers come from the key), as having a name again.
func linked(in *fs.Inode) *fs.Inode {
	if n, ok := in.Operations().(*fileNode); ok {
		n.unlinked.Store(false)
	}
	return in
}

func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ctx, done := d.fsys.untilKilled(ctx, "readdir", d.prefix())
	defer done()
	f := d.fsys
	if l, entries, ok := f.cachedEntries(d.prefix()); ok {
		// Listed within the TTL and unchanged through this mount since.
		return f.listingStream(l, f.withPending(d.prefix(), entries)), 0
	}
	l, entries, err := f.listDir(ctx, d.prefix(), true)
	if err != nil {
		return nil, f.logErr("readdir", d.prefix(), err)
	}
	return f.listingStream(l, entries), 0
}

// listDir LISTs prefix and caches the listing (unless the directory changed
// through this mount meanwhile: l is then nil). The cached stats it confirms
// are renewed, those it contradicts dropped; with heads, the files not
// confirmed are HEADed in the background for the lookups that follow.
func (f *FS) listDir(ctx context.Context, prefix string, heads bool) (l *listing, entries []fuse.DirEntry, err error) {
	seen := make(map[string]bool)
	var files []objectstore.Info
	// The HEADs that ls -l's lookups will want start with the first page,
	// not after the last one.
	pf := f.startHeadPrefetch(heads && !f.opt.AttrsFromList)
	gen, began := f.listGen(prefix), time.Now()
	err = f.store.List(ctx, prefix, "/", func(p objectstore.ListPage) error {
		for _, pre := range p.Prefixes {
			name := strings.TrimSuffix(strings.TrimPrefix(pre, prefix), "/")
			if !validName(name) || seen[name] {
				continue
			}
			seen[name] = true
			entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: ino(prefix+name, true)})
		}
		for _, o := range p.Objects {
			name := strings.TrimPrefix(o.Key, prefix)
			if !validName(name) || metadata.IsInstructionKey(name) || f.deleting(o.Key) {
				continue // the "dir/" marker itself, odd keys, instruction files, old names of renames
			}
			files = append(files, o)
			pf.add(o)
		}
		return nil
	})
	if err != nil {
		pf.finish(func() {})
		return nil, nil, err
	}
	for _, o := range files {
		name := strings.TrimPrefix(o.Key, prefix)
		if seen[name] {
			continue // a directory of the same name wins
		}
		seen[name] = true
		if c := f.cachedStat(o.Key); c != nil && c.attrs.Symlink {
			entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFLNK, Ino: symlinkIno(o.Key)})
			continue
		} else if c != nil && isSpecial(c.attrs) {
			st := specialStable(o.Key, c.attrs.Mode)
			entries = append(entries, fuse.DirEntry{Name: name, Mode: st.Mode, Ino: st.Ino})
			continue
		}
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: ino(o.Key, false)})
	}
	// Files being written are part of what this listing stands for: if
	// one is committed while the listing is cached, it is still there.
	entries = f.withPending(prefix, entries)
	kinds := make(map[string]entryKind, len(entries))
	for _, e := range entries {
		if e.Mode == syscall.S_IFDIR {
			kinds[e.Name] = entryDir
		} else {
			kinds[e.Name] = entryFile
		}
	}
	l, done := f.putListing(prefix, gen, began, kinds, entries)
	if l != nil && f.opt.AttrsFromList {
		infos := make(map[string]objectstore.Info, len(files))
		for _, o := range files {
			infos[strings.TrimPrefix(o.Key, prefix)] = o
		}
		f.setListedInfos(l, infos)
	}
	pf.finish(done)
	return l, entries, nil
}

// withPending adds the files being written under prefix, which no listing
// shows yet, to a copy of entries.
func (f *FS) withPending(prefix string, entries []fuse.DirEntry) []fuse.DirEntry {
	out := slices.Clone(entries)
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		seen[e.Name] = true
	}
	for _, key := range f.pendingUnder(prefix) {
		if name := strings.TrimPrefix(key, prefix); !seen[name] {
			out = append(out, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: ino(key, false)})
		}
	}
	return out
}

// headPrefetch resolves listed files in the background, a few at a time and
// in listing order, so that the lookups that follow a readdir (ls -l) find
// them in the stat cache. Files are added page by page while the LIST goes
// on.
type headPrefetch struct {
	f      *FS
	heads  bool // false: only renew or drop cached stats
	mu     sync.Mutex
	queue  []string
	closed bool
	wake   chan struct{}
	done   func() // called once every HEAD has finished
}

// headPrefetchConc is how many read-ahead HEADs run at once.
const headPrefetchConc = 32

func (f *FS) startHeadPrefetch(heads bool) *headPrefetch {
	p := &headPrefetch{f: f, heads: heads, wake: make(chan struct{}, 1)}
	go p.run()
	return p
}

// add queues o unless a stat cached earlier is still valid: a fresh LIST
// renews what it confirms, and drops what it contradicts (the object
// changed), even if not yet expired.
func (p *headPrefetch) add(o objectstore.Info) {
	if p.f.revalidate(o) {
		return
	}
	p.f.putStat(o.Key, nil)
	if !p.heads {
		return
	}
	p.mu.Lock()
	p.queue = append(p.queue, o.Key)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// finish says no more files will be added; done runs when the HEADs have.
func (p *headPrefetch) finish(done func()) {
	p.mu.Lock()
	p.closed, p.done = true, done
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *headPrefetch) run() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sem := make(chan struct{}, headPrefetchConc)
	var wg sync.WaitGroup
	for {
		p.mu.Lock()
		batch, closed, done := p.queue, p.closed, p.done
		p.queue = nil
		p.mu.Unlock()
		for _, key := range batch {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				_, _ = p.f.head(ctx, key) // errors surface on the real lookup
			}()
		}
		if closed && len(batch) == 0 {
			wg.Wait()
			done()
			return
		}
		if len(batch) == 0 {
			<-p.wake
		}
	}
}

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ctx = mutating(ctx)
	f := d.fsys
	if f.opt.ReadOnly {
		return nil, nil, 0, syscall.EROFS
	}
	if !validName(name) || metadata.IsInstructionKey(name) {
		return nil, nil, 0, syscall.EINVAL
	}
	if err := f.checkName(d.prefix(), name); err != nil {
		return nil, nil, 0, f.logErr("create", d.prefix()+name, err)
	}
	key := childKey(d.prefix(), name)
	if err := f.beforeUse(ctx, key); err != nil {
		return nil, nil, 0, f.logErr("create", key, err)
	}
	n := newFileNode(f, key)
	w, err := f.newWriter(ctx, n, f.withCreator(ctx, fileAttrs(mode)), true, flags&syscall.O_ACCMODE == syscall.O_RDWR)
	if err != nil {
		f.dirChanged(d.prefix())
		return nil, nil, 0, f.logErr("create", key, err)
	}
	// The lookups of a create loop keep being answered by the listing.
	f.listingAdd(d.prefix(), fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: ino(key, false)}, entryFile)
	f.touchDir(d.prefix())
	n.fillAttr(&out.Attr)
	ch := linked(d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino(key, false)}))
	return ch, w, f.openFlags(), 0
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx = mutating(ctx)
	f := d.fsys
	if f.opt.ReadOnly {
		return nil, syscall.EROFS
	}
	if !validName(name) {
		return nil, syscall.EINVAL
	}
	if err := f.checkName(d.prefix(), name); err != nil {
		return nil, f.logErr("mkdir", d.prefix()+name, err)
	}
	key := childKey(d.prefix(), name)
	if f.pendingNode(key) != nil {
		return nil, syscall.EEXIST
	}
	if err := f.beforeUse(ctx, key); err != nil {
		return nil, f.logErr("mkdir", key, err)
	}
	// The kernel's LOOKUP just before found nothing (knownAbsent), or the
	// directory's fresh listing has no such name: then no key is at or
	// under key/ as far as the TTL lets this mount know, and mkdir needs
	// no HEAD and LIST of its own (tar x and rsync make trees of them).
	absent := f.knownAbsent(key)
	if !absent {
		lk, ok, _ := f.listed(d.prefix(), name)
		absent = ok && lk == entryNone
	}
	if !absent {
		if k, _, err := f.probe(ctx, key); err != nil {
			return nil, f.logErr("mkdir", key, err)
		} else if k != entryNone {
			return nil, syscall.EEXIST
		}
	}
	now := time.Now()
	meta := map[string]string{}
	f.withCreator(ctx, newDirAttrs(mode, now)).Apply(meta)
	info, err := f.store.Put(ctx, key+"/", nil, meta)
	if err != nil {
		f.dirChanged(d.prefix())
		return nil, f.logErr("mkdir", key+"/", err)
	}
	// Nothing is under key/ (above): the new directory is empty.
	f.putEmptyListing(key + "/")
	f.listingAdd(d.prefix(), fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: ino(key, true)}, entryDir)
	f.dirs.mu.Lock()
	*f.dirStateLocked(key + "/") = dirState{attrs: metadata.ParseAttrs(meta), marker: true, upload: info.LastModified, at: now}
	st := *f.dirStateLocked(key + "/")
	f.dirs.mu.Unlock()
	f.touchDir(d.prefix())
	f.fillDirAttr(&out.Attr, st)
	return d.NewInode(ctx, newDirNode(f, key+"/"), fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino(key, true)}), 0
}

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx = mutating(ctx)
	f := d.fsys
	if f.opt.ReadOnly {
		return syscall.EROFS
	}
	key := childKey(d.prefix(), name)
	if err := f.beforeUse(ctx, key); err != nil {
		return f.logErr("unlink", key, err)
	}
	if n := f.pendingNode(key); n != nil {
		// Being written, not yet committed: the name goes now, and the
		// upload is not committed at close (write.go finishStream).
		n.unlinked.Store(true)
		f.setPending(key, n, false)
	}
	o, err := f.head(ctx, key)
	if isNotFound(err) && d.unlinkedChild(name) {
		f.listingRemove(d.prefix(), name)
		f.touchDir(d.prefix())
		return 0 // a new file that existed only as its open upload
	}
	if err != nil {
		f.dirChanged(d.prefix())
		return f.logErr("unlink", key, err)
	}
	f.takeLazyAttrs(key) // the file goes: its deferred attributes too
	if err := f.store.Delete(ctx, key); err != nil {
		f.dirChanged(d.prefix())
		return f.logErr("unlink", key, err)
	}
	f.putStat(key, nil)
	f.listingRemove(d.prefix(), name)
	f.touchDir(d.prefix())
	if ch := d.GetChild(name); ch != nil {
		if n, ok := ch.Operations().(*fileNode); ok {
			n.unlinked.Store(true) // fstat of an open descriptor shows nlink 0
		}
	}
	if o.instr || o.kind == kindPlain {
		// An instruction file may exist beside the object; remove it too,
		// or a later object of the same name would inherit it.
		if err := f.store.Delete(ctx, metadata.InstructionKey(key)); err != nil {
			f.log.Warn("could not delete instruction file", "object", f.uri(key), "cause", err.Error())
		}
	}
	return 0
}

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx = mutating(ctx)
	d.fsys.dirChanged(d.prefix(), d.prefix()+name+"/")
	defer d.fsys.dirChanged(d.prefix(), d.prefix()+name+"/")
	f := d.fsys
	if f.opt.ReadOnly {
		return syscall.EROFS
	}
	key := childKey(d.prefix(), name) + "/"
	empty, err := f.dirEmpty(ctx, key)
	if err != nil {
		return f.logErr("rmdir", key, err)
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	// A flush of the directory's deferred attributes in flight would
	// otherwise put the marker back (a directory without one gets one).
	fl := f.flushLock(key)
	fl.Lock()
	err = f.store.Delete(ctx, key)
	if err == nil {
		f.forgetDir(key)
	}
	fl.Unlock()
	if err != nil {
		return f.logErr("rmdir", key, err)
	}
	f.touchDir(d.prefix())
	return 0
}

// dirEmpty reports whether nothing but prefix's own marker lies under it.
func (f *FS) dirEmpty(ctx context.Context, prefix string) (bool, error) {
	if err := f.awaitDeletesUnder(ctx, prefix); err != nil {
		return false, err
	}
	empty := true
	err := f.store.List(ctx, prefix, "/", func(p objectstore.ListPage) error {
		for _, o := range p.Objects {
			if o.Key != prefix {
				empty = false
			}
		}
		if len(p.Prefixes) > 0 {
			empty = false
		}
		if !empty {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	return empty, nil
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	// Object stores have no fixed capacity; report a large, stable figure so
	// that tools which check free space proceed.
	const blocks = 1 << 40 / 4096 * 1024 // 1 PiB in 4 KiB blocks
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = blocks
	out.Bfree = blocks
	out.Bavail = blocks
	out.Files = 1 << 30
	out.Ffree = 1 << 30
	out.NameLen = uint32(d.fsys.nameMax(d.prefix()))
	return 0
}
