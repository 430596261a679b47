package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// Authentication policy (docs/security.md):
//
//   - GCM objects up to VerifyThreshold are fetched and authenticated whole
//     by the handle's first read, before it returns any byte; a tampered
//     object fails that read(2) with EIO. An open that never reads (rsync's
//     open for fchmod) costs no GET.
//   - Larger objects read sequentially from offset 0 are decrypted as they
//     stream; the chunk holding the last bytes is released only after the tag
//     has verified, so a whole-file read never reaches EOF unauthenticated.
//   - Random reads of larger objects are decrypted with AES-CTR from
//     ETag-pinned ranged GETs. They are not authenticated, except that any read
//     that includes the object's last byte first authenticates the whole
//     object (once per ETag). StrictRanged authenticates the whole object
//     before serving the first random read.
//
// rangeMax and streamParallel shape the ranged GETs of a sequential
// stream: up to streamParallel ranges of rangeMax bytes in flight, as
// its window grows (prefetch.go), within the memory budget. 16 ranges of
// 8 MiB (128 MiB) keep a store 20 ms away, at 50 MB/s per connection,
// busy at about 600 MB/s: each range takes 8 MiB / 50 MB/s + 20 ms.
const (
	rangeMax       = 8 << 20
	streamParallel = 16
)

type readHandle struct {
	fsys *FS
	obj  *object
	key  []byte   // data key; nil for plaintext
	pin  *etagPin // the ETag its GETs are pinned to (pin.go)

	mu     sync.Mutex
	small  bool   // authenticated whole by the first read (VerifyThreshold)
	whole  []byte // authenticated plaintext of a small object, once read
	seq    *seqReader
	closed bool
}

var (
	_ fs.FileReader    = (*readHandle)(nil)
	_ fs.FileReleaser  = (*readHandle)(nil)
	_ fs.FileGetattrer = (*readHandle)(nil)
)

func (f *FS) newReader(ctx context.Context, o *object) (*readHandle, error) {
	r, err := f.newReaderNoPreload(ctx, o)
	if err != nil {
		return nil, err
	}
	r.small = o.authenticated() && o.plainSize <= f.opt.VerifyThreshold
	return r, nil
}

// object is the version the handle reads (loadWhole may move a small
// object's handle to a newer one before its first read).
func (r *readHandle) object() *object {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.obj
}

// loadWhole fetches and authenticates a small object for the handle's
// first read. If the object was replaced since open (the GET pinned to the
// ETag fails), the handle has returned nothing yet, so it moves to the
// current version, once, as an open made now would have: fstat on the
// handle then shows that version. r.mu is held.
func (r *readHandle) loadWhole(ctx context.Context) error {
	for try := 0; ; try++ {
		whole, err := r.readAll(ctx)
		if err == nil {
			r.whole = whole
			r.fsys.setVerified(r.obj.key, r.obj.info.ETag)
			return nil
		}
		if !errors.Is(err, objectstore.ErrPreconditionFailed) || try > 0 {
			return err
		}
		f := r.fsys
		f.putStat(r.obj.key, nil)
		o, err := f.head(ctx, r.obj.key)
		if err != nil {
			return err
		}
		nr, err := f.newReaderNoPreload(ctx, o)
		if err != nil {
			return err
		}
		r.zero()
		r.obj, r.key, r.pin = o, nr.key, nr.pin
		r.small = o.authenticated() && o.plainSize <= f.opt.VerifyThreshold
		if !r.small {
			return fmt.Errorf("object %s replaced by a large one since open: %w", o.key, objectstore.ErrPreconditionFailed)
		}
	}
}

// newReaderNoPreload opens o without authenticating small objects up front.
func (f *FS) newReaderNoPreload(ctx context.Context, o *object) (*readHandle, error) {
	r := &readHandle{fsys: f, obj: o, pin: f.pinFor(o)}
	if o.kind != kindPlain {
		k, err := f.dataKey(ctx, o)
		if err != nil {
			return nil, err
		}
		r.key = k
	}
	return r, nil
}

func (r *readHandle) zero() {
	cse.Zero(r.key)
	r.key = nil
}

// openStream opens the object from the start as a plaintext stream that
// authenticates (GCM) or checks padding (CBC) at its end.
//
// Objects larger than one range (rangeMax) are fetched as parallel ranged GETs pinned to
// the ETag and decrypted in order; smaller ones with one GET.
func (r *readHandle) openStream(ctx context.Context) (io.Reader, io.Closer, error) {
	o := r.obj
	var rc io.ReadCloser
	if o.info.Size > rangeMax {
		rc = newPrefetchReader(ctx, r.fsys.store, o.key, r.pin, 0, o.info.Size, rangeMax, streamParallel, r.fsys.opt.Budget)
	} else {
		err := r.pin.do(ctx, func(etag string) (err error) {
			rc, _, err = r.fsys.store.Get(ctx, o.key, objectstore.GetOptions{Length: -1, IfMatch: etag})
			return err
		})
		if err != nil {
			return nil, nil, err
		}
	}
	if o.kind == kindPlain {
		return rc, rc, nil
	}
	dec, err := o.content.NewReader(rc, r.key)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	return dec, rc, nil
}

// readAll returns the whole authenticated plaintext.
func (r *readHandle) readAll(ctx context.Context) ([]byte, error) {
	src, c, err := r.openStream(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, 0, r.obj.plainSize)
	buf, err = readAllInto(buf, src)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", r.obj.key, err)
	}
	if int64(len(buf)) != r.obj.plainSize {
		return nil, fmt.Errorf("object %s: %d bytes, expected %d: %w", r.obj.key, len(buf), r.obj.plainSize, cse.ErrTruncated)
	}
	return buf, nil
}

func readAllInto(buf []byte, src io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// verify authenticates the whole object once per ETag.
func (r *readHandle) verify(ctx context.Context) error {
	o := r.obj
	if !o.authenticated() || r.fsys.isVerified(o.key, o.info.ETag) {
		return nil
	}
	src, c, err := r.openStream(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.Copy(io.Discard, src); err != nil {
		return fmt.Errorf("object %s: %w", o.key, err)
	}
	r.fsys.setVerified(o.key, o.info.ETag)
	return nil
}

var _ fs.FileFsyncer = (*readHandle)(nil)

// Fsync stores the file's deferred attribute changes (lazyattr.go): a
// reader's fsync(2) makes chmod and utimes durable too.
func (r *readHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	key := r.object().key
	if err := r.fsys.flushAttrs(mutating(ctx), key); err != nil {
		return r.fsys.logErr("fsync", key, err)
	}
	return 0
}

func (r *readHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	r.fsys.fileAttr(r.object(), &out.Attr)
	return 0
}

func (r *readHandle) Read(ctx context.Context, dest []byte, off int64) (res fuse.ReadResult, errno syscall.Errno) {
	defer func() {
		if errno == 0 && res != nil {
			r.fsys.countRead(res.Size())
		}
	}()
	ctx, done := r.fsys.untilKilled(ctx, "read", r.object().key)
	defer done()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, syscall.EBADF
	}
	if r.small && r.whole == nil {
		if err := r.loadWhole(ctx); err != nil {
			r.mu.Unlock()
			return nil, r.fsys.logErr("read", r.obj.key, err)
		}
	}
	o := r.obj
	if off >= o.plainSize || len(dest) == 0 {
		r.mu.Unlock()
		return fuse.ReadResultData(nil), 0
	}
	n := min(int64(len(dest)), o.plainSize-off)
	dest = dest[:n]
	if r.whole != nil {
		r.mu.Unlock()
		return fuse.ReadResultData(r.whole[off : off+n]), 0
	}
	seq := r.seq
	if seq == nil && off == 0 {
		// The stream outlives this request: it gets its own context,
		// cancelled when the handle is released.
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		src, c, err := r.openStream(sctx)
		if err != nil {
			cancel()
			r.mu.Unlock()
			return nil, r.fsys.logErr("read", o.key, err)
		}
		seq = newSeqReader(src, closerFunc(func() error { cancel(); return c.Close() }), o.plainSize, r.fsys.opt.ReadAhead, r.fsys.opt.Budget, func() { r.fsys.setVerified(o.key, o.info.ETag) })
		seq.cancel = cancel
		seq.prefetch, _ = c.(*prefetchReader)
		r.seq = seq
	}
	r.mu.Unlock()
	if seq != nil {
		res, ok, err := seq.readAt(ctx, off, n)
		if err != nil {
			return nil, r.fsys.logErr("read", o.key, err)
		}
		if ok {
			return res, 0
		}
		// A read the stream cannot serve: the reader seeked away, so the
		// stream stops fetching far ahead until it is read again.
		if seq.prefetch != nil {
			seq.prefetch.seek()
		}
	}
	if err := r.readRange(ctx, dest, off); err != nil {
		return nil, r.fsys.logErr("read", o.key, err)
	}
	return fuse.ReadResultData(dest), 0
}

// readRange serves a random read with a ranged GET pinned to the ETag.
func (r *readHandle) readRange(ctx context.Context, dest []byte, off int64) error {
	o := r.obj
	end := off + int64(len(dest))
	if o.authenticated() && (r.fsys.opt.StrictRanged || end == o.plainSize) {
		if err := r.verify(ctx); err != nil {
			return err
		}
	}
	fetchOff, fetchLen := off, int64(len(dest))
	if o.kind == kindEncrypted {
		fetchOff, fetchLen = o.content.Range(off, int64(len(dest)))
	}
	var rc io.ReadCloser
	err := r.pin.do(ctx, func(etag string) (err error) {
		rc, _, err = r.fsys.store.Get(ctx, o.key, objectstore.GetOptions{Offset: fetchOff, Length: fetchLen, IfMatch: etag})
		return err
	})
	if err != nil {
		return err
	}
	defer rc.Close()
	src := make([]byte, fetchLen)
	if _, err := io.ReadFull(rc, src); err != nil {
		return fmt.Errorf("ranged read of %s at %d: %w", o.key, fetchOff, err)
	}
	if o.kind == kindPlain {
		copy(dest, src)
		return nil
	}
	if err := o.content.DecryptRange(r.key, dest, off, src); err != nil {
		return fmt.Errorf("object %s: %w", o.key, err)
	}
	return nil
}

func (r *readHandle) Release(ctx context.Context) syscall.Errno {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.seq != nil {
		r.seq.close()
		r.seq = nil
	}
	r.whole = nil
	r.zero()
	return 0
}
