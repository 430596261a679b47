package keycache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csefs/csefs/cse"
)

// fakeProvider derives each key from the wrapped blob and remembers every
// slice it hands out, so tests can see whether the cache zeroed its copy.
type fakeProvider struct {
	mu       sync.Mutex
	calls    int
	gens     int
	returned [][]byte
	err      error  // returned (once) by DecryptKey when set
	block    func() // called inside DecryptKey when set
	panicMsg string // DecryptKey panics with it when set
}

func keyFor(w cse.WrappedKey) []byte {
	s := sha256.Sum256(w.Blob)
	return s[:]
}

func (f *fakeProvider) DecryptKey(ctx context.Context, w cse.WrappedKey) ([]byte, error) {
	if f.block != nil {
		f.block()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	if f.err != nil {
		err := f.err
		f.err = nil
		return nil, fmt.Errorf("fake: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k := keyFor(w)
	f.returned = append(f.returned, k)
	return k, nil
}

func (f *fakeProvider) GenerateKey(_ context.Context, req cse.KeyRequest) ([]byte, cse.WrappedKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gens++
	w := cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: req.CEKAlg, Blob: []byte(fmt.Sprintf("gen-%d", f.gens)), MatDesc: req.MatDesc}
	k := keyFor(w)
	f.returned = append(f.returned, k)
	return k, w, nil
}

func (f *fakeProvider) nCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeProvider) slice(i int) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.returned[i]
}

func wk(blob string) cse.WrappedKey {
	return cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCM, Blob: []byte(blob),
		MatDesc: map[string]string{cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "Path": "s3://b/" + blob}}
}

func allZero(b []byte) bool { return len(b) > 0 && bytes.Count(b, []byte{0}) == len(b) }

func mustKey(t *testing.T, c *Cache, w cse.WrappedKey) []byte {
	t.Helper()
	k, err := c.DecryptKey(context.Background(), w)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k, keyFor(w)) {
		t.Fatalf("wrong key for %q", w.Blob)
	}
	return k
}

func TestSingleFlight(t *testing.T) {
	const n = 64
	var c *Cache
	f := &fakeProvider{}
	// The provider returns only once all n callers have missed, so without
	// single flight every caller would reach it.
	f.block = func() { spinUntil(t, "all callers missing", func() bool { return c.Stats().Misses == n }) }
	c = New(f, Options{})
	w := wk("same")
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], errs[i] = c.DecryptKey(context.Background(), w)
		}()
	}
	waitOrFail(t, &wg, "the concurrent DecryptKey calls")
	if got := f.nCalls(); got != 1 {
		t.Fatalf("provider calls = %d, want 1", got)
	}
	for i := range n {
		if errs[i] != nil || !bytes.Equal(keys[i], keyFor(w)) {
			t.Fatalf("caller %d: %x, %v", i, keys[i], errs[i])
		}
		for j := range i {
			if &keys[i][0] == &keys[j][0] {
				t.Fatalf("callers %d and %d share a slice", i, j)
			}
		}
		if &keys[i][0] == &f.slice(0)[0] {
			t.Fatal("a caller got the provider's slice")
		}
	}
	if s := c.Stats(); s.ProviderCalls != 1 || s.Misses != n || s.Hits != 0 {
		t.Fatalf("stats %+v", s)
	}
	mustKey(t, c, w)
	if s := c.Stats(); s.Hits != 1 || f.nCalls() != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestHitReturnsCopy(t *testing.T) {
	f := &fakeProvider{}
	c := New(f, Options{})
	w := wk("a")
	k1 := mustKey(t, c, w)
	if &k1[0] == &f.slice(0)[0] {
		t.Fatal("miss returned the provider's slice")
	}
	cse.Zero(k1)
	k2 := mustKey(t, c, w)
	k2[0] ^= 0xFF
	mustKey(t, c, w)
	if f.nCalls() != 1 || c.Stats().Hits != 2 {
		t.Fatalf("calls %d stats %+v", f.nCalls(), c.Stats())
	}
}

func TestTTL(t *testing.T) {
	now := time.Unix(1000, 0)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	set := func(d time.Duration) { t2 := now.Add(d); clock.Store(&t2) }
	f := &fakeProvider{}
	c := New(f, Options{TTL: time.Minute, Now: func() time.Time { return *clock.Load() }})
	w := wk("a")
	mustKey(t, c, w)
	set(time.Minute - 1)
	mustKey(t, c, w)
	if f.nCalls() != 1 {
		t.Fatal("expired early")
	}
	set(time.Minute)
	mustKey(t, c, w)
	if f.nCalls() != 2 {
		t.Fatal("did not expire")
	}
	if !allZero(f.slice(0)) {
		t.Fatal("expired key not zeroed")
	}
	if allZero(f.slice(1)) {
		t.Fatal("fresh key zeroed")
	}
	if s := c.Stats(); s.Expirations != 1 || s.Hits != 1 || s.Misses != 2 {
		t.Fatalf("stats %+v", s)
	}
	// The new entry has its own TTL from the time it was fetched.
	set(2*time.Minute - 1)
	mustKey(t, c, w)
	if f.nCalls() != 2 {
		t.Fatal("re-fetched entry expired early")
	}
}

func TestDefaults(t *testing.T) {
	c := New(&fakeProvider{}, Options{Size: -1, TTL: -1})
	if c.ttl != DefaultTTL || c.now == nil {
		t.Fatalf("ttl %v", c.ttl)
	}
	for i := range DefaultSize + 1 {
		mustKey(t, c, wk(fmt.Sprint(i)))
	}
	if c.Len() != DefaultSize || c.Stats().Evictions != 1 {
		t.Fatalf("len %d stats %+v", c.Len(), c.Stats())
	}
}

func TestErrorNotCached(t *testing.T) {
	errDenied := errors.New("denied")
	f := &fakeProvider{err: errDenied}
	c := New(f, Options{})
	w := wk("a")
	if _, err := c.DecryptKey(context.Background(), w); !errors.Is(err, errDenied) {
		t.Fatalf("err = %v", err)
	}
	mustKey(t, c, w)
	if f.nCalls() != 2 {
		t.Fatalf("calls %d", f.nCalls())
	}
}

func TestBindings(t *testing.T) {
	f := &fakeProvider{}
	c := New(f, Options{})
	base := wk("blob")
	mustKey(t, c, base)
	variants := map[string]func(w *cse.WrappedKey){
		"wrap alg": func(w *cse.WrappedKey) { w.WrapAlg = cse.WrapKMS },
		"cek alg":  func(w *cse.WrappedKey) { w.CEKAlg = cse.CEKAlgCBC },
		"blob":     func(w *cse.WrappedKey) { w.Blob = []byte("blob2") },
		"matdesc value": func(w *cse.WrappedKey) {
			w.MatDesc = map[string]string{cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "Path": "s3://b/other"}
		},
		"matdesc extra": func(w *cse.WrappedKey) {
			w.MatDesc = map[string]string{cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "Path": "s3://b/blob", "x": ""}
		},
		"matdesc empty":  func(w *cse.WrappedKey) { w.MatDesc = nil },
		"field boundary": func(w *cse.WrappedKey) { w.WrapAlg, w.CEKAlg = cse.WrapKMSContext+"A", cse.CEKAlgGCM[1:] },
	}
	calls := 1
	for name, mutate := range variants {
		w := wk("blob")
		mutate(&w)
		k, err := c.DecryptKey(context.Background(), w)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		if f.nCalls() != calls {
			t.Errorf("%s: cache hit, want miss", name)
		}
		_ = k
	}
	// nil and empty MatDesc are the same context.
	w := wk("nil")
	w.MatDesc = nil
	mustKey(t, c, w)
	w.MatDesc = map[string]string{}
	mustKey(t, c, w)
	if f.nCalls() != calls+1 {
		t.Error("nil and empty MatDesc differ")
	}
}

func TestEvictionZeroes(t *testing.T) {
	f := &fakeProvider{}
	c := New(f, Options{Size: 2})
	mustKey(t, c, wk("a"))
	mustKey(t, c, wk("b"))
	mustKey(t, c, wk("a")) // a is now most recent
	mustKey(t, c, wk("c")) // evicts b
	if !allZero(f.slice(1)) {
		t.Fatal("evicted key not zeroed")
	}
	if allZero(f.slice(0)) || allZero(f.slice(2)) {
		t.Fatal("live key zeroed")
	}
	if s := c.Stats(); s.Evictions != 1 || c.Len() != 2 {
		t.Fatalf("stats %+v len %d", s, c.Len())
	}
	mustKey(t, c, wk("b"))
	if f.nCalls() != 4 {
		t.Fatalf("calls %d", f.nCalls())
	}
}

func TestPurgeZeroes(t *testing.T) {
	f := &fakeProvider{}
	c := New(f, Options{})
	for _, b := range []string{"a", "b", "c"} {
		mustKey(t, c, wk(b))
	}
	c.Purge()
	for i := range 3 {
		if !allZero(f.slice(i)) {
			t.Fatalf("key %d not zeroed", i)
		}
	}
	if c.Len() != 0 {
		t.Fatal(c.Len())
	}
	mustKey(t, c, wk("a"))
	if f.nCalls() != 4 {
		t.Fatal("purged key still served")
	}
}

func TestGenerateKeyCaches(t *testing.T) {
	f := &fakeProvider{}
	c := New(f, Options{})
	key, w, err := c.GenerateKey(context.Background(), cse.KeyRequest{CEKAlg: cse.CEKAlgGCM})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(key)
	cse.Zero(key) // the caller zeroes its key; the cache's copy is separate
	got := mustKey(t, c, w)
	if !bytes.Equal(got, want) || f.nCalls() != 0 {
		t.Fatalf("calls %d", f.nCalls())
	}
	if s := c.Stats(); s.ProviderCalls != 1 || s.Hits != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWaiterContext(t *testing.T) {
	var c *Cache
	release := make(chan struct{})
	f := &fakeProvider{block: func() { <-release }}
	c = New(f, Options{})
	w := wk("a")
	leader := make(chan error, 1)
	go func() { _, err := c.DecryptKey(context.Background(), w); leader <- err }()
	spinUntil(t, "the leader's miss", func() bool { return c.Stats().Misses == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() { _, err := c.DecryptKey(ctx, w); waiter <- err }()
	spinUntil(t, "the waiter's miss", func() bool { return c.Stats().Misses == 2 })
	cancel()
	if err := recvOrFail(t, waiter, "the cancelled waiter's DecryptKey"); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter err = %v", err)
	}
	close(release)
	if err := recvOrFail(t, leader, "the leader's DecryptKey"); err != nil {
		t.Fatal(err)
	}
}

// A waiter does not inherit the leader's cancellation: it retries.
func TestLeaderCanceled(t *testing.T) {
	var c *Cache
	release := make(chan struct{})
	var blocked atomic.Bool
	f := &fakeProvider{}
	f.block = func() {
		if blocked.CompareAndSwap(false, true) {
			<-release
		}
	}
	c = New(f, Options{})
	w := wk("a")
	ctx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() { _, err := c.DecryptKey(ctx, w); leader <- err }()
	spinUntil(t, "the leader in the provider", blocked.Load)
	waiter := make(chan error, 1)
	go func() { _, err := c.DecryptKey(context.Background(), w); waiter <- err }()
	spinUntil(t, "the waiter's miss", func() bool { return c.Stats().Misses == 2 })
	cancel()
	close(release)
	if err := recvOrFail(t, leader, "the cancelled leader's DecryptKey"); !errors.Is(err, context.Canceled) {
		t.Fatalf("leader err = %v", err)
	}
	if err := recvOrFail(t, waiter, "the waiter's DecryptKey"); err != nil {
		t.Fatalf("waiter err = %v", err)
	}
	if f.nCalls() != 2 {
		t.Fatalf("calls %d", f.nCalls())
	}
}

func TestProviderPanicReleasesWaiters(t *testing.T) {
	f := &fakeProvider{panicMsg: "boom"}
	c := New(f, Options{})
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		_, _ = c.DecryptKey(context.Background(), wk("a"))
	}()
	f.mu.Lock()
	f.panicMsg = ""
	f.mu.Unlock()
	mustKey(t, c, wk("a")) // would hang if the in-flight call leaked
}

// Hits racing with eviction and Purge never see a zeroed or torn key.
func TestConcurrentHitsAndEviction(t *testing.T) {
	f := &fakeProvider{}
	c := New(f, Options{Size: 4})
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				w := wk(fmt.Sprint((g + i) % 6))
				k, err := c.DecryptKey(context.Background(), w)
				if err != nil || !bytes.Equal(k, keyFor(w)) {
					bad.Add(1)
				}
				if i%50 == 0 {
					c.Purge()
				}
			}
		}()
	}
	waitOrFail(t, &wg, "the concurrent hits and purges")
	if bad.Load() != 0 {
		t.Fatalf("%d bad keys", bad.Load())
	}
	c.Purge()
	for i := range f.nCalls() {
		if !allZero(f.slice(i)) {
			t.Fatalf("key %d not zeroed after Purge", i)
		}
	}
}

func BenchmarkHit(b *testing.B) {
	c := New(&fakeProvider{}, Options{})
	w := wk("bench")
	if _, err := c.DecryptKey(context.Background(), w); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		k, err := c.DecryptKey(ctx, w)
		if err != nil {
			b.Fatal(err)
		}
		cse.Zero(k)
	}
}

func BenchmarkHitParallel(b *testing.B) {
	c := New(&fakeProvider{}, Options{})
	w := wk("bench")
	if _, err := c.DecryptKey(context.Background(), w); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k, err := c.DecryptKey(context.Background(), w)
			if err != nil {
				b.Error(err)
				return
			}
			cse.Zero(k)
		}
	})
}
