package keycache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/cse/providertest"
)

// aheadFake is an in-memory inner provider. Every key it returns is recorded
// (the very slice handed out), so tests can check what was zeroed.
type aheadFake struct {
	mu      sync.Mutex
	n       int
	keys    [][]byte
	reqs    []cse.KeyRequest
	failAt  map[int]error // call number (1-based) → error
	failAll error
	// gate, if set, blocks calls from the n-th on (gateFrom) until it is
	// closed or their context ends; entered receives one value per blocked
	// call.
	gate     chan struct{}
	gateFrom int
	entered  chan struct{}
	// careless makes the fake return the request's own MatDesc map, after
	// writing into it, and keep (and later check) every cse.WrappedKey it
	// returned: a provider that aliases whatever it is given.
	careless bool
	handed   []cse.WrappedKey
	blobs    []string // copies of handed[i].Blob as returned
}

func (f *aheadFake) GenerateKey(ctx context.Context, req cse.KeyRequest) ([]byte, cse.WrappedKey, error) {
	f.mu.Lock()
	f.n++
	n := f.n
	f.reqs = append(f.reqs, cse.KeyRequest{CEKAlg: req.CEKAlg, MatDesc: maps.Clone(req.MatDesc), Object: req.Object, Key: req.Key})
	err := f.failAll
	if e, ok := f.failAt[n]; ok {
		err = e
	}
	gate := f.gate
	if n < f.gateFrom {
		gate = nil
	}
	f.mu.Unlock()
	if gate != nil {
		f.entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, cse.WrappedKey{}, ctx.Err()
		}
	}
	if err != nil {
		return nil, cse.WrappedKey{}, err
	}
	key := testBytes(uint64(1000+n), cse.KeySize)
	md := maps.Clone(req.MatDesc)
	if f.careless && req.MatDesc != nil {
		md = req.MatDesc
	}
	if md == nil {
		md = map[string]string{}
	}
	md["fake-cek"] = req.CEKAlg
	w := cse.WrappedKey{WrapAlg: "fake", CEKAlg: req.CEKAlg, Blob: []byte(fmt.Sprintf("blob-%d", n)), MatDesc: md}
	f.mu.Lock()
	f.keys = append(f.keys, key)
	if f.careless {
		f.handed = append(f.handed, w)
		f.blobs = append(f.blobs, string(w.Blob))
	}
	f.mu.Unlock()
	return key, w, nil
}

func (f *aheadFake) DecryptKey(_ context.Context, w cse.WrappedKey) ([]byte, error) {
	return nil, fmt.Errorf("fake decrypt %s: %w", w.Blob, cse.ErrKeyAccess)
}

func (f *aheadFake) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// generated returns the keys the fake has returned so far.
func (f *aheadFake) generated() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.keys...)
}

func isZero(b []byte) bool { return len(b) > 0 && bytes.Count(b, []byte{0}) == len(b) }

// fakeClock is the injected now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestAhead(t *testing.T, f cse.Provider, opt KeyAheadOptions) (*KeyAhead, *fakeClock) {
	t.Helper()
	a := NewKeyAhead(f, opt)
	clk := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	a.now = clk.now
	t.Cleanup(a.Close)
	return a, clk
}

// settle waits until no refill runs. Only call it when no GenerateKey is in
// progress: every refill is started (wg.Add) before its GenerateKey returns.
func (a *KeyAhead) settle() { a.wg.Wait() }

func gen(t *testing.T, a *KeyAhead, md map[string]string) ([]byte, cse.WrappedKey) {
	t.Helper()
	k, w, err := a.GenerateKey(context.Background(), cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, MatDesc: md})
	if err != nil {
		t.Fatal(err)
	}
	return k, w
}

func wantStats(t *testing.T, a *KeyAhead, hits, misses, wasted uint64, pooled int) {
	t.Helper()
	s := a.Stats()
	if s.Hits != hits || s.Misses != misses || s.Wasted != wasted || s.Pooled != pooled {
		t.Fatalf("stats %+v, want hits %d misses %d wasted %d pooled %d", s, hits, misses, wasted, pooled)
	}
}

func TestKeyAheadHitsAfterFirstMiss(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 3})
	md := map[string]string{"JobflowId": "j-1"}

	k1, w1, err := a.GenerateKey(context.Background(), cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, MatDesc: md, Object: "s3://b/k", Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1, f.generated()[0]) || string(w1.Blob) != "blob-1" {
		t.Fatalf("first key is not the synchronous one: blob %s", w1.Blob)
	}
	a.settle()
	if got := f.calls(); got != 4 {
		t.Fatalf("%d inner calls after the first request, want 1 + depth 3", got)
	}
	wantStats(t, a, 0, 1, 0, 3)

	// The next three are served from the pool, oldest first, and each take
	// refills one.
	for i := 2; i <= 4; i++ {
		k, w := gen(t, a, md)
		if want := fmt.Sprintf("blob-%d", i); string(w.Blob) != want {
			t.Fatalf("take %d: got %s, want %s", i, w.Blob, want)
		}
		if !bytes.Equal(k, testBytes(uint64(1000+i), cse.KeySize)) {
			t.Fatalf("take %d: key does not belong to its blob", i)
		}
		if w.MatDesc["JobflowId"] != "j-1" || w.MatDesc["fake-cek"] != cse.CEKAlgGCM || w.CEKAlg != cse.CEKAlgGCM {
			t.Fatalf("take %d: wrapped %+v", i, w)
		}
		a.settle()
	}
	wantStats(t, a, 3, 1, 0, 3)
	if got := f.calls(); got != 7 {
		t.Fatalf("%d inner calls, want 7 (1 miss, 3 + 3 refills)", got)
	}
	// Refills ask for the group only: no object, no key.
	for i, r := range f.reqs {
		if r.CEKAlg != cse.CEKAlgGCM || !maps.Equal(r.MatDesc, md) {
			t.Fatalf("inner request %d: %+v", i, r)
		}
		if i == 0 && (r.Object != "s3://b/k" || r.Key != "k") {
			t.Fatalf("the synchronous request was altered: %+v", r)
		}
		if i > 0 && (r.Object != "" || r.Key != "") {
			t.Fatalf("refill request %d names an object: %+v", i, r)
		}
	}
}

func TestKeyAheadGroups(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 2})
	reqs := []cse.KeyRequest{
		{CEKAlg: cse.CEKAlgGCM},
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a": "1"}},
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a": "2"}},
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a": "1", "b": "2"}},
		// Encodings that naive concatenation would confuse with the above.
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a": "1b2"}},
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a1": ""}},
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a": "x1:b"}},
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a": "x", "b": ""}},
		{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"a": "x", "1:b": ""}},
		{CEKAlg: cse.CEKAlgCBC, MatDesc: map[string]string{"a": "1"}},
	}
	for _, r := range reqs {
		if _, _, err := a.GenerateKey(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		a.settle()
	}
	if s := a.Stats(); s.Groups != len(reqs) || s.Pooled != 2*len(reqs) || s.Misses != uint64(len(reqs)) {
		t.Fatalf("stats %+v, want %d groups of 2", s, len(reqs))
	}
	seen := map[string]bool{}
	for round := 0; round < 2; round++ {
		for i, r := range reqs {
			// Object and Key do not matter; map order does not either.
			r.Object, r.Key = fmt.Sprintf("s3://b/%d", i), fmt.Sprintf("%d", i)
			_, w, err := a.GenerateKey(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(r.MatDesc)
			if want == nil {
				want = map[string]string{}
			}
			want["fake-cek"] = r.CEKAlg
			if !maps.Equal(w.MatDesc, want) || w.CEKAlg != r.CEKAlg {
				t.Fatalf("request %d got a key of another group: %v %s", i, w.MatDesc, w.CEKAlg)
			}
			if seen[string(w.Blob)] {
				t.Fatalf("blob %s handed out twice", w.Blob)
			}
			seen[string(w.Blob)] = true
		}
	}
	if s := a.Stats(); s.Hits != 2*uint64(len(reqs)) {
		t.Fatalf("stats %+v, want every second-round request a hit", s)
	}
}

func TestKeyAheadMapOrderSharesGroup(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 1})
	md1 := map[string]string{}
	md2 := map[string]string{}
	for i := 0; i < 20; i++ {
		md1[fmt.Sprint("k", i)] = fmt.Sprint(i)
	}
	for i := 19; i >= 0; i-- {
		md2[fmt.Sprint("k", i)] = fmt.Sprint(i)
	}
	gen(t, a, md1)
	a.settle()
	gen(t, a, md2)
	a.settle()
	wantStats(t, a, 1, 1, 0, 1)
}

func TestKeyAheadNeverHandsOutTwice(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 4})
	md := map[string]string{"m": "d"}
	const workers, each = 10, 10
	type got struct {
		key []byte
		w   cse.WrappedKey
	}
	out := make(chan got, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				k, w, err := a.GenerateKey(context.Background(), cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, MatDesc: md})
				if err != nil {
					t.Error(err)
					return
				}
				out <- got{k, w}
			}
		}()
	}
	wg.Wait()
	close(out)
	a.settle()
	keys := map[string]bool{}
	blobs := map[string]bool{}
	var all []got
	for g := range out {
		all = append(all, g)
		if isZero(g.key) {
			t.Fatalf("a handed-out key was zeroed")
		}
		if keys[string(g.key)] || blobs[string(g.w.Blob)] {
			t.Fatalf("key of %s handed out twice", g.w.Blob)
		}
		keys[string(g.key)], blobs[string(g.w.Blob)] = true, true
		if !bytes.Equal(g.key, testBytes(uint64(1000+atoiBlob(t, g.w.Blob)), cse.KeySize)) {
			t.Fatalf("key does not belong to %s", g.w.Blob)
		}
	}
	if len(all) != workers*each {
		t.Fatalf("%d keys, want %d", len(all), workers*each)
	}
	s := a.Stats()
	if s.Hits+s.Misses != workers*each || s.Pooled > 4 {
		t.Fatalf("stats %+v", s)
	}
	if int(s.Refilled)+int(s.Misses) != f.calls() {
		t.Fatalf("stats %+v, but the fake made %d keys", s, f.calls())
	}
	// Close zeroes the pool, and nothing handed out.
	a.Close()
	for _, g := range all {
		if isZero(g.key) {
			t.Fatalf("Close zeroed the handed-out key of %s", g.w.Blob)
		}
	}
}

func atoiBlob(t *testing.T, b []byte) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(string(b), "blob-%d", &n); err != nil {
		t.Fatalf("blob %q: %v", b, err)
	}
	return n
}

func TestKeyAheadExpiry(t *testing.T) {
	f := &aheadFake{}
	a, clk := newTestAhead(t, f, KeyAheadOptions{Depth: 2, MaxAge: time.Minute})
	md := map[string]string{"x": "y"}
	gen(t, a, md)
	a.settle()
	pooled := f.generated()[1:] // blob-2, blob-3
	if len(pooled) != 2 {
		t.Fatalf("%d pooled", len(pooled))
	}
	clk.advance(time.Minute - time.Nanosecond)
	_, w := gen(t, a, md) // still young: a hit
	if string(w.Blob) != "blob-2" {
		t.Fatalf("got %s, want the pooled blob-2", w.Blob)
	}
	a.settle() // refills blob-4, born now
	clk.advance(time.Nanosecond)
	// blob-3 is a minute old now: zeroed and dropped; blob-4 is served.
	_, w = gen(t, a, md)
	if string(w.Blob) != "blob-4" {
		t.Fatalf("got %s, want blob-4 (blob-3 expired)", w.Blob)
	}
	if !isZero(pooled[1]) {
		t.Fatalf("expired key not zeroed")
	}
	a.settle()
	wantStats(t, a, 2, 1, 1, 2)

	// All pooled keys expired: a miss, served by the inner provider.
	clk.advance(2 * time.Minute)
	before := f.calls()
	k, w := gen(t, a, md)
	if got := atoiBlob(t, w.Blob); got != before+1 {
		t.Fatalf("got blob-%d, want a fresh synchronous key blob-%d", got, before+1)
	}
	if isZero(k) {
		t.Fatalf("fresh key is zero")
	}
	for _, b := range f.generated()[:before] {
		if bytes.Equal(b, k) {
			t.Fatalf("an old key was returned")
		}
	}
	a.settle()
	wantStats(t, a, 2, 2, 3, 2)

	// Expired again, and the inner provider now fails: the error surfaces,
	// the keys are zeroed and the empty group is forgotten.
	clk.advance(time.Minute)
	f.mu.Lock()
	f.failAll = cse.ErrKeyAccess
	f.mu.Unlock()
	if _, _, err := a.GenerateKey(context.Background(), cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, MatDesc: md}); err != cse.ErrKeyAccess {
		t.Fatalf("err = %v", err)
	}
	for i, k := range f.generated()[before+1:] {
		if !isZero(k) {
			t.Fatalf("expired key %d not zeroed", i)
		}
	}
	if s := a.Stats(); s.Groups != 0 || s.Pooled != 0 || s.Wasted != 5 {
		t.Fatalf("stats %+v", s)
	}
}

func TestKeyAheadSweepForgetsIdleGroups(t *testing.T) {
	f := &aheadFake{}
	a, clk := newTestAhead(t, f, KeyAheadOptions{Depth: 3, MaxAge: time.Second})
	k1, _ := gen(t, a, map[string]string{"g": "1"})
	k2, _ := gen(t, a, map[string]string{"g": "2"})
	a.settle()
	a.mu.Lock()
	armed := a.timer != nil
	a.mu.Unlock()
	if !armed {
		t.Fatalf("no expiry timer armed while keys are pooled")
	}
	clk.advance(time.Second)
	a.sweep() // what the timer does
	s := a.Stats()
	if s.Pooled != 0 || s.Groups != 0 || s.Wasted != 6 {
		t.Fatalf("after the sweep: %+v", s)
	}
	for i, k := range f.generated() {
		handed := &k[0] == &k1[0] || &k[0] == &k2[0]
		if handed == isZero(k) {
			t.Fatalf("key %d (handed out: %v) zeroed: %v", i, handed, isZero(k))
		}
	}
	// Idle: nothing refills.
	if got := f.calls(); got != 8 {
		t.Fatalf("%d calls, want 8", got)
	}
}

func TestKeyAheadSynchronousErrorUnchanged(t *testing.T) {
	denied := fmt.Errorf("cse: KMS GenerateDataKey: %w", cse.ErrKeyAccess)
	f := &aheadFake{failAll: denied}
	var refillErrs []error
	a, _ := newTestAhead(t, f, KeyAheadOptions{OnError: func(err error) { refillErrs = append(refillErrs, err) }})
	_, _, err := a.GenerateKey(context.Background(), cse.KeyRequest{CEKAlg: cse.CEKAlgGCM})
	if err != denied || !errors.Is(err, cse.ErrKeyAccess) {
		t.Fatalf("err = %v, want the inner error itself", err)
	}
	a.settle()
	if f.calls() != 1 || len(refillErrs) != 0 || a.Stats().Groups != 0 {
		t.Fatalf("a failed miss started a refill: %d calls, stats %+v", f.calls(), a.Stats())
	}
}

func TestKeyAheadRefillError(t *testing.T) {
	throttled := errors.New("ThrottlingException: rate exceeded")
	f := &aheadFake{failAt: map[int]error{3: throttled, 5: throttled}}
	var mu sync.Mutex
	var refillErrs []error
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 4, OnError: func(err error) {
		mu.Lock()
		refillErrs = append(refillErrs, err)
		mu.Unlock()
	}})
	gen(t, a, nil) // call 1; refill: call 2 succeeds, call 3 fails
	a.settle()
	if len(refillErrs) != 1 || refillErrs[0] != throttled {
		t.Fatalf("OnError got %v", refillErrs)
	}
	if s := a.Stats(); s.Pooled != 1 || s.RefillErrors != 1 {
		t.Fatalf("stats %+v", s)
	}
	_, w := gen(t, a, nil) // the one pooled key; refill: call 4 ok, call 5 fails
	if string(w.Blob) != "blob-2" {
		t.Fatalf("got %s", w.Blob)
	}
	a.settle()
	if len(refillErrs) != 2 {
		t.Fatalf("OnError got %v", refillErrs)
	}
	// Inner fails from now on: the pooled key still serves, then the error
	// surfaces synchronously.
	f.mu.Lock()
	f.failAll = throttled
	f.mu.Unlock()
	if _, w := gen(t, a, nil); string(w.Blob) != "blob-4" {
		t.Fatalf("got %s", w.Blob)
	}
	a.settle()
	if _, _, err := a.GenerateKey(context.Background(), cse.KeyRequest{CEKAlg: cse.CEKAlgGCM}); err != throttled {
		t.Fatalf("err = %v, want the inner error", err)
	}
	a.settle()
	if s := a.Stats(); s.Groups != 0 || s.Pooled != 0 {
		t.Fatalf("a failed, empty group is kept: %+v", s)
	}
}

func TestKeyAheadCloseZeroesPool(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 4})
	k1, _ := gen(t, a, map[string]string{"a": "1"})
	a.settle()
	k2, _ := gen(t, a, map[string]string{"a": "1"}) // a hit, refilled
	a.settle()
	k3, _ := gen(t, a, map[string]string{"a": "2"})
	a.settle()
	handed := [][]byte{k1, k2, k3}
	all := f.generated()
	if len(all) != 11 {
		t.Fatalf("%d keys generated, want 11", len(all))
	}
	wantStats(t, a, 1, 2, 0, 8)
	a.Close()
	zeroed := 0
	for _, k := range all {
		isHanded := false
		for _, h := range handed {
			if &h[0] == &k[0] {
				isHanded = true
			}
		}
		switch {
		case isHanded && isZero(k):
			t.Fatalf("Close zeroed a key it had handed out")
		case !isHanded && !isZero(k):
			t.Fatalf("Close left a pooled key unzeroed")
		case !isHanded:
			zeroed++
		}
	}
	if zeroed != 8 {
		t.Fatalf("%d keys zeroed, want 8", zeroed)
	}
	wantStats(t, a, 1, 2, 8, 0)

	// After Close: straight to the inner provider, no refill.
	before := f.calls()
	_, w := gen(t, a, map[string]string{"a": "1"})
	a.settle()
	if got := f.calls(); got != before+1 || atoiBlob(t, w.Blob) != before+1 {
		t.Fatalf("after Close: %d calls (want %d), blob %s", got, before+1, w.Blob)
	}
	a.Close() // idempotent
}

func TestKeyAheadCloseStopsRefill(t *testing.T) {
	f := &aheadFake{gate: make(chan struct{}), gateFrom: 2, entered: make(chan struct{}, 1)}
	var calledOnError bool
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 4, RefillTimeout: time.Hour, OnError: func(error) { calledOnError = true }})
	gen(t, a, nil)
	recvOrFail(t, f.entered, "the refill in the inner provider") // the refill waits there
	closed := make(chan struct{})
	go func() {
		a.Close() // cancels it, and returns once it is done
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Minute): // a deadline, not synchronization
		close(f.gate)
		recvOrFail(t, closed, "Close after the gate opened")
		t.Fatalf("Close waited for the refill instead of cancelling it")
	}
	if calledOnError {
		t.Fatalf("a refill cancelled by Close was reported as a failure")
	}
	if s := a.Stats(); s.Pooled != 0 || s.Groups != 0 || s.RefillErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestKeyAheadRefillAfterCloseZeroed(t *testing.T) {
	// A refill whose inner call succeeds while Close runs zeroes its key.
	f := &aheadFake{gate: make(chan struct{}), gateFrom: 2, entered: make(chan struct{}, 1)}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 4})
	gen(t, a, nil)
	recvOrFail(t, f.entered, "the refill in the inner provider")
	a.mu.Lock()
	a.closed = true // as Close does first, before cancelling
	a.mu.Unlock()
	close(f.gate)
	a.settle()
	keys := f.generated()
	if len(keys) != 2 || !isZero(keys[1]) || isZero(keys[0]) {
		t.Fatalf("late refill key not zeroed (or the handed-out one was)")
	}
	if s := a.Stats(); s.Wasted != 1 || s.Pooled != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestKeyAheadNoAliasing(t *testing.T) {
	f := &aheadFake{careless: true}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 2})
	// Each request gets its own map: this fake writes into it.
	md := func() map[string]string { return map[string]string{"Path": "s3://b/k"} }
	first := md()
	gen(t, a, first)
	first["Path"] = "s3://b/changed" // the caller reuses its map
	a.settle()
	for i := 0; i < 3; i++ {
		_, w := gen(t, a, md())
		if w.MatDesc["Path"] != "s3://b/k" || w.MatDesc["evil"] != "" {
			t.Fatalf("key %d: matdesc %v", i, w.MatDesc)
		}
		// Callers mutate what they got; later keys must not see it.
		w.MatDesc["evil"] = "1"
		w.MatDesc["Path"] = "s3://b/other"
		w.Blob[0] ^= 0xff
		a.settle()
	}
	_, w := gen(t, a, md())
	if w.MatDesc["evil"] != "" || w.MatDesc["Path"] != "s3://b/k" || w.Blob[0] != 'b' {
		t.Fatalf("later key affected by a mutation: %v %q", w.MatDesc, w.Blob)
	}
	if s := a.Stats(); s.Hits != 4 {
		t.Fatalf("stats %+v, want 4 hits", s)
	}
	a.settle()
	for i, r := range f.reqs {
		// The group's template is never handed to the inner provider
		// (which writes "fake-cek" into what it gets).
		if !maps.Equal(r.MatDesc, md()) {
			t.Fatalf("inner request %d: %v", i, r.MatDesc)
		}
	}
	// What the inner provider returned for pooled keys was not aliased by the
	// callers who mutated their copies (the first key, the miss, is the
	// inner provider's own result, as without a pool).
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, w := range f.handed[1:] {
		if w.MatDesc["evil"] != "" || w.MatDesc["Path"] != "s3://b/k" || string(w.Blob) != f.blobs[i+1] {
			t.Fatalf("inner key %d mutated through a handed-out copy: %v %q", i+1, w.MatDesc, w.Blob)
		}
	}
}

func TestKeyAheadGroupBound(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 1})
	a.maxGroups = 2
	for i := 0; i < 4; i++ {
		gen(t, a, map[string]string{"n": fmt.Sprint(i)})
		a.settle()
	}
	if s := a.Stats(); s.Groups != 2 || s.Pooled != 2 || f.calls() != 6 {
		t.Fatalf("stats %+v, %d calls; want 2 groups pooled, 4 misses + 2 refills", s, f.calls())
	}
	gen(t, a, map[string]string{"n": "3"}) // unpooled group: another miss
	a.settle()
	if s := a.Stats(); s.Misses != 5 || f.calls() != 7 {
		t.Fatalf("stats %+v, %d calls", s, f.calls())
	}
}

func TestKeyAheadCancelledContext(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{Depth: 1})
	gen(t, a, nil)
	a.settle()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled caller is not handed a pooled key; the inner provider
	// decides (the fake ignores the context).
	if _, w, _ := a.GenerateKey(ctx, cse.KeyRequest{CEKAlg: cse.CEKAlgGCM}); string(w.Blob) != "blob-3" {
		t.Fatalf("got %s", w.Blob)
	}
	a.settle()
	if s := a.Stats(); s.Hits != 0 || s.Pooled != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestKeyAheadDecryptPassesThrough(t *testing.T) {
	f := &aheadFake{}
	a, _ := newTestAhead(t, f, KeyAheadOptions{})
	_, err := a.DecryptKey(context.Background(), cse.WrappedKey{Blob: []byte("b")})
	if !errors.Is(err, cse.ErrKeyAccess) || err.Error() != "fake decrypt b: "+cse.ErrKeyAccess.Error() {
		t.Fatalf("err = %v", err)
	}
	if f.calls() != 0 || a.Stats().Groups != 0 {
		t.Fatalf("decrypt touched the pool")
	}
}

func TestKeyAheadWithKMS(t *testing.T) {
	fk := providertest.NewFakeKMS()
	p, err := cse.NewKMSProvider(t.Context(), fk, "alias/test", cse.KMSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newTestAhead(t, p, KeyAheadOptions{Depth: 2})
	req := cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"JobflowId": "j-1"}, Object: "s3://b/k", Key: "k"}
	for i := 0; i < 4; i++ {
		k, w, err := a.GenerateKey(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		a.settle()
		if w.MatDesc[cse.ReservedCEKAlgKey] != cse.CEKAlgGCM || w.MatDesc["JobflowId"] != "j-1" || w.WrapAlg != cse.WrapKMSContext {
			t.Fatalf("wrapped %+v", w)
		}
		got, err := a.DecryptKey(t.Context(), w)
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("round trip %d: %v", i, err)
		}
	}
	if s := a.Stats(); s.Hits != 3 || s.Misses != 1 {
		t.Fatalf("stats %+v", s)
	}
	// A request KMSProvider refuses: the same error as without the pool.
	bad := cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{cse.ReservedCEKAlgKey: "x"}}
	_, _, err = a.GenerateKey(t.Context(), bad)
	_, _, direct := p.GenerateKey(t.Context(), bad)
	if !errors.Is(err, cse.ErrContextMismatch) || err.Error() != direct.Error() {
		t.Fatalf("err = %v, want %v", err, direct)
	}
}

// testBytes returns n deterministic pseudo-random bytes for seed (as cse's
// tests do).
func testBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	b := make([]byte, n)
	r := rand.NewChaCha8(s)
	_, _ = r.Read(b)
	return b
}
