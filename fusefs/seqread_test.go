package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
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
	s := newSeqReader(bytes.NewReader(data), io.NopCloser(nil), int64(len(data)), 4*chunkSize, nil)
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
	wg.Wait()
}

// A reply keeps its chunks alive after the stream has moved past them and
// after the stream is closed; the chunks are recycled only after Done.
func TestSeqReaderReplyHoldsChunks(t *testing.T) {
	data := seqData(6 * chunkSize)
	s := newSeqReader(bytes.NewReader(data), io.NopCloser(nil), int64(len(data)), 2*chunkSize, nil)
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
	s := newSeqReader(&failingTail{r: bytes.NewReader(data), err: bad}, io.NopCloser(nil), int64(len(data)), 4*chunkSize, nil)
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
