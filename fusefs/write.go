package fusefs

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// writeHandle streams a new object: plaintext goes through the GCM encryptor
// straight into the store's upload, which sends finished parts in parallel.
// Nothing is visible until commit, which runs in Flush or Fsync so that
// close(2) and fsync(2) return the upload's real result (the kernel ignores
// Release's).
type writeHandle struct {
	fsys *FS
	node *fileNode
	key  string

	mu      sync.Mutex
	mode    uint32
	written int64
	up      objectstore.Writer
	enc     io.WriteCloser // the encryptor, or up itself for plaintext
	env     *metadata.Envelope
	instr   bool // the envelope goes into an instruction file
	started bool // the upload has begun
	done    bool // committed or aborted
	result  error
}

var (
	_ fs.FileWriter    = (*writeHandle)(nil)
	_ fs.FileFlusher   = (*writeHandle)(nil)
	_ fs.FileFsyncer   = (*writeHandle)(nil)
	_ fs.FileReleaser  = (*writeHandle)(nil)
	_ fs.FileGetattrer = (*writeHandle)(nil)
)

// nopCloser turns an objectstore.Writer into the plaintext "encryptor".
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// newWriter opens n for writing a new version of its object. With start
// set the upload begins at once (create, O_TRUNC). Otherwise the handle waits:
// the kernel sends open(O_TRUNC) as OPEN without O_TRUNC followed by
// SETATTR(size=0), so the upload begins when that truncation arrives, or at a
// first write at offset 0 of an empty object.
func (f *FS) newWriter(ctx context.Context, n *fileNode, mode uint32, start bool) (*writeHandle, error) {
	w := &writeHandle{fsys: f, node: n, key: n.key, mode: mode & 0o7777}
	if start {
		if err := w.start(ctx); err != nil {
			return nil, err
		}
	}
	f.inflight.Add(1)
	n.mu.Lock()
	n.w = w
	n.mu.Unlock()
	if start {
		f.setPending(n.key, n, true)
	}
	return w, nil
}

// start begins the upload. w.mu is held, or w is not yet shared.
func (w *writeHandle) start(ctx context.Context) error {
	f := w.fsys
	attrs := metadata.Attrs{Mode: syscall.S_IFREG | w.mode, HasMode: true}
	meta := map[string]string{}
	var dataKey []byte
	if f.opt.Provider != nil {
		k, wrapped, err := f.opt.Provider.GenerateKey(ctx, cse.KeyRequest{
			CEKAlg:  cse.CEKAlgGCM,
			MatDesc: maps.Clone(f.opt.MatDesc),
			Object:  f.uri(w.key),
		})
		if err != nil {
			return fmt.Errorf("new data key: %w", err)
		}
		dataKey = k
		defer cse.Zero(dataKey)
		iv := make([]byte, cse.GCMIVSize)
		if _, err := rand.Read(iv); err != nil {
			return err
		}
		w.env = metadata.NewEnvelope(iv, wrapped, -1)
		w.instr = f.opt.StorageMode == InstructionFile
		if !w.instr {
			maps.Copy(meta, w.env.Metadata())
			if metadata.CheckSize(meta) != nil {
				// Too big for S3's 2 KB of user metadata: this object's
				// envelope goes into an instruction file instead.
				clear(meta)
				w.instr = true
			}
		}
		if w.instr {
			meta[metadata.AttrEnvelope] = metadata.EnvelopeInstructionFile
		}
	}
	attrs.Apply(meta)
	up, err := f.store.Create(ctx, w.key, meta)
	if err != nil {
		return err
	}
	if dataKey != nil {
		enc, err := cse.NewEncryptWriter(up, dataKey, w.env.IV)
		if err != nil {
			up.Abort(context.WithoutCancel(ctx))
			return err
		}
		w.enc = enc
	} else {
		w.enc = nopCloser{up}
	}
	w.up = up
	w.started = true
	return nil
}

// truncate handles SETATTR(size) on a file open for writing.
func (w *writeHandle) truncate(ctx context.Context, size int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return errClosed
	}
	if size == w.written && w.started {
		return nil
	}
	if size != 0 || w.started && w.written != 0 {
		return fmt.Errorf("truncate to %d while writing: %w", size, errUnsupported)
	}
	if !w.started {
		if err := w.start(ctx); err != nil {
			return err
		}
		w.fsys.setPending(w.key, w.node, true)
	}
	return nil
}

func (w *writeHandle) status() (int64, uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written, w.mode
}

func (w *writeHandle) setMode(m uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mode = m
}

func (w *writeHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	w.node.fillAttr(&out.Attr)
	return 0
}

func (w *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started && !w.done {
		// Writing into an existing object without truncating it first
		// needs a staging file; only an empty object can be streamed.
		if off != 0 || w.node.basePlainSize(ctx) != 0 {
			return 0, w.fsys.logErr("write", w.key, fmt.Errorf("write at %d into an existing object: %w", off, errUnsupported))
		}
		if err := w.start(ctx); err != nil {
			return 0, w.fsys.logErr("write", w.key, err)
		}
		w.fsys.setPending(w.key, w.node, true)
	}
	if w.done && w.result == nil && w.written == 0 && off == 0 {
		if err := w.restart(ctx); err != nil {
			return 0, w.fsys.logErr("write", w.key, err)
		}
	}
	if w.done {
		if w.result != nil {
			return 0, w.fsys.logErr("write", w.key, w.result)
		}
		return 0, w.fsys.logErr("write", w.key, errClosed)
	}
	if off != w.written {
		return 0, w.fsys.logErr("write", w.key, fmt.Errorf("write at %d, expected %d: %w", off, w.written, errNonSequential))
	}
	n, err := w.enc.Write(data)
	w.written += int64(n)
	if err != nil {
		w.finish(ctx, err)
		return uint32(n), w.fsys.logErr("write", w.key, err)
	}
	return uint32(n), 0
}

// Flush commits the upload; close(2) returns its result. A second Flush
// (from a dup'ed descriptor) returns the first one's result.
//
// Shells open a file, dup2 the descriptor and close the original before
// writing, so a Flush may commit an empty object that more writes follow;
// Write then starts the upload afresh (see restart).
func (w *writeHandle) Flush(ctx context.Context) syscall.Errno {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started && !w.done {
		return 0 // opened for writing, nothing changed yet
	}
	return w.commitLocked(ctx)
}

// Fsync commits the upload, empty or not, and returns its result.
func (w *writeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.commitLocked(ctx)
}

func (w *writeHandle) commitLocked(ctx context.Context) syscall.Errno {
	if !w.started && !w.done {
		// Opened for writing, never truncated or written: nothing changes.
		w.done = true
		w.release()
		return 0
	}
	if !w.done {
		w.finish(ctx, nil)
	}
	if w.result != nil {
		return w.fsys.logErr("close", w.key, w.result)
	}
	return 0
}

// Release commits what no Flush committed (an empty file). The kernel
// ignores its result, so this is only reached for files with no data.
func (w *writeHandle) Release(ctx context.Context) syscall.Errno {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started && !w.done {
		w.done = true
		w.release()
		return 0
	}
	if !w.done {
		w.finish(context.WithoutCancel(ctx), nil)
		if w.result != nil {
			w.fsys.logErr("release", w.key, w.result)
		}
	}
	return 0
}

// finish commits (cause == nil) or aborts the upload, exactly once. w.mu is
// held.
func (w *writeHandle) finish(ctx context.Context, cause error) {
	f := w.fsys
	w.done = true
	defer w.release()
	if cause == nil {
		cause = w.commit(ctx)
		if cause == nil {
			return
		}
	}
	w.result = cause
	if err := w.up.Abort(context.WithoutCancel(ctx)); err != nil {
		f.log.Warn("abort of failed upload failed", "object", f.uri(w.key), "cause", err.Error())
	}
}

// restart begins a new upload on a handle whose empty object was already
// committed by an early Flush. w.mu is held.
func (w *writeHandle) restart(ctx context.Context) error {
	w.done, w.started, w.up, w.enc = false, false, nil, nil
	w.fsys.inflight.Add(1)
	w.node.mu.Lock()
	w.node.w = w
	w.node.mu.Unlock()
	if err := w.start(ctx); err != nil {
		w.done, w.result = true, err
		w.release()
		return err
	}
	w.fsys.setPending(w.key, w.node, true)
	return nil
}

// release detaches a finished handle from its node.
func (w *writeHandle) release() {
	w.node.mu.Lock()
	if w.node.w == w {
		w.node.w = nil
	}
	w.node.mu.Unlock()
	w.fsys.setPending(w.key, w.node, false)
	w.fsys.inflight.Done()
}

func (w *writeHandle) commit(ctx context.Context) error {
	f := w.fsys
	if err := w.enc.Close(); err != nil {
		return err
	}
	info, err := w.up.Commit(ctx)
	if err != nil {
		return err
	}
	if w.instr {
		// The object goes first and its instruction file second: a reader
		// that sees the object early finds the marker and fails with EIO
		// rather than reading ciphertext as plaintext.
		if _, err := f.store.Put(ctx, metadata.InstructionKey(w.key), w.env.Instruction(), metadata.InstructionMetadata()); err != nil {
			// Without its envelope the object is unreadable: take it away
			// rather than leave a broken object visible.
			if derr := f.store.Delete(context.WithoutCancel(ctx), w.key); derr != nil {
				f.log.Error("could not remove object after its instruction file failed", "object", f.uri(w.key), "cause", derr.Error())
			}
			return fmt.Errorf("instruction file: %w", err)
		}
	}
	o := &object{key: w.key, info: *info, plainSize: w.written, env: w.env, instr: w.instr}
	o.attrs = metadata.Attrs{Mode: syscall.S_IFREG | w.mode, HasMode: true}
	if w.env != nil {
		o.kind = kindGCM
	}
	if o.info.LastModified.IsZero() {
		o.info.LastModified = time.Now()
	}
	f.putStat(w.key, o)
	return nil
}
