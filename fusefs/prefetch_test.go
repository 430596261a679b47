package fusefs

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"

	"github.com/csefs/csefs/objectstore"
)

// The window starts at its first range, doubles each time the reader
// catches up, stops at its maximum, and a seek takes it (and the range
// size) back to the start.
func TestReadWindowGrowsAndShrinks(t *testing.T) {
	w := newReadWindow(1<<20, 8<<20, 128<<20)
	if w.size != 1<<20 || w.next != 1<<20 {
		t.Fatalf("start: size %d next %d", w.size, w.next)
	}
	if !w.fits(0, 64<<20) {
		t.Fatal("an empty queue must always take a range")
	}
	if w.fits(1<<20, 1<<20) {
		t.Fatal("a second range fits the first window")
	}
	var sizes []int64
	for range 10 {
		w.grow()
		sizes = append(sizes, w.size)
	}
	want := []int64{4 << 20, 16 << 20, 64 << 20, 128 << 20, 128 << 20, 128 << 20, 128 << 20, 128 << 20, 128 << 20, 128 << 20}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("growth %v, want %v", sizes, want)
		}
	}
	for range 5 {
		w.scheduled()
	}
	if w.next != 8<<20 {
		t.Fatalf("range size %d after 5 ranges, want the chunk (8 MiB)", w.next)
	}
	if !w.fits(120<<20, 8<<20) || w.fits(121<<20, 8<<20) {
		t.Fatal("fits disagrees with the grown window")
	}
	w.shrink()
	if w.size != 1<<20 || w.next != 1<<20 {
		t.Fatalf("after seek: size %d next %d, want the first range", w.size, w.next)
	}
}

// A budget is shared fairly: a user's share is the limit over the users
// joined, and the total never exceeds the limit.
func TestBudgetShare(t *testing.T) {
	b := objectstore.NewBudget(100)
	b.Join()
	if !b.TryAcquireShare(80, 0) {
		t.Fatal("one user: 80 of 100 refused")
	}
	b.Join()
	if b.TryAcquireShare(10, 80) {
		t.Fatal("two users: the first got past its share of 50")
	}
	if !b.TryAcquireShare(20, 0) {
		t.Fatal("two users: the second was refused 20 with 20 free")
	}
	if b.TryAcquireShare(1, 20) {
		t.Fatal("the limit was exceeded")
	}
	b.Release(80)
	if !b.TryAcquireShare(30, 20) {
		t.Fatal("the second user was refused its share once the first let go")
	}
	b.Release(50)
	b.Leave()
	b.Leave()
	if b.Used() != 0 {
		t.Fatalf("used %d", b.Used())
	}
}

// slowStore is a store as slow as the reader is fast: a Get completes only
// while some reader waits for a range (prefetchReader.onWait), so every
// reader keeps up with its fetches, whatever the scheduling.
type slowStore struct {
	objectstore.Store
	mu      sync.Mutex
	cond    *sync.Cond
	waiting int
}

func newSlowStore(s objectstore.Store) *slowStore {
	st := &slowStore{Store: s}
	st.cond = sync.NewCond(&st.mu)
	return st
}

func (s *slowStore) Get(ctx context.Context, key string, o objectstore.GetOptions) (io.ReadCloser, *objectstore.Info, error) {
	s.mu.Lock()
	for s.waiting == 0 {
		s.cond.Wait()
	}
	s.mu.Unlock()
	return s.Store.Get(ctx, key, o)
}

func (s *slowStore) onWait(w bool) {
	s.mu.Lock()
	if w {
		s.waiting++
	} else {
		s.waiting--
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// A reader that always waits for its ranges (it keeps up) grows its stream
// to many ranges in flight; the whole object arrives, in order; the stream
// stays within its budget and gives it back. Two streams on one budget
// each stay within half of it.
func TestPrefetchWindowGrowsWithinBudget(t *testing.T) {
	data := seqData(96<<20 + 7)
	local, info := localObject(t, data)
	st := newSlowStore(local)
	const limit = 24 << 20
	b := objectstore.NewBudget(limit)
	read := func(p *prefetchReader, check func()) []byte {
		var got []byte
		for {
			c, err := p.Next(1 << 20)
			got = append(got, c...)
			check()
			if err == io.EOF {
				return got
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	p := newPrefetchReader(context.Background(), st, "obj", fixedPin(info.ETag), 0, int64(len(data)), 4<<20, 16, b)
	p.onWait = st.onWait
	maxQueue := 0
	got := read(p, func() {
		maxQueue = max(maxQueue, len(p.queue))
		if u := b.Used(); u > limit {
			t.Fatalf("budget used %d > %d", u, limit)
		}
		if p.held > limit {
			t.Fatalf("stream holds %d", p.held)
		}
	})
	p.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	// 24 MiB of budget, the range being read included, and one range
	// outside it: at most 7 ranges of 4 MiB; a reader that keeps up grows
	// the window to use the budget (5 while it holds a range).
	if maxQueue < 5 || maxQueue > 7 {
		t.Errorf("at most %d ranges scheduled at once, want 5..7 (grown, within the budget)", maxQueue)
	}
	if b.Used() != 0 {
		t.Errorf("budget used %d after Close", b.Used())
	}

	// Two streams: each within its share, 12 MiB.
	p1 := newPrefetchReader(context.Background(), st, "obj", fixedPin(info.ETag), 0, int64(len(data)), 4<<20, 16, b)
	p2 := newPrefetchReader(context.Background(), st, "obj", fixedPin(info.ETag), 0, int64(len(data)), 4<<20, 16, b)
	p1.onWait, p2.onWait = st.onWait, st.onWait
	var wg sync.WaitGroup
	var mu sync.Mutex
	var results [][]byte
	for _, p := range []*prefetchReader{p1, p2} {
		wg.Go(func() {
			g := read(p, func() {
				if p.held > limit/2 {
					t.Errorf("a stream holds %d, more than its share %d", p.held, limit/2)
				}
			})
			mu.Lock()
			results = append(results, g)
			mu.Unlock()
		})
	}
	wg.Wait()
	p1.Close()
	p2.Close()
	for _, g := range results {
		if !bytes.Equal(g, data) {
			t.Fatal("wrong bytes with two streams")
		}
	}
	if b.Used() != 0 {
		t.Errorf("budget used %d after two streams", b.Used())
	}
}

// A seek shrinks the stream's window: the ranges scheduled next are small
// again and few at once.
func TestPrefetchSeekShrinks(t *testing.T) {
	data := seqData(64<<20 + 1)
	local, info := localObject(t, data)
	p := newPrefetchReader(context.Background(), local, "obj", fixedPin(info.ETag), 0, int64(len(data)), 4<<20, 16, nil)
	defer p.Close()
	for range 8 {
		if _, err := p.Next(4 << 20); err != nil {
			t.Fatal(err)
		}
	}
	if p.win.size <= streamFirst {
		p.win.grow() // a fast store never made the reader wait
	}
	if p.win.size <= streamFirst {
		t.Fatalf("window %d did not grow", p.win.size)
	}
	p.seek()
	p.schedule()
	if p.win.size != streamFirst {
		t.Fatalf("window %d after a seek, want %d", p.win.size, streamFirst)
	}
	if p.win.next > 2*streamFirst {
		t.Fatalf("next range %d after a seek, want small", p.win.next)
	}
}
