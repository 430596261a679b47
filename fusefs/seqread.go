package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

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
