package objectstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	localTmpDir      = ".csefs-tmp"       // under root: temp files of writes in progress
	sidecarSuffix    = ".csefs-meta.json" // sidecar of "name" is ".name.csefs-meta.json"
	defaultLocalPage = 1000
	emptyMD5         = "d41d8cd98f00b204e9800998ecf8427e"
)

// LocalStore is a Store on a local directory (the embedded default, bucket
// "file:///ABS/DIR").
//
// Layout:
//   - The object "a/b" is the file ROOT/a/b, holding exactly the body.
//   - Its Info lives in a sidecar, ROOT/a/.b.csefs-meta.json (JSON: ETag,
//     size, user metadata, and the inode of the data file it describes).
//     Sidecars are never listed; keys whose segments look like one
//     (".*.csefs-meta.json"), and the top-level ".csefs-tmp", are
//     ErrInvalidKey. The sidecar of a name over 238 bytes, which would pass
//     NAME_MAX, is ".HASH.long.csefs-meta.json" (hex SHA-256 of the name).
//   - A "dir/" marker key is the directory ROOT/dir (its body must be empty),
//     with its metadata in the sidecar beside it. A directory counts as a
//     marker object when it has a sidecar or is empty, so an empty directory
//     lists as the common prefix "dir/" (or, without a delimiter, as the
//     object "dir/"). Deleting a marker removes its sidecar and the
//     directory if empty; Delete never prunes anything else.
//   - A file and a directory cannot share a path: writing "a/b" while "a" is
//     an object, or "a" while "a/" has children, fails with ErrKeyConflict.
//   - Keys must be valid paths: no empty, "." or ".." segments, no NUL;
//     anything else is ErrInvalidKey.
//   - A file under ROOT without a sidecar (copied in by hand) is an object
//     with no metadata and a synthetic ETag derived from inode, size and mtime.
//
// ETags are the quoted hex MD5 of the body, as S3 gives for single-part
// uploads: they change whenever the body does.
//
// Writes are atomic and durable: the body goes to a temp file in
// ROOT/.csefs-tmp, is fsynced, the new sidecar (fsynced) is renamed into
// place, then the body, then the directory is fsynced. The sidecar keeps the
// entries of both the new and the previous data file, matched by inode, so a
// reader (which matches the file it opened by inode) never pairs a body with
// the wrong metadata, even in the instant between the two renames or after a
// crash between them. Writers of one key are serialised within the process;
// two processes writing the same key at the same moment may leave the
// newest body with a sidecar lacking its entry (reads then fail loudly
// rather than return wrong metadata). Temp files of writes interrupted by a
// crash stay in ROOT/.csefs-tmp. ROOT must be one filesystem (rename).
type LocalStore struct {
	root string
	tmp  string

	locks [64]sync.Mutex // striped by path: serialises writers of one key

	pageSize int
	// writeHook, when set (tests), is called before each Writer.Write with
	// the bytes written so far; an error fails the write.
	writeHook func(written int64) error
}

var _ Store = (*LocalStore)(nil)

// NewLocal returns a store on the existing directory root, creating
// root/.csefs-tmp.
func NewLocal(root string) (*LocalStore, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("objectstore: local root: %w", err)
	}
	s := &LocalStore{root: root, tmp: filepath.Join(root, localTmpDir), pageSize: defaultLocalPage}
	if err := s.Check(context.Background()); err != nil {
		return nil, err
	}
	if err := os.Mkdir(s.tmp, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("objectstore: local root: %w", err)
	}
	return s, nil
}

// Check implements Store: root must exist and be a directory.
func (s *LocalStore) Check(ctx context.Context) error {
	fi, err := os.Stat(s.root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("objectstore: local root %q: %w: %w", s.root, ErrNoSuchBucket, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("objectstore: local root %q: %w: %w", s.root, ErrAccessDenied, err)
	case err != nil:
		return fmt.Errorf("objectstore: local root %q: %w", s.root, err)
	case !fi.IsDir():
		return fmt.Errorf("objectstore: local root %q is not a directory: %w", s.root, ErrNoSuchBucket)
	}
	return nil
}

// sidecarEntry describes one version of an object's body.
type sidecarEntry struct {
	Ino      uint64            `json:"ino"`
	Size     int64             `json:"size"`
	ETag     string            `json:"etag"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type sidecar struct {
	Versions []sidecarEntry `json:"versions"` // newest first, at most 2
}

func isSidecarName(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, sidecarSuffix)
}

// sidecarPath is the sidecar of the data file p: ".NAME.csefs-meta.json",
// or, where that would pass NAME_MAX (a NAME over 238 bytes),
// ".HASH.long.csefs-meta.json" with HASH the hex SHA-256 of NAME, so that
// every name the host can hold can be an object.
func sidecarPath(p string) string {
	dir, name := filepath.Split(p)
	if len(name)+1+len(sidecarSuffix) > 255 {
		sum := sha256.Sum256([]byte(name))
		return filepath.Join(dir, "."+hex.EncodeToString(sum[:])+".long"+sidecarSuffix)
	}
	return filepath.Join(dir, "."+name+sidecarSuffix)
}

// path maps a key to its file path; marker reports a "dir/" key.
func (s *LocalStore) path(key string) (p string, marker bool, err error) {
	marker = strings.HasSuffix(key, "/")
	k := strings.TrimSuffix(key, "/")
	if k == "" {
		return "", false, fmt.Errorf("objectstore: local key %q: %w", key, ErrInvalidKey)
	}
	for i, seg := range strings.Split(k, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.IndexByte(seg, 0) >= 0 ||
			isSidecarName(seg) || (i == 0 && seg == localTmpDir) {
			return "", false, fmt.Errorf("objectstore: local key %q: %w", key, ErrInvalidKey)
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(k)), marker, nil
}

func (s *LocalStore) lock(p string) *sync.Mutex { return &s.locks[s.stripe(p)] }

func (s *LocalStore) stripe(p string) int {
	h := fnv.New32a()
	h.Write([]byte(p))
	return int(h.Sum32() % uint32(len(s.locks)))
}

// lockPaths takes the writers' locks of p and q ("" for none), in stripe
// order so that two callers never deadlock, and returns their release.
func (s *LocalStore) lockPaths(p, q string) (unlock func()) {
	i := s.stripe(p)
	if q == "" || s.stripe(q) == i {
		s.locks[i].Lock()
		return s.locks[i].Unlock
	}
	j := s.stripe(q)
	if j < i {
		i, j = j, i
	}
	a, b := &s.locks[i], &s.locks[j]
	a.Lock()
	b.Lock()
	return func() { b.Unlock(); a.Unlock() }
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

func readSidecar(p string) (*sidecar, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var sc sidecar
	if err := json.Unmarshal(b, &sc); err != nil {
		return nil, fmt.Errorf("objectstore: local sidecar %q: %w", p, err)
	}
	return &sc, nil
}

func (sc *sidecar) find(ino uint64, size int64) *sidecarEntry {
	if sc == nil {
		return nil
	}
	for i := range sc.Versions {
		if e := &sc.Versions[i]; e.Ino == ino && e.Size == size {
			return e
		}
	}
	return nil
}

func quote(etag string) string { return `"` + etag + `"` }

// infoFor builds the Info of the data file fi at p, from its sidecar. ok is
// false when the sidecar exists but has no entry for fi (a racing writer in
// another process, or a crash mid-write).
func infoFor(key, p string, fi fs.FileInfo) (info *Info, ok bool, err error) {
	info = &Info{Key: key, Size: fi.Size(), LastModified: fi.ModTime(), Metadata: map[string]string{}}
	if fi.IsDir() {
		info.Size = 0
	}
	sc, err := readSidecar(sidecarPath(p))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if fi.IsDir() {
			info.ETag = quote(emptyMD5)
		} else {
			info.ETag = fmt.Sprintf(`"local-%x-%x-%x"`, inode(fi), fi.Size(), fi.ModTime().UnixNano())
		}
		return info, true, nil
	case err != nil:
		return nil, false, err
	}
	e := sc.find(inode(fi), info.Size)
	if e == nil {
		return nil, false, nil
	}
	info.ETag = e.ETag
	for k, v := range e.Metadata {
		info.Metadata[k] = v
	}
	return info, true, nil
}

// open opens key's body (nil for a marker) with a matching Info.
func (s *LocalStore) open(key string) (*os.File, *Info, error) {
	p, marker, err := s.path(key)
	if err != nil {
		return nil, nil, err
	}
	notFound := fmt.Errorf("objectstore: local %q: %w", key, ErrNotFound)
	if marker {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			return nil, nil, notFound
		}
		if _, err := os.Stat(sidecarPath(p)); errors.Is(err, fs.ErrNotExist) {
			if empty, _ := isEmptyDir(p); !empty {
				return nil, nil, notFound // only an implicit prefix
			}
		}
		info, ok, err := infoFor(key, p, fi)
		if err != nil {
			return nil, nil, err
		}
		if !ok { // marker sidecars have one entry, rewritten in place
			info = &Info{Key: key, ETag: quote(emptyMD5), LastModified: fi.ModTime(), Metadata: map[string]string{}}
		}
		return nil, info, nil
	}
	for attempt := 0; ; attempt++ {
		f, err := os.Open(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil, nil, notFound
			}
			return nil, nil, fmt.Errorf("objectstore: local %q: %w", key, err)
		}
		fi, err := f.Stat()
		if err == nil && fi.IsDir() {
			f.Close()
			return nil, nil, notFound
		}
		var info *Info
		ok := false
		if err == nil {
			info, ok, err = infoFor(key, p, fi)
		}
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("objectstore: local %q: %w", key, err)
		}
		if ok {
			return f, info, nil
		}
		f.Close()
		if attempt == 0 {
			// Only a writer of another process can be between its
			// renames; wait out this process's writers and look again.
			mu := s.lock(p)
			mu.Lock()
			//lint:ignore SA2001 a barrier: waits out the writers holding mu
			mu.Unlock()
			continue
		}
		return nil, nil, fmt.Errorf("objectstore: local %q: sidecar does not describe the data file (concurrent writer in another process?)", key)
	}
}

func isEmptyDir(p string) (bool, error) {
	d, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return len(names) == 0, err
}

// Head implements Store.
func (s *LocalStore) Head(ctx context.Context, key string) (*Info, error) {
	f, info, err := s.open(key)
	if f != nil {
		f.Close()
	}
	return info, err
}

type sectionReadCloser struct {
	io.Reader
	io.Closer
}

// Get implements Store, with the range rules of S3Store.Get.
func (s *LocalStore) Get(ctx context.Context, key string, opt GetOptions) (io.ReadCloser, *Info, error) {
	if opt.Offset < 0 || opt.Length < -1 {
		return nil, nil, fmt.Errorf("objectstore: get %q: offset %d length %d: %w", key, opt.Offset, opt.Length, ErrInvalidRange)
	}
	f, info, err := s.open(key)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (io.ReadCloser, *Info, error) {
		if f != nil {
			f.Close()
		}
		return nil, nil, err
	}
	if opt.IfMatch != "" && !etagEqual(opt.IfMatch, info.ETag) {
		return fail(fmt.Errorf("objectstore: get %q: %w", key, ErrPreconditionFailed))
	}
	if opt.Offset > info.Size || (opt.Offset == info.Size && info.Size > 0) {
		return fail(fmt.Errorf("objectstore: get %q: offset %d of %d: %w", key, opt.Offset, info.Size, ErrInvalidRange))
	}
	if f == nil {
		return io.NopCloser(bytes.NewReader(nil)), info, nil
	}
	n := info.Size - opt.Offset
	if opt.Length >= 0 {
		n = min(n, opt.Length)
	}
	return sectionReadCloser{io.NewSectionReader(f, opt.Offset, n), f}, info, nil
}

// Put implements Store.
func (s *LocalStore) Put(ctx context.Context, key string, body []byte, meta map[string]string) (*Info, error) {
	w, err := s.Create(ctx, key, meta)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(body); err != nil {
		w.Abort(ctx)
		return nil, err
	}
	return w.Commit(ctx)
}

// Copy implements Store by reading src and writing dst. The copy is pinned
// to the version it read (opt.IfMatch if set, else the ETag of the opened
// src): dst is installed only if, under the writers' locks of src and dst,
// src still has that ETag, so a copy never lands on top of a newer src.
func (s *LocalStore) Copy(ctx context.Context, src, dst string, opt CopyOptions) (*Info, error) {
	rc, info, err := s.Get(ctx, src, GetOptions{Length: -1, IfMatch: opt.IfMatch})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	srcP, _, err := s.path(src)
	if err != nil {
		return nil, err
	}
	meta := opt.Metadata
	if meta == nil {
		meta = info.Metadata
	}
	cw, err := s.Create(ctx, dst, meta)
	if err != nil {
		return nil, err
	}
	w := cw.(*localWriter)
	w.srcKey, w.srcP, w.srcETag = src, srcP, info.ETag
	if _, err := io.Copy(w, rc); err != nil {
		w.Abort(ctx)
		return nil, fmt.Errorf("objectstore: copy %q to %q: %w", src, dst, err)
	}
	return w.Commit(ctx)
}

// checkSource verifies, with the writers' lock of w.srcP held, that the
// copy's source still has the ETag it was read at.
func (w *localWriter) checkSource() error {
	fi, err := os.Stat(w.srcP)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("objectstore: copy %q: source gone: %w", w.srcKey, ErrPreconditionFailed)
		}
		return fmt.Errorf("objectstore: copy %q: %w", w.srcKey, err)
	}
	info, ok, err := infoFor(w.srcKey, w.srcP, fi)
	if err != nil {
		return fmt.Errorf("objectstore: copy %q: %w", w.srcKey, err)
	}
	if !ok || !etagEqual(info.ETag, w.srcETag) {
		return fmt.Errorf("objectstore: copy %q: source changed: %w", w.srcKey, ErrPreconditionFailed)
	}
	return nil
}

// Delete implements Store: the body first, then the sidecar, so a reader
// never sees a body without its metadata.
func (s *LocalStore) Delete(ctx context.Context, key string) error {
	p, marker, err := s.path(key)
	if err != nil {
		return err
	}
	mu := s.lock(p)
	mu.Lock()
	defer mu.Unlock()
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("objectstore: delete %q: %w", key, err)
	}
	if fi.IsDir() != marker {
		return nil // "a" names a directory, or "a/" a file: no such object
	}
	if !marker {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("objectstore: delete %q: %w", key, err)
		}
	}
	if err := os.Remove(sidecarPath(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("objectstore: delete %q: %w", key, err)
	}
	if marker {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("objectstore: delete %q: %w", key, err)
		}
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("objectstore: fsync %q: %w", dir, err)
	}
	return nil
}

// localWriter writes the body to a temp file; Commit installs it.
type localWriter struct {
	s      *LocalStore
	key    string
	p      string
	marker bool
	meta   map[string]string
	f      *os.File
	md5    hash.Hash
	size   int64
	err    error
	state  writerState

	// srcKey, srcP and srcETag are set for a Copy: install checks that the
	// source still has srcETag (see checkSource).
	srcKey, srcP, srcETag string
}

var _ Writer = (*localWriter)(nil)

// Create implements Store.
func (s *LocalStore) Create(ctx context.Context, key string, meta map[string]string) (Writer, error) {
	p, marker, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tmp, "obj-*")
	if err != nil {
		return nil, fmt.Errorf("objectstore: create %q: %w", key, err)
	}
	return &localWriter{s: s, key: key, p: p, marker: marker, meta: lowerMeta(meta), f: f, md5: md5.New()}, nil
}

func (w *localWriter) Write(b []byte) (int, error) {
	switch {
	case w.state == writerCommitted:
		return 0, errWriterClosed
	case w.state == writerAborted:
		return 0, fmt.Errorf("objectstore: write %q: %w", w.key, ErrAborted)
	case w.err != nil:
		return 0, w.err
	}
	if w.s.writeHook != nil {
		if err := w.s.writeHook(w.size); err != nil {
			w.err = fmt.Errorf("objectstore: write %q: %w", w.key, err)
			return 0, w.err
		}
	}
	n, err := w.f.Write(b)
	w.md5.Write(b[:n])
	w.size += int64(n)
	if err != nil {
		w.err = fmt.Errorf("objectstore: write %q: %w", w.key, err)
	}
	return n, w.err
}

func (w *localWriter) Abort(ctx context.Context) error {
	if w.state != writerOpen {
		return nil
	}
	w.state = writerAborted
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("objectstore: abort %q: %w", w.key, err)
	}
	return nil
}

func (w *localWriter) Commit(ctx context.Context) (*Info, error) {
	switch {
	case w.state == writerCommitted:
		return nil, errWriterClosed
	case w.state == writerAborted:
		return nil, fmt.Errorf("objectstore: commit %q: %w", w.key, ErrAborted)
	}
	err := w.err
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = w.install()
	}
	if err != nil {
		w.Abort(ctx)
		return nil, err
	}
	w.state = writerCommitted
	etag := quote(hex.EncodeToString(w.md5.Sum(nil)))
	return &Info{Key: w.key, Size: w.size, ETag: etag, LastModified: time.Now(), Metadata: w.meta}, nil
}

func conflict(key string, err error) error {
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) || errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
		return fmt.Errorf("objectstore: local %q: %w: %w", key, ErrKeyConflict, err)
	}
	return fmt.Errorf("objectstore: local %q: %w", key, err)
}

// install makes the temp file the object (see LocalStore for the order).
func (w *localWriter) install() error {
	if w.marker && w.size > 0 {
		return fmt.Errorf("objectstore: local %q: a directory marker cannot have a body: %w", w.key, ErrInvalidKey)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("objectstore: commit %q: %w", w.key, err)
	}
	fi, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("objectstore: commit %q: %w", w.key, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("objectstore: commit %q: %w", w.key, err)
	}
	entry := sidecarEntry{Ino: inode(fi), Size: w.size, ETag: quote(hex.EncodeToString(w.md5.Sum(nil))), Metadata: w.meta}

	unlock := w.s.lockPaths(w.p, w.srcP)
	defer unlock()
	if w.srcP != "" {
		if err := w.checkSource(); err != nil {
			return err
		}
	}
	dir := filepath.Dir(w.p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return conflict(w.key, err)
	}
	sc := sidecar{Versions: []sidecarEntry{entry}}
	if w.marker {
		if err := os.Mkdir(w.p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return conflict(w.key, err)
		}
		dfi, err := os.Stat(w.p)
		if err != nil {
			return conflict(w.key, err)
		}
		if !dfi.IsDir() {
			return conflict(w.key, syscall.ENOTDIR)
		}
		sc.Versions[0].Ino, sc.Versions[0].Size = inode(dfi), 0
		os.Remove(w.f.Name())
	} else if cur, err := os.Lstat(w.p); err == nil {
		if cur.IsDir() {
			return conflict(w.key, syscall.EISDIR)
		}
		if old, err := readSidecar(sidecarPath(w.p)); err == nil {
			if e := old.find(inode(cur), cur.Size()); e != nil {
				sc.Versions = append(sc.Versions, *e)
			}
		}
	}
	if err := w.s.writeSidecar(sidecarPath(w.p), &sc); err != nil {
		return fmt.Errorf("objectstore: commit %q: %w", w.key, err)
	}
	if !w.marker {
		if err := os.Rename(w.f.Name(), w.p); err != nil {
			return conflict(w.key, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("objectstore: commit %q: %w", w.key, err)
	}
	return nil
}

// writeSidecar atomically replaces the sidecar at p.
func (s *LocalStore) writeSidecar(p string, sc *sidecar) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.tmp, "meta-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// listItem is an object or a common prefix in listing order.
type listItem struct {
	info     Info
	isPrefix bool
}

// List implements Store, emulating ListObjectsV2: keys in byte order,
// objects and common prefixes interleaved, pages of at most 1000 entries.
// Without a delimiter, marker directories (see LocalStore) list as "dir/"
// objects.
func (s *LocalStore) List(ctx context.Context, prefix, delimiter string, fn func(ListPage) error) error {
	base := prefix[:strings.LastIndexByte(prefix, '/')+1]
	baseDir := s.root
	if base != "" {
		p, _, err := s.path(base)
		if err != nil {
			return nil // no object can have this prefix
		}
		baseDir = p
	}
	var items []listItem
	addObject := func(key, p string, fi fs.FileInfo) error {
		info, ok, err := infoFor(key, p, fi)
		if err != nil {
			return fmt.Errorf("objectstore: list %q: %w", prefix, err)
		}
		if !ok {
			return nil // being rewritten by another process
		}
		info.Metadata = nil
		items = append(items, listItem{info: *info})
		return nil
	}
	if delimiter == "/" {
		if base != "" && base == prefix {
			if _, info, err := s.open(base); err == nil {
				info.Metadata = nil
				items = append(items, listItem{info: *info})
			}
		}
		rest := prefix[len(base):]
		entries, err := os.ReadDir(baseDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("objectstore: list %q: %w", prefix, err)
		}
		for _, e := range entries {
			name := e.Name()
			if !strings.HasPrefix(name, rest) || isSidecarName(name) || (base == "" && name == localTmpDir) {
				continue
			}
			if e.IsDir() {
				items = append(items, listItem{info: Info{Key: base + name + "/"}, isPrefix: true})
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if fi.Mode().IsRegular() {
				if err := addObject(base+name, filepath.Join(baseDir, name), fi); err != nil {
					return err
				}
			}
		}
	} else {
		var walk func(dirKey, dir string) error
		walk = func(dirKey, dir string) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
					return nil
				}
				return fmt.Errorf("objectstore: list %q: %w", prefix, err)
			}
			if dirKey != "" && strings.HasPrefix(dirKey, prefix) {
				if _, info, err := s.open(dirKey); err == nil {
					info.Metadata = nil
					items = append(items, listItem{info: *info})
				}
			}
			for _, e := range entries {
				name := e.Name()
				key := dirKey + name
				if isSidecarName(name) || (dirKey == "" && name == localTmpDir) {
					continue
				}
				if e.IsDir() {
					if strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/") {
						if err := walk(key+"/", filepath.Join(dir, name)); err != nil {
							return err
						}
					}
					continue
				}
				if !strings.HasPrefix(key, prefix) {
					continue
				}
				fi, err := e.Info()
				if err != nil || !fi.Mode().IsRegular() {
					continue
				}
				if err := addObject(key, filepath.Join(dir, name), fi); err != nil {
					return err
				}
			}
			return nil
		}
		if err := walk(base, baseDir); err != nil {
			return err
		}
		if delimiter != "" {
			grouped := items[:0]
			seen := map[string]bool{}
			for _, it := range items {
				rest := it.info.Key[len(prefix):]
				if i := strings.Index(rest, delimiter); i >= 0 {
					cp := prefix + rest[:i+len(delimiter)]
					if !seen[cp] {
						seen[cp] = true
						grouped = append(grouped, listItem{info: Info{Key: cp}, isPrefix: true})
					}
					continue
				}
				grouped = append(grouped, it)
			}
			items = grouped
		}
	}
	slices.SortFunc(items, func(a, b listItem) int { return strings.Compare(a.info.Key, b.info.Key) })
	for len(items) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(items), s.pageSize)
		var page ListPage
		for _, it := range items[:n] {
			if it.isPrefix {
				page.Prefixes = append(page.Prefixes, it.info.Key)
			} else {
				page.Objects = append(page.Objects, it.info)
			}
		}
		items = items[n:]
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}
