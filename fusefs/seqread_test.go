package fusefs

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/csefs/csefs/objectstore"
)

func seqData(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func joined(res *chunkResult) []byte {
	var out []byte
	for _, s := range res.slices {
		out = append(out, s...)
	}
	return out
}

// Reads in any order within the window, from several goroutines, get the
// right bytes, as the kernel's concurrent read-ahead READs do.
func TestSeqReaderOutOfOrder(t *testing.T) {
	data := seqData(9*chunkSize + 12345)
	s := newSeqReader(bytes.NewReader(data), io.NopCloser(nil), int64(len(data)), 4*chunkSize, nil, nil)
	defer s.close()
	const req = 128 << 10
	var offs []int64
	for off := int64(0); off < int64(len(data)); off += req {
		offs = append(offs, off)
	}
	// Shuffle within groups of 16 requests (2 MiB), like read-ahead windows.
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(offs); i += 16 {
		g := offs[i:min(i+16, len(offs))]
		r.Shuffle(len(g), func(a, b int) { g[a], g[b] = g[b], g[a] })
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, off := range offs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			n := min(int64(req), int64(len(data))-off)
			res, ok, err := s.readAt(context.Background(), off, n)
			if err != nil || !ok {
				t.Errorf("readAt(%d): ok=%v err=%v", off, ok, err)
				return
			}
			defer res.Done()
			if res.Size() != int(n) || !bytes.Equal(joined(res), data[off:off+n]) {
				t.Errorf("readAt(%d): wrong bytes", off)
			}
			if got, _ := res.Bytes(nil); !bytes.Equal(got, data[off:off+n]) {
				t.Errorf("readAt(%d): Bytes differs from Slices", off)
			}
		})
	}
	waitOrFail(t, &wg, "the concurrent readAt calls")
}

// A reply keeps its chunks alive after the stream has moved past them and
// after the stream is closed; the chunks are recycled only after Done.
func TestSeqReaderReplyHoldsChunks(t *testing.T) {
	data := seqData(6 * chunkSize)
	s := newSeqReader(bytes.NewReader(data), io.NopCloser(nil), int64(len(data)), 2*chunkSize, nil, nil)
	res, ok, err := s.readAt(context.Background(), chunkSize-10, 20) // spans chunks 0 and 1
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if len(res.held) != 2 {
		t.Fatalf("reply holds %d chunks, want 2", len(res.held))
	}
	held := append([]*chunk(nil), res.held...)
	// Read the rest, so that the stream drops chunks 0 and 1.
	for off := int64(0); off < int64(len(data)); off += chunkSize {
		r2, ok, err := s.readAt(context.Background(), off, chunkSize)
		if err != nil || !ok {
			t.Fatalf("readAt(%d): %v %v", off, ok, err)
		}
		r2.Done()
	}
	s.mu.Lock()
	start := s.start
	s.mu.Unlock()
	if start < 2*chunkSize {
		t.Fatalf("stream still holds chunk 1 (start %d): the test proves nothing", start)
	}
	s.close()
	for i, c := range held {
		if got := c.refs.Load(); got != 1 {
			t.Errorf("chunk %d: refs = %d after the stream let go, want 1 (the reply's)", i, got)
		}
	}
	if !bytes.Equal(joined(res), data[chunkSize-10:chunkSize+10]) {
		t.Error("reply's bytes changed while it was held")
	}
	res.Done()
	res.Done() // idempotent
	for i, c := range held {
		if got := c.refs.Load(); got != 0 {
			t.Errorf("chunk %d: refs = %d after Done, want 0", i, got)
		}
	}
}

type failingTail struct {
	r   io.Reader
	err error
}

func (f *failingTail) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// The chunk with the last bytes is served only once the source ended
// cleanly (the GCM tag verified): a failing end fails the read.
func TestSeqReaderLastChunkWaitsForEnd(t *testing.T) {
	data := seqData(3*chunkSize + 100)
	bad := errors.New("tag mismatch")
	s := newSeqReader(&failingTail{r: bytes.NewReader(data), err: bad}, io.NopCloser(nil), int64(len(data)), 4*chunkSize, nil, nil)
	defer s.close()
	res, ok, err := s.readAt(context.Background(), 0, chunkSize)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	res.Done()
	if _, _, err := s.readAt(context.Background(), 3*chunkSize, 100); !errors.Is(err, bad) {
		t.Errorf("read of the last chunk: err = %v, want the source's failure", err)
	}
}

// With the budget spent, a stream still serves every byte, reading ahead
// only seqMinChunks; it never takes more than the budget and gives all of
// it back when closed.
func TestSeqReaderBudget(t *testing.T) {
	for _, limit := range []int64{1, 3 * chunkSize} {
		b := objectstore.NewBudget(limit)
		data := seqData(12*chunkSize + 77)
		s := newSeqReader(bytes.NewReader(data), io.NopCloser(nil), int64(len(data)), 8*chunkSize, b, nil)
		var got []byte
		for off := int64(0); off < int64(len(data)); off += 256 << 10 {
			n := min(256<<10, int64(len(data))-off)
			res, ok, err := s.readAt(context.Background(), off, n)
			if err != nil || !ok {
				t.Fatalf("limit %d: readAt(%d): %v %v", limit, off, ok, err)
			}
			got = append(got, joined(res)...)
			res.Done()
			if u := b.Used(); u > limit {
				t.Fatalf("limit %d: budget used %d", limit, u)
			}
			s.mu.Lock()
			if kept := len(s.chunks); kept > seqMinChunks+int(limit/chunkSize)+1 {
				t.Errorf("limit %d: %d chunks kept", limit, kept)
			}
			s.mu.Unlock()
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("limit %d: wrong bytes", limit)
		}
		s.close()
		if u := b.Used(); u != 0 {
			t.Errorf("limit %d: budget used %d after close", limit, u)
		}
	}
}

// localObject stores data as "obj" in a new local store.
func localObject(t *testing.T, data []byte) (objectstore.Store, *objectstore.Info) {
	t.Helper()
	st, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Put(context.Background(), "obj", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st, info
}

// A prefetch stream fetches ranges beyond the first only as the budget
// allows, still delivers the whole object, and gives the budget back.
func TestPrefetchBudget(t *testing.T) {
	data := seqData(5<<20 + 3)
	st, info := localObject(t, data)
	for _, limit := range []int64{1, 2 << 20} {
		b := objectstore.NewBudget(limit)
		p := newPrefetchReader(context.Background(), st, "obj", fixedPin(info.ETag), 0, int64(len(data)), 1<<20, 4, b)
		var got []byte
		buf := make([]byte, 100<<10)
		for {
			n, err := p.Read(buf)
			got = append(got, buf[:n]...)
			if u := b.Used(); u > limit {
				t.Fatalf("limit %d: budget used %d", limit, u)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if limit == 1 && len(p.queue) > 1 {
				t.Fatalf("limit 1: %d ranges in flight", len(p.queue))
			}
		}
		p.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("limit %d: wrong bytes", limit)
		}
		if u := b.Used(); u != 0 {
			t.Errorf("limit %d: budget used %d after Close", limit, u)
		}
	}
}

// rangeRecorder records the ranges asked of a store.
type rangeRecorder struct {
	objectstore.Store
	mu     sync.Mutex
	ranges [][2]int64
}

func (r *rangeRecorder) Get(ctx context.Context, key string, o objectstore.GetOptions) (io.ReadCloser, *objectstore.Info, error) {
	r.mu.Lock()
	r.ranges = append(r.ranges, [2]int64{o.Offset, o.Length})
	r.mu.Unlock()
	return r.Store.Get(ctx, key, o)
}

// A prefetch stream starts with a small range, grows them to its chunk, ends
// every range but the last on a rangeAlign boundary, and covers the object
// exactly once, in order; read through Next (the lending path) too.
func TestPrefetchRanges(t *testing.T) {
	data := seqData(37<<20 + 5)
	local, info := localObject(t, data)
	st := &rangeRecorder{Store: local}
	p := newPrefetchReader(context.Background(), st, "obj", fixedPin(info.ETag), 0, int64(len(data)), rangeMax, streamParallel, nil)
	var got []byte
	for {
		b, err := p.Next(300 << 10)
		got = append(got, b...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	slices.SortFunc(st.ranges, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	if first := st.ranges[0]; first != [2]int64{0, 1 << 20} {
		t.Errorf("first range %v, want [0 1MiB]", first)
	}
	next := int64(0)
	for i, r := range st.ranges {
		if r[0] != next || r[1] <= 0 || r[1] > rangeMax {
			t.Fatalf("range %d is %v after %d", i, r, next)
		}
		next = r[0] + r[1]
		if next != int64(len(data)) && next%rangeAlign != 0 {
			t.Errorf("range %d %v ends off a %d boundary", i, r, rangeAlign)
		}
	}
	if next != int64(len(data)) {
		t.Fatalf("ranges end at %d of %d", next, len(data))
	}
}
