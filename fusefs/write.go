package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
)

// A writeHandle is a file opened for writing. It is in one of three modes:
//
//   - undecided: opened without O_TRUNC, nothing written yet. The kernel
//     sends open(O_TRUNC) as OPEN without O_TRUNC followed by SETATTR(size=0),
//     so the mode is chosen by what comes next.
//   - stream: a new object streams through the encryptor into the store's
//     upload (new files, O_TRUNC, truncation to zero, a first write at offset
//     0 of an empty object). The first streamPrefix bytes are also kept in
//     memory, so that a non-sequential write early on can switch to staging.
//   - stage: writes go to the node's encrypted staging file, uploaded whole
//     on Flush/Fsync (random writes, appends, edits, truncation).
//
// Commits run in Flush and Fsync so that close(2) and fsync(2) return the
// upload's real result (the kernel ignores Release's). A commit never ends
// the handle: a write after a committed stream (fsync, then more writes, as
// sqlite and log writers do) moves the handle to staging, starting from what
// was committed, and the next Flush or Fsync commits again.
type writeHandle struct {
	fsys     *FS
	node     *fileNode
	key      string
	readable bool // O_RDWR

	mu     sync.Mutex
	mode   int
	attrs  metadata.Attrs
	up     *upload
	prefix []byte // stream mode: the plaintext written so far, while short
	done   bool   // stream mode: committed or aborted
	result error  // stream mode: the commit's result
	etag   string // stream mode: the ETag of the committed object
	staged bool   // holds a reference on node's staging file
	closed bool
	opener int // thread group id of the process that opened the file
}

const (
	modeUndecided = iota
	modeStream
	modeStage
)

// streamPrefix bounds the plaintext a streaming handle keeps to be able to
// switch to staging.
const streamPrefix = 8 << 20

var (
	_ fs.FileWriter    = (*writeHandle)(nil)
	_ fs.FileReader    = (*writeHandle)(nil)
	_ fs.FileFlusher   = (*writeHandle)(nil)
	_ fs.FileFsyncer   = (*writeHandle)(nil)
	_ fs.FileReleaser  = (*writeHandle)(nil)
	_ fs.FileGetattrer = (*writeHandle)(nil)
)

// newWriter opens n for writing. With trunc the handle streams a new,
// empty version at once.
func (f *FS) newWriter(ctx context.Context, n *fileNode, attrs metadata.Attrs, trunc, readable bool) (*writeHandle, error) {
	w := &writeHandle{fsys: f, node: n, key: n.key(), attrs: attrs, readable: readable}
	w.opener = callerTgid(ctx)
	f.inflight.Add(1)
	f.handlesMu.Lock()
	if f.handles == nil {
		f.handles = make(map[*writeHandle]bool)
	}
	f.handles[w] = true
	f.handlesMu.Unlock()
	if trunc {
		if err := w.startStream(ctx); err != nil {
			f.handlesMu.Lock()
			delete(f.handles, w)
			f.handlesMu.Unlock()
			f.inflight.Done()
			return nil, err
		}
	}
	n.addWriter(w)
	return w, nil
}

// startStream begins a streaming upload. w.mu is held or w is not shared.
func (w *writeHandle) startStream(ctx context.Context) error {
	u, err := w.fsys.beginUpload(ctx, w.key, w.attrs)
	if err != nil {
		return err
	}
	w.up, w.mode, w.done, w.result = u, modeStream, false, nil
	w.prefix = nil
	if w.fsys.stage != nil {
		w.prefix = make([]byte, 0, 64<<10) // non-nil: keep what is written
	}
	w.fsys.setPending(w.key, w.node, true)
	return nil
}

// startStage switches to the node's staging file. seed, if not nil, is the
// whole content so far (a streaming handle switching over).
func (w *writeHandle) startStage(ctx context.Context, seed []byte) error {
	if w.fsys.stage == nil {
		return fmt.Errorf("no staging directory: %w", errUnsupported)
	}
	sf, _, err := w.node.acquireStage(ctx, seed != nil)
	if err != nil {
		return err
	}
	w.staged = true
	w.mode = modeStage
	if seed != nil {
		if err := sf.Truncate(0); err != nil {
			return err
		}
		if _, err := sf.WriteAt(seed, 0); err != nil {
			return err
		}
		w.node.markDirty()
		// The stream this replaces was aborted: chmod, chown and utimes
		// made while it ran go on the staged version instead.
		w.node.stagePendingAttrs()
	}
	return nil
}

// prefixHoldsAll reports whether w.prefix holds everything streamed so far,
// so that the stream can be replaced by staging seeded with it: it is kept
// (staging is on) and no write has outgrown streamPrefix. w.mu is held.
func (w *writeHandle) prefixHoldsAll() bool {
	return w.prefix != nil && int64(len(w.prefix)) == w.up.written
}

// toStaging switches a handle whose stream is still open (not done) to the
// node's staging file, seeded with what was streamed: the stream is aborted,
// so nothing of it is committed, and the file is no longer pending.
// Precondition: everything written so far is in w.prefix (prefixHoldsAll).
// The write, read or truncate that needed staging then goes to the staging
// file. w.mu is held.
func (w *writeHandle) toStaging(ctx context.Context) error {
	seed := w.prefix
	w.up.abort(ctx)
	w.done = true
	w.fsys.setPending(w.key, w.node, false)
	if err := w.startStage(ctx, seed); err != nil {
		return err
	}
	w.prefix = nil
	return nil
}

// restage moves a handle whose stream was committed to staging, so that it
// stays writable. The staging file starts as what was committed: the kept
// prefix when it holds all of it and the object is still the one committed,
// else the object as stored now, read back. A staging file another handle
// holds already is the current content and is used as it is. w.mu is held.
func (w *writeHandle) restage(ctx context.Context) error {
	if w.fsys.stage == nil {
		return fmt.Errorf("write after a commit needs staging: %w", errUnsupported)
	}
	seed := w.prefixHoldsAll() && w.result == nil
	if seed {
		o, err := w.fsys.head(ctx, w.key)
		seed = err == nil && o.info.ETag == w.etag && o.plainSize == w.up.written
	}
	sf, fresh, err := w.node.acquireStage(ctx, seed)
	if err != nil {
		return err
	}
	w.staged, w.mode = true, modeStage
	if seed && fresh && len(w.prefix) > 0 {
		// What the store holds already: not dirty.
		if _, err := sf.WriteAt(w.prefix, 0); err != nil {
			return err
		}
	}
	w.prefix = nil
	return nil
}

// stillCommittedEmpty reports whether the object is still the empty one
// this handle committed. w.mu is held.
func (w *writeHandle) stillCommittedEmpty(ctx context.Context) bool {
	o, err := w.fsys.head(ctx, w.key)
	return err == nil && o.info.ETag == w.etag && o.plainSize == 0
}

// status reports the size and attributes a stat should show.
func (w *writeHandle) status() (size int64, attrs metadata.Attrs, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.mode == modeStream && !w.done:
		return w.up.written, w.attrs, true
	}
	return 0, metadata.Attrs{}, false
}

func (w *writeHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return w.node.Getattr(ctx, w, out)
}

func (w *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	ctx = mutating(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.write(ctx, data, off)
	w.fsys.countWritten(n)
	if err != nil {
		return uint32(n), w.fsys.logErr("write", w.key, err)
	}
	return uint32(n), 0
}

// errFileTooBig: a size beyond what one object can hold.
var errFileTooBig = fmt.Errorf("fusefs: file larger than an object can be: %w", syscall.EFBIG)

// maxFileSize is the largest file the mount can store: S3's object limit
// (5 TiB), and with encryption the most one GCM message may carry (64 GiB,
// the S3 Encryption Clients' limit). A write or truncate past it fails with
// EFBIG before anything is staged or uploaded.
func (f *FS) maxFileSize() int64 {
	if f.opt.Provider != nil {
		return cse.MaxGCMPlaintext
	}
	return 5 << 40
}

func (w *writeHandle) write(ctx context.Context, data []byte, off int64) (int, error) {
	if off+int64(len(data)) > w.fsys.maxFileSize() {
		return 0, fmt.Errorf("write of %d bytes at %d: %w", len(data), off, errFileTooBig)
	}
	if w.mode == modeUndecided {
		if off == 0 && w.node.basePlainSize(ctx) == 0 {
			if err := w.startStream(ctx); err != nil {
				return 0, err
			}
		} else if err := w.startStage(ctx, nil); err != nil {
			return 0, err
		}
	}
	if w.mode == modeStream {
		if w.done && w.result == nil && w.up.written == 0 && off == 0 && w.stillCommittedEmpty(ctx) {
			// An empty object was committed by an early Flush (the shell's
			// dup2 dance); the writes that follow make a new version.
			// (If the object changed since, a truncate(2) by path say, the
			// write goes to staging below, which starts from it.)
			if err := w.startStream(ctx); err != nil {
				return 0, err
			}
		}
		if w.done {
			if w.result != nil {
				return 0, w.result
			}
			if err := w.restage(ctx); err != nil {
				return 0, err
			}
		} else if off != w.up.written {
			// Not sequential: switch to staging if everything written so
			// far is still at hand.
			if !w.prefixHoldsAll() {
				// The upload cannot take it: fail it for good, so that
				// close(2) reports the failure and nothing is committed.
				err := fmt.Errorf("write at %d after streaming %d bytes: %w", off, w.up.written, errNonSequential)
				w.finishStream(ctx, err)
				return 0, err
			}
			if err := w.toStaging(ctx); err != nil {
				return 0, err
			}
		} else {
			n, err := w.up.Write(data)
			if w.prefix != nil {
				if int64(len(w.prefix))+int64(n) <= streamPrefix {
					w.prefix = append(w.prefix, data[:n]...)
				} else {
					w.prefix = nil
				}
			}
			if err != nil {
				w.finishStream(ctx, err)
			}
			return n, err
		}
	}
	// modeStage
	sf := w.node.stageFile()
	n, err := sf.WriteAt(data, off)
	if n > 0 {
		w.node.markDirty()
	}
	return n, err
}

// Read serves O_RDWR handles from the staging file once staged.
func (w *writeHandle) Read(ctx context.Context, dest []byte, off int64) (res fuse.ReadResult, errno syscall.Errno) {
	defer func() {
		if errno == 0 && res != nil {
			w.fsys.countRead(res.Size())
		}
	}()
	ctx = mutating(ctx) // it may end the upload and stage the file
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.readable {
		return nil, syscall.EBADF
	}
	if w.mode == modeStream && !w.done {
		// Reading back a file that is being streamed: stage it first.
		if !w.prefixHoldsAll() {
			return nil, w.fsys.logErr("read", w.key, fmt.Errorf("read of a file streamed past %d bytes: %w", streamPrefix, errNonSequential))
		}
		if err := w.toStaging(ctx); err != nil {
			return nil, w.fsys.logErr("read", w.key, err)
		}
	}
	if w.mode == modeStream && w.done && w.result == nil {
		if err := w.restage(ctx); err != nil {
			return nil, w.fsys.logErr("read", w.key, err)
		}
	}
	if w.mode == modeUndecided || (w.mode == modeStream && w.done) {
		if err := w.startStage(ctx, nil); err != nil {
			return nil, w.fsys.logErr("read", w.key, err)
		}
	}
	n, err := w.node.stageFile().ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, w.fsys.logErr("read", w.key, err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// truncate handles SETATTR(size) on a file open for writing.
func (w *writeHandle) truncate(ctx context.Context, size int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.mode {
	case modeUndecided:
		if size == 0 {
			return w.startStream(ctx)
		}
		if err := w.startStage(ctx, nil); err != nil {
			return err
		}
	case modeStream:
		switch {
		case w.done && w.result != nil:
			return w.result
		case w.done && size == 0:
			return w.startStream(ctx)
		case w.done:
			if err := w.restage(ctx); err != nil {
				return err
			}
		case size == w.up.written:
			return nil
		case !w.prefixHoldsAll():
			return fmt.Errorf("truncate to %d after streaming: %w", size, errNonSequential)
		default:
			if err := w.toStaging(ctx); err != nil {
				return err
			}
		}
	}
	if err := w.node.stageFile().Truncate(size); err != nil {
		return err
	}
	w.node.markDirty()
	return nil
}

// finished says whether the handle can change the file no more: closed, or
// its stream committed or aborted.
func (w *writeHandle) finished() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed || (w.mode == modeStream && w.done)
}

// Flush commits: close(2) returns its result. A second Flush (a dup'ed
// descriptor) returns the first one's result.
//
// A FLUSH comes whenever any copy of the descriptor is closed, including the
// copy a forked child closes at exec. Only a flush by the process that opened
// the file commits; others return the result so far, and Release commits
// what no flush did.
func (w *writeHandle) Flush(ctx context.Context) syscall.Errno {
	ctx = mutating(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := callerTgid(ctx); t != 0 && w.opener != 0 && t != w.opener {
		if w.result != nil {
			return w.fsys.logErr("close", w.key, w.result)
		}
		return 0
	}
	if err := w.commit(ctx); err != nil {
		return w.fsys.logErr("close", w.key, err)
	}
	return 0
}

// Fsync commits whoever asks: it is an explicit request for durability.
func (w *writeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	ctx = mutating(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.commit(ctx); err != nil {
		return w.fsys.logErr("fsync", w.key, err)
	}
	if err := w.fsys.flushAttrs(ctx, w.node.key()); err != nil { // lazyattr.go
		return w.fsys.logErr("fsync", w.key, err)
	}
	return 0
}

// commit makes what this handle wrote durable. w.mu is held.
func (w *writeHandle) commit(ctx context.Context) error {
	switch w.mode {
	case modeStream:
		if !w.done {
			w.finishStream(ctx, nil)
		}
		return w.result
	case modeStage:
		return w.node.flushStage(ctx)
	}
	return nil // undecided: nothing changed
}

// finishStream commits (cause == nil) or aborts the streaming upload.
func (w *writeHandle) finishStream(ctx context.Context, cause error) {
	w.done = true
	w.fsys.setPending(w.key, w.node, false)
	if cause == nil && w.node.unlinked.Load() {
		// Unlinked while open: its data lives only as long as the
		// descriptor, as a local file's would; nothing is committed.
		w.up.abort(ctx)
		return
	}
	if cause == nil {
		o, err := w.up.commit(ctx)
		if err == nil {
			w.etag = o.info.ETag
			w.node.committed(o)
			// chmod/chown/utimes made while the object streamed (cp -p
			// and tar set them before close) are stored now that it
			// exists, with those that follow close (lazyattr.go).
			w.node.deferPendingAttrs()
			return
		}
		cause = err
	}
	w.result = cause
	w.up.abort(ctx)
	// A name the listing got at create time must not outlive the failure.
	w.fsys.dirChanged(parentPrefix(w.key))
}

// Release ends the handle. A streaming upload not yet committed (an empty
// file no Flush committed) is committed here; staged changes are uploaded
// by the last handle to let go of the staging file if no Flush did.
func (w *writeHandle) Release(ctx context.Context) syscall.Errno {
	ctx = mutating(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0
	}
	w.closed = true
	ctx = context.WithoutCancel(ctx)
	if w.mode == modeStream && !w.done {
		w.finishStream(ctx, nil)
		if w.result != nil {
			w.fsys.logErr("release", w.key, w.result)
		}
	}
	if w.staged {
		w.node.releaseStage(ctx)
	}
	w.detach()
	return 0
}

// detach forgets a finished handle.
func (w *writeHandle) detach() {
	w.node.removeWriter(w)
	w.fsys.handlesMu.Lock()
	delete(w.fsys.handles, w)
	w.fsys.handlesMu.Unlock()
	w.fsys.inflight.Done()
}

// abandon discards a handle whose RELEASE will never come: its streaming
// upload is aborted and its staged changes are dropped, not uploaded.
func (w *writeHandle) abandon() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	ctx := context.Background()
	if w.mode == modeStream && !w.done {
		w.done = true
		w.fsys.setPending(w.key, w.node, false)
		w.up.abort(ctx)
		w.fsys.dirChanged(parentPrefix(w.key))
	}
	if w.staged {
		w.node.dropStage()
	}
	w.detach()
}

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

// pendingIn reports whether a new file is streaming up at key or under
// key + "/".
func (f *FS) pendingIn(key string) bool {
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	for k := range f.pend {
		if k == key || strings.HasPrefix(k, key+"/") {
			return true
		}
	}
	return false
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

// callerTgid is the thread group (process) id of a request's caller. FUSE
// reports the calling thread's id; /proc maps it to its process.
func callerTgid(ctx context.Context) int {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return int(c.Pid)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return int(c.Pid)
}
