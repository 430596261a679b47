package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// Authentication policy (docs/security.md):
//
//   - GCM objects up to VerifyThreshold are fetched and authenticated whole at
//     open; a tampered object fails open(2) with EIO.
//   - Larger objects read sequentially from offset 0 are decrypted as they
//     stream; the chunk holding the last bytes is released only after the tag
//     has verified, so a whole-file read never reaches EOF unauthenticated.
//   - Random reads of larger objects are decrypted with AES-CTR from
//     ETag-pinned ranged GETs. They are not authenticated, except that any read
//     that includes the object's last byte first authenticates the whole
//     object (once per ETag). StrictRanged authenticates the whole object
//     before serving the first random read.
//
// chunkSize is the unit of sequential read-ahead.
const chunkSize = 1 << 20

// keepBehind is how far behind the furthest read a sequential stream keeps
// its decrypted chunks: the kernel's read-ahead sends several READs at once,
// and they are served in any order.
const keepBehind = 32 << 20

// waitAhead is how far beyond what a sequential stream has decrypted a read
// may start and still wait for the stream, rather than be served on its own
// as a random read: the kernel's read-ahead runs up to read_ahead_kb ahead.
const waitAhead = 32 << 20

// streamChunk and streamParallel shape the ranged GETs of a sequential
// stream: up to streamParallel ranges of streamChunk bytes in flight, as
// its window grows (prefetch.go), within the memory budget. 16 ranges of
// 8 MiB (128 MiB) keep a store 20 ms away, at 50 MB/s per connection,
// busy at about 600 MB/s: each range takes 8 MiB / 50 MB/s + 20 ms.
const (
	streamChunk    = 8 << 20
	streamParallel = 16
)

type readHandle struct {
	fsys *FS
	obj  *object
	key  []byte // data key; nil for plaintext

	mu     sync.Mutex
	whole  []byte // authenticated plaintext of a small object
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
	if o.authenticated() && o.plainSize <= f.opt.VerifyThreshold {
		whole, err := r.readAll(ctx)
		if err != nil {
			r.zero()
			return nil, err
		}
		r.whole = whole
		f.setVerified(o.key, o.info.ETag)
	}
	return r, nil
}

// newReaderNoPreload opens o without authenticating small objects up front.
func (f *FS) newReaderNoPreload(ctx context.Context, o *object) (*readHandle, error) {
	r := &readHandle{fsys: f, obj: o}
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
// Objects larger than one chunk are fetched as parallel ranged GETs pinned to
// the ETag and decrypted in order; smaller ones with one GET.
func (r *readHandle) openStream(ctx context.Context) (io.Reader, io.Closer, error) {
	o := r.obj
	var rc io.ReadCloser
	if o.info.Size > streamChunk {
		rc = newPrefetchReader(ctx, r.fsys.store, o.key, o.info.ETag, 0, o.info.Size, streamChunk, streamParallel, r.fsys.opt.Budget)
	} else {
		var err error
		rc, _, err = r.fsys.store.Get(ctx, o.key, objectstore.GetOptions{Length: -1, IfMatch: o.info.ETag})
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
	if err := r.fsys.flushAttrs(mutating(ctx), r.obj.key); err != nil {
		return r.fsys.logErr("fsync", r.obj.key, err)
	}
	return 0
}

func (r *readHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	r.fsys.fileAttr(r.obj, &out.Attr)
	return 0
}

func (r *readHandle) Read(ctx context.Context, dest []byte, off int64) (res fuse.ReadResult, errno syscall.Errno) {
	defer func() {
		if errno == 0 && res != nil {
			r.fsys.countRead(res.Size())
		}
	}()
	ctx, done := r.fsys.untilKilled(ctx, "read", r.obj.key)
	defer done()
	o := r.obj
	if off >= o.plainSize || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	n := min(int64(len(dest)), o.plainSize-off)
	dest = dest[:n]
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, syscall.EBADF
	}
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
	rc, _, err := r.fsys.store.Get(ctx, o.key, objectstore.GetOptions{Offset: fetchOff, Length: fetchLen, IfMatch: o.info.ETag})
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

// seqReader reads a plaintext stream ahead of the reader, in chunks, in a
// goroutine, keeping at most readAhead bytes ahead and one chunk behind the
// furthest read. Reads slightly out of order (the kernel's async reads) are
// served from the kept chunks.
type seqReader struct {
	src       io.Reader
	closer    io.Closer
	cancel    context.CancelFunc // stops the fetches in flight
	prefetch  *prefetchReader    // the ranged GETs under src, if any
	size      int64
	readAhead int64
	budget    *objectstore.Budget
	onVerify  func()

	mu     sync.Mutex
	cond   *sync.Cond
	chunks []*chunk // contiguous, chunks[0] starts at start
	served []int64  // bytes of each chunk handed out so far
	start  int64
	end    int64
	pos    int64 // furthest offset a reader asked for
	err    error // terminal; reads past end fail with it
	done   bool
}

var errHandleClosed = errors.New("fusefs: read handle closed")

// A chunk is chunkSize bytes of decrypted read-ahead, shared by the stream
// that holds it and the replies being written from it (chunkResult): it
// goes back to chunkPool when the last of them lets go.
type chunk struct {
	buf  []byte
	refs atomic.Int32
	cost int64 // what the stream took from the budget for it
}

var chunkPool = sync.Pool{New: func() any { return &chunk{buf: make([]byte, chunkSize)} }}

func getChunk() *chunk {
	c := chunkPool.Get().(*chunk)
	c.refs.Store(1)
	return c
}

func (c *chunk) release() {
	if c.refs.Add(-1) == 0 {
		c.buf = c.buf[:chunkSize]
		chunkPool.Put(c)
	}
}

// chunkResult is a READ reply that points into the stream's chunks instead
// of copying them: go-fuse writes its slices with writev(2) (Slices) and
// calls Done once they are in the kernel. A reply never sent (an
// interrupted request) just leaves its chunks to the garbage collector.
type chunkResult struct {
	slices [][]byte
	held   []*chunk
	once   sync.Once
}

func (r *chunkResult) Slices() ([][]byte, fuse.Status) { return r.slices, fuse.OK }

func (r *chunkResult) Size() int {
	n := 0
	for _, b := range r.slices {
		n += len(b)
	}
	return n
}

func (r *chunkResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, b := range r.slices {
		buf = append(buf, b...)
	}
	return buf, fuse.OK
}

func (r *chunkResult) Done() {
	r.once.Do(func() {
		for _, c := range r.held {
			c.release()
		}
		r.slices, r.held = nil, nil
	})
}

// seqMinChunks is the decrypted read-ahead a stream keeps outside the memory
// budget; chunks beyond it come from the budget.
const seqMinChunks = 2

func newSeqReader(src io.Reader, c io.Closer, size, readAhead int64, budget *objectstore.Budget, onVerify func()) *seqReader {
	s := &seqReader{src: src, closer: c, size: size, readAhead: max(readAhead, seqMinChunks*chunkSize), budget: budget, onVerify: onVerify}
	s.cond = sync.NewCond(&s.mu)
	go s.pump()
	return s
}

func (s *seqReader) pump() {
	defer s.closer.Close()
	for {
		s.mu.Lock()
		var cost int64
		for s.err == nil {
			if s.end-s.pos >= s.readAhead {
				s.cond.Wait()
				continue
			}
			// Beyond seqMinChunks, read ahead only what the budget
			// allows, unless a reader is waiting for this very chunk.
			if len(s.chunks) < seqMinChunks || s.pos > s.end {
				break
			}
			if s.budget.TryAcquire(chunkSize) {
				cost = chunkSize
				break
			}
			s.cond.Wait() // until the reader moves on
		}
		if s.err != nil {
			s.mu.Unlock()
			s.budget.Release(cost)
			return
		}
		next := s.end
		s.mu.Unlock()

		n := min(int64(chunkSize), s.size-next)
		c := getChunk()
		c.cost = cost
		buf := c.buf[:n]
		_, err := io.ReadFull(s.src, buf)
		if err == nil && next+n == s.size {
			// Last chunk: release it only once the stream has ended
			// cleanly, i.e. the GCM tag (or CBC padding) has verified.
			var one [1]byte
			m, e := s.src.Read(one[:])
			for m == 0 && e == nil {
				m, e = s.src.Read(one[:])
			}
			switch {
			case m > 0:
				err = fmt.Errorf("object longer than its size: %w", cse.ErrMalformed)
			case e != io.EOF:
				err = e
			}
		} else if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = fmt.Errorf("object ended at %d of %d: %w", next, s.size, cse.ErrTruncated)
		}

		s.mu.Lock()
		if s.err != nil { // closed meanwhile
			s.drop(c)
			s.mu.Unlock()
			return
		}
		if err != nil {
			s.drop(c)
			s.err = err
		} else {
			c.buf = buf
			s.chunks = append(s.chunks, c)
			s.served = append(s.served, 0)
			s.end += n
			s.trim()
			if s.end == s.size {
				s.done = true
				s.err = io.EOF
				if s.onVerify != nil {
					s.onVerify()
				}
			}
		}
		s.cond.Broadcast()
		s.mu.Unlock()
		if err != nil || s.done {
			return
		}
	}
}

// readAt returns the bytes [off, off+n) as a reply that points into the
// stream's chunks. ok is false when off is outside what the stream can serve
// (behind the kept chunks, or too far ahead).
func (s *seqReader) readAt(ctx context.Context, off, n int64) (res *chunkResult, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < s.start || off > s.end+max(s.readAhead, waitAhead) {
		return nil, false, nil
	}
	want := off + n
	if want > s.pos {
		s.pos = want
		s.cond.Broadcast()
	}
	for s.end < want && s.err == nil {
		s.cond.Wait()
	}
	if s.end < want {
		if s.err == errHandleClosed {
			return nil, false, errHandleClosed
		}
		return nil, false, s.err
	}
	if off < s.start {
		return nil, false, nil // dropped while waiting
	}
	res = &chunkResult{}
	pos := s.start
	for i, c := range s.chunks {
		cend := pos + int64(len(c.buf))
		if cend > off && pos < want {
			from := max(off, pos)
			to := min(want, cend)
			res.slices = append(res.slices, c.buf[from-pos:to-pos])
			c.refs.Add(1)
			res.held = append(res.held, c)
			s.served[i] += to - from
		}
		pos = cend
	}
	s.trim()
	return res, true, nil
}

// trim drops the chunks the reader is done with: those read whole, and any
// further than keepBehind behind the furthest read (a read the kernel never
// sent). The last chunk stays, for reads that end there. s.mu is held.
func (s *seqReader) trim() {
	for len(s.chunks) > 1 {
		n := int64(len(s.chunks[0].buf))
		end := s.start + n
		if !(s.served[0] >= n && end <= s.pos) && end >= s.pos-keepBehind {
			return
		}
		s.start = end
		s.drop(s.chunks[0])
		s.chunks, s.served = s.chunks[1:], s.served[1:]
	}
}

// drop lets go of the stream's reference to c and of its budget.
func (s *seqReader) drop(c *chunk) {
	s.budget.Release(c.cost)
	c.cost = 0
	c.release()
}

func (s *seqReader) close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil || s.err == io.EOF {
		s.err = errHandleClosed
	}
	for _, c := range s.chunks {
		s.drop(c)
	}
	s.chunks, s.served = nil, nil
	s.cond.Broadcast()
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
