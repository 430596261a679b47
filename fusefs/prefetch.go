package fusefs

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// readWindow is how much a stream fetches ahead of its reader, in bytes of
// ranged GETs scheduled and not yet consumed. It starts small, so that a
// short read costs one small request, and grows fourfold each time the
// reader catches up with the fetches (it had to wait for the next range:
// the store, not the reader, is the bottleneck), up to max. (Doubling took
// seven waits, about a second on a store 20 ms away, to open 16 ranges:
// the remote bench read 1 GiB in 2.40-2.46 s, against 1.95-2.05 s now and
// the SDK's 1.61; eightfold was no faster.) A seek shrinks it
// back to where it started. The ranges themselves grow from first to
// rangeMax bytes, doubling with each one scheduled.
type readWindow struct {
	first, rangeMax, max int64
	size                 int64 // current window
	next                 int64 // size of the next range
}

func newReadWindow(first, rangeMax, limit int64) readWindow {
	first = min(first, rangeMax)
	return readWindow{first: first, rangeMax: rangeMax, max: max(limit, first), size: first, next: first}
}

// fits reports whether a range of n bytes may be scheduled with queued
// bytes already scheduled: the first always may, so the stream progresses.
func (w *readWindow) fits(queued, n int64) bool { return queued == 0 || queued+n <= w.size }

// scheduled records that a range was scheduled: the next is larger.
func (w *readWindow) scheduled() { w.next = min(2*w.next, w.rangeMax) }

// grow quadruples the window: the reader waited for a range.
func (w *readWindow) grow() { w.size = min(4*w.size, w.max) }

// shrink returns the window and the range size to where they started.
func (w *readWindow) shrink() { w.size, w.next = w.first, w.first }

// prefetchReader reads [off, size) of an object as one in-order stream,
// fetching it as ranged GETs pinned to the ETag, several at once, as far
// ahead as its readWindow. At most parallel ranges are in flight or
// buffered. The first range scheduled on an empty queue is outside the
// memory budget (so every stream progresses); the others come from the
// budget, within this stream's fair share of it (Budget.TryAcquireShare):
// when the budget says no, the window stops growing. So a stream holds at
// most min(window, parallel*rangeMax) bytes.
type prefetchReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	store  objectstore.Store
	key    string
	pin    *etagPin
	end    int64

	next     int64 // start of the next range to schedule
	win      readWindow
	queue    []*fetch // scheduled, in order
	queued   int64    // bytes of the ranges in queue
	held     int64    // budget taken by queue and curBuf
	parallel int
	cur      []byte
	curBuf   []byte // the pooled buffer cur points into
	curCost  int64  // what curBuf took from budget
	budget   *objectstore.Budget
	err      error
	seeked   atomic.Bool // shrink the window at the next schedule
	closed   bool
	onWait   func(waiting bool) // tests: called around a wait for a range
}

type fetch struct {
	done chan struct{}
	n    int64
	data []byte
	err  error
	cost int64 // taken from the budget
}

// rangePool recycles the rangeMax-sized range buffers: fresh ones would
// be zeroed by the allocator only to be overwritten.
// It holds pointers, so that Put stores no slice header in an interface.
var rangePool = sync.Pool{New: func() any { b := make([]byte, rangeMax); return &b }}

func getRange(n int64) []byte {
	if n == rangeMax {
		return *rangePool.Get().(*[]byte)
	}
	return make([]byte, n)
}

func putRange(b []byte) {
	if cap(b) == rangeMax {
		b = b[:rangeMax]
		rangePool.Put(&b)
	}
}

// streamFirst is the first range of a stream: one kernel read-ahead (1 MiB)
// and a bit.
const streamFirst = 1<<20 + 128<<10

// newPrefetchReader streams [off, size) of key with up to parallel ranges
// of up to rangeMax bytes in flight.
func newPrefetchReader(ctx context.Context, store objectstore.Store, key string, pin *etagPin, off, size, rangeMax int64, parallel int, budget *objectstore.Budget) *prefetchReader {
	ctx, cancel := context.WithCancel(ctx)
	parallel = max(parallel, 1)
	budget.Join()
	return &prefetchReader{ctx: ctx, cancel: cancel, store: store, key: key, pin: pin, end: size,
		next: off, win: newReadWindow(streamFirst, rangeMax, int64(parallel)*rangeMax), parallel: parallel, budget: budget}
}

// seek tells the stream that its reader has jumped elsewhere: it fetches
// with a small window again until the reader catches up. Safe to call from
// any goroutine.
func (p *prefetchReader) seek() { p.seeked.Store(true) }

func (p *prefetchReader) schedule() {
	if p.seeked.Swap(false) {
		p.win.shrink()
	}
	for len(p.queue) < p.parallel && p.next < p.end {
		// Ranges end on rangeAlign boundaries where they can, so that none
		// starts or ends inside a block of the store's (MinIO reads, and
		// checks, whole 1 MiB blocks: a range ending mid-block costs that
		// block twice).
		n := p.win.next
		if e := (p.next + n) / rangeAlign * rangeAlign; e > p.next {
			n = e - p.next
		}
		n = min(n, p.end-p.next)
		if !p.win.fits(p.queued, n) {
			return
		}
		f := &fetch{done: make(chan struct{}), n: n}
		if len(p.queue) > 0 {
			if !p.budget.TryAcquireShare(n, p.held) {
				return
			}
			f.cost = n
			p.held += n
		}
		go p.get(f, p.next, n)
		p.queue = append(p.queue, f)
		p.queued += n
		p.next += n
		p.win.scheduled()
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
	var rc io.ReadCloser
	err := p.pin.do(ctx, func(etag string) (err error) {
		rc, _, err = p.store.Get(ctx, p.key, objectstore.GetOptions{Offset: off, Length: n, IfMatch: etag})
		return err
	})
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
		default:
			// The reader caught up with the fetches: fetch further ahead.
			p.win.grow()
			p.schedule()
			if p.onWait != nil {
				p.onWait(true)
			}
			select {
			case <-f.done:
			case <-p.ctx.Done():
				p.err = p.ctx.Err()
				return nil, p.err
			}
			if p.onWait != nil {
				p.onWait(false)
			}
		}
		p.queue = p.queue[1:]
		p.queued -= f.n
		if f.err != nil {
			p.release(f.cost)
			p.err = f.err
			return nil, p.err
		}
		putRange(p.curBuf)
		p.release(p.curCost)
		p.cur, p.curBuf, p.curCost = f.data, f.data, f.cost
		p.schedule()
	}
	n = min(n, len(p.cur))
	b := p.cur[:n:n]
	p.cur = p.cur[n:]
	return b, nil
}

// release gives n bytes back to the budget.
func (p *prefetchReader) release(n int64) {
	p.budget.Release(n)
	p.held -= n
}

// Close stops the fetches in flight; later calls do nothing.
func (p *prefetchReader) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	p.cancel()
	for _, f := range p.queue {
		<-f.done
		putRange(f.data)
		p.release(f.cost)
	}
	p.queue, p.queued = nil, 0
	putRange(p.curBuf)
	p.release(p.curCost)
	p.cur, p.curBuf, p.curCost = nil, nil, 0
	p.budget.Leave()
	return nil
}
