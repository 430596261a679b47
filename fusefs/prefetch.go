package fusefs

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// prefetchReader reads [off, size) of an object as one in-order stream,
// fetching it as ranged GETs pinned to the ETag, several at once. The first
// range is small, so a short read costs one small request; later ranges grow
// to chunk bytes. At most parallel ranges are in flight or buffered, which
// bounds its memory to parallel*chunk.
type prefetchReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	store  objectstore.Store
	key    string
	etag   string
	end    int64

	next     int64 // start of the next range to schedule
	nextSize int64
	chunk    int64
	queue    []*fetch // scheduled, in order
	parallel int
	cur      []byte
	curBuf   []byte // the pooled buffer cur points into
	curCost  int64  // what curBuf took from budget
	budget   *objectstore.Budget
	err      error
}

type fetch struct {
	done chan struct{}
	data []byte
	err  error
	cost int64 // taken from the budget
}

// rangePool recycles the streamChunk-sized range buffers: fresh ones would
// be zeroed by the allocator only to be overwritten.
var rangePool = sync.Pool{New: func() any { return make([]byte, streamChunk) }}

func getRange(n int64) []byte {
	if n == streamChunk {
		return rangePool.Get().([]byte)
	}
	return make([]byte, n)
}

func putRange(b []byte) {
	if cap(b) == streamChunk {
		rangePool.Put(b[:streamChunk])
	}
}

// Ranges beyond the first in flight come from budget; when it is spent,
// fewer ranges are fetched at once.
func newPrefetchReader(ctx context.Context, store objectstore.Store, key, etag string, off, size, chunk int64, parallel int, budget *objectstore.Budget) *prefetchReader {
	ctx, cancel := context.WithCancel(ctx)
	first := min(int64(1<<20+128<<10), chunk) // one kernel read-ahead and a bit
	return &prefetchReader{ctx: ctx, cancel: cancel, store: store, key: key, etag: etag, end: size,
		next: off, nextSize: first, chunk: chunk, parallel: max(parallel, 1), budget: budget}
}

func (p *prefetchReader) schedule() {
	for len(p.queue) < p.parallel && p.next < p.end {
		// Ranges end on rangeAlign boundaries where they can, so that none
		// starts or ends inside a block of the store's (MinIO reads, and
		// checks, whole 1 MiB blocks: a range ending mid-block costs that
		// block twice).
		n := p.nextSize
		if e := (p.next + n) / rangeAlign * rangeAlign; e > p.next {
			n = e - p.next
		}
		n = min(n, p.end-p.next)
		f := &fetch{done: make(chan struct{})}
		if len(p.queue) > 0 {
			if !p.budget.TryAcquire(n) {
				return
			}
			f.cost = n
		}
		go p.get(f, p.next, n)
		p.queue = append(p.queue, f)
		p.next += n
		p.nextSize = min(2*p.nextSize, p.chunk)
	}
}

// rangeAlign is the boundary the ranges of a stream end on.
const rangeAlign = 1 << 20

// rangeTimeout bounds one ranged GET, body included: a stalled connection
// fails the read (EIO) instead of hanging it, and the reader waiting on it,
// forever. 8 MiB in two minutes is about 70 KB/s.
const rangeTimeout = 2 * time.Minute

func (p *prefetchReader) get(f *fetch, off, n int64) {
	defer close(f.done)
	ctx, cancel := context.WithTimeout(p.ctx, rangeTimeout)
	defer cancel()
	rc, _, err := p.store.Get(ctx, p.key, objectstore.GetOptions{Offset: off, Length: n, IfMatch: p.etag})
	if err != nil {
		f.err = err
		return
	}
	defer rc.Close()
	buf := getRange(n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		putRange(buf)
		f.err = fmt.Errorf("ranged read at %d: %w", off, err)
		return
	}
	f.data = buf
}

var _ cse.Lender = (*prefetchReader)(nil)

func (p *prefetchReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	cur, err := p.Next(len(b))
	return copy(b, cur), err
}

// Next implements cse.Lender: the decryptor decrypts straight out of the
// range buffers, which saves copying every byte of a sequential read once.
func (p *prefetchReader) Next(n int) ([]byte, error) {
	for len(p.cur) == 0 {
		if p.err != nil {
			return nil, p.err
		}
		p.schedule()
		if len(p.queue) == 0 {
			p.err = io.EOF
			return nil, io.EOF
		}
		f := p.queue[0]
		select {
		case <-f.done:
		case <-p.ctx.Done():
			p.err = p.ctx.Err()
			return nil, p.err
		}
		p.queue = p.queue[1:]
		if f.err != nil {
			p.budget.Release(f.cost)
			p.err = f.err
			return nil, p.err
		}
		putRange(p.curBuf)
		p.budget.Release(p.curCost)
		p.cur, p.curBuf, p.curCost = f.data, f.data, f.cost
		p.schedule()
	}
	n = min(n, len(p.cur))
	b := p.cur[:n:n]
	p.cur = p.cur[n:]
	return b, nil
}

// Close stops the fetches in flight.
func (p *prefetchReader) Close() error {
	p.cancel()
	for _, f := range p.queue {
		<-f.done
		putRange(f.data)
		p.budget.Release(f.cost)
	}
	p.queue = nil
	putRange(p.curBuf)
	p.budget.Release(p.curCost)
	p.cur, p.curBuf, p.curCost = nil, nil, 0
	return nil
}
