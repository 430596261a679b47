package keycache

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/csefs/csefs/cse"
)

// KeyAhead defaults.
const (
	DefaultKeyAheadDepth  = 4
	DefaultKeyAheadMaxAge = time.Minute
	// DefaultKeyAheadRefillTimeout bounds one background GenerateKey call.
	DefaultKeyAheadRefillTimeout = 30 * time.Second
	// keyAheadMaxGroups bounds the number of materials descriptions pooled;
	// requests for further ones are served by the inner provider only.
	keyAheadMaxGroups = 16
)

// KeyAheadOptions configures a KeyAhead.
type KeyAheadOptions struct {
	// Depth is how many unused keys are kept ready per group (CEKAlg and
	// materials description). <= 0: DefaultKeyAheadDepth.
	Depth int
	// MaxAge is how long a pooled key may wait to be handed out; older ones
	// are zeroed and dropped. <= 0: DefaultKeyAheadMaxAge.
	MaxAge time.Duration
	// RefillTimeout bounds each background call of the inner provider.
	// <= 0: DefaultKeyAheadRefillTimeout.
	RefillTimeout time.Duration
	// OnError, if set, receives the error that stopped a background refill
	// (the inner provider's error, as it returned it; never key material).
	// It is called from the refill goroutine, without locks held. cse itself
	// does not log.
	OnError func(error)
}

// KeyAheadStats counts what a KeyAhead did.
type KeyAheadStats struct {
	Hits         uint64 // GenerateKey calls served from the pool
	Misses       uint64 // GenerateKey calls served by the inner provider (errors and after-Close calls included)
	Wasted       uint64 // pooled keys zeroed unused: expired, or dropped at Close
	Refilled     uint64 // keys the background refills generated
	RefillErrors uint64 // refills stopped by an error of the inner provider
	Pooled       int    // keys ready now
	Groups       int    // groups now pooled
}

// KeyAhead is a cse.Provider that keeps a few data keys of an inner provider
// (typically a KMSProvider) generated ahead, so that GenerateKey does not wait
// for the key service.
//
// Requests are grouped by CEKAlg and materials description (cse.KeyRequest.Object
// and cse.KeyRequest.Key are not part of the group and are not passed to the
// inner provider for pooled keys: wrap only providers whose keys do not depend
// on them, as KMSProvider's do not). A group exists from its first successful
// request on, up to 16 groups; requests for further groups always go to the
// inner provider. Nothing is generated ahead before that, so a read-only or
// idle mount makes no extra calls. Pooling pays off only when materials
// descriptions repeat: with a per-object description (EMRFS's Path) every
// pooled key would be wasted, so do not wrap providers used that way.
//
// GenerateKey hands out the oldest pooled key of the request's group when one
// is ready and younger than MaxAge (and the caller's context is not done);
// otherwise it calls the inner provider with the caller's context and returns
// its result and error unchanged. After a hit or a successful miss it starts,
// unless one is running for the group, a background refill that calls the
// inner provider (context.Background with RefillTimeout, cancelled by Close)
// until the group holds Depth keys. A failed refill stops and is reported to
// OnError; the next miss reports the failure to its caller. Nothing refills
// on a timer: an idle group keeps at most Depth keys, and those expire.
//
// Pooled keys older than MaxAge are zeroed (cse.Zero) and dropped, when a request
// for their group sees them and in any case by a timer shortly after they
// expire; a group left with no keys and no refill is forgotten.
//
// A key handed out belongs to the caller, with its cse.WrappedKey (its own Blob
// and MatDesc): nothing else refers to them.
//
// Close stops the refills and zeroes every pooled key. After Close,
// GenerateKey calls the inner provider directly, without pooling. DecryptKey
// always passes through. Safe for concurrent use.
type KeyAhead struct {
	inner         cse.Provider
	depth         int
	maxAge        time.Duration
	refillTimeout time.Duration
	onError       func(error)
	maxGroups     int
	now           func() time.Time // injected by tests

	ctx    context.Context // cancelled by Close; parent of the refills'
	cancel context.CancelFunc
	wg     sync.WaitGroup // running refills

	mu     sync.Mutex
	closed bool
	groups map[string]*aheadGroup
	timer  *time.Timer // expiry sweep, armed while keys are pooled
	stats  KeyAheadStats
}

type aheadGroup struct {
	gk        string         // groupKey(req)
	req       cse.KeyRequest // CEKAlg and a private copy of MatDesc
	pool      []aheadKey     // oldest first
	refilling bool
}

type aheadKey struct {
	key     []byte
	wrapped cse.WrappedKey
	born    time.Time
}

var _ cse.Provider = (*KeyAhead)(nil)

// NewKeyAhead wraps p. It starts nothing until the first GenerateKey.
func NewKeyAhead(p cse.Provider, opt KeyAheadOptions) *KeyAhead {
	if opt.Depth <= 0 {
		opt.Depth = DefaultKeyAheadDepth
	}
	if opt.MaxAge <= 0 {
		opt.MaxAge = DefaultKeyAheadMaxAge
	}
	if opt.RefillTimeout <= 0 {
		opt.RefillTimeout = DefaultKeyAheadRefillTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &KeyAhead{
		inner:         p,
		depth:         opt.Depth,
		maxAge:        opt.MaxAge,
		refillTimeout: opt.RefillTimeout,
		onError:       opt.OnError,
		maxGroups:     keyAheadMaxGroups,
		now:           time.Now,
		ctx:           ctx,
		cancel:        cancel,
		groups:        map[string]*aheadGroup{},
	}
}

// groupKey is the pool key of a request: CEKAlg and the materials description
// with its keys sorted, every string length-prefixed so that no two distinct
// requests share an encoding.
func groupKey(req cse.KeyRequest) string {
	var b strings.Builder
	put := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	put(req.CEKAlg)
	for _, k := range slices.Sorted(maps.Keys(req.MatDesc)) {
		put(k)
		put(req.MatDesc[k])
	}
	return b.String()
}

// GenerateKey implements cse.Provider.
func (a *KeyAhead) GenerateKey(ctx context.Context, req cse.KeyRequest) ([]byte, cse.WrappedKey, error) {
	// The group is taken from the request as given, before the inner
	// provider sees (and might alter) it.
	gk := groupKey(req)
	if ctx.Err() == nil {
		if key, w, ok := a.take(gk); ok {
			return key, w, nil
		}
	} else {
		a.mu.Lock()
		a.stats.Misses++
		a.mu.Unlock()
	}
	tmpl := cse.KeyRequest{CEKAlg: req.CEKAlg, MatDesc: maps.Clone(req.MatDesc)}
	key, w, err := a.inner.GenerateKey(ctx, req)
	if err == nil {
		a.mu.Lock()
		if g := a.group(gk, tmpl); g != nil {
			a.startRefill(g)
		}
		a.mu.Unlock()
	}
	return key, w, err
}

// take hands out a pooled key of group gk, or counts a miss.
func (a *KeyAhead) take(gk string) ([]byte, cse.WrappedKey, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.groups[gk]
	if a.closed || g == nil {
		a.stats.Misses++
		return nil, cse.WrappedKey{}, false
	}
	a.expire(g, a.now())
	if len(g.pool) == 0 {
		a.forgetIfIdle(g) // a successful miss makes it again
		a.stats.Misses++
		return nil, cse.WrappedKey{}, false
	}
	e := g.pool[0]
	g.pool[0] = aheadKey{}
	g.pool = g.pool[1:]
	a.stats.Hits++
	a.startRefill(g)
	return e.key, e.wrapped, true
}

// group returns group gk, creating it with the request template tmpl (owned
// by the group from then on) if there is room; nil after Close or when the
// groups are at their bound. Called with a.mu held.
func (a *KeyAhead) group(gk string, tmpl cse.KeyRequest) *aheadGroup {
	if a.closed {
		return nil
	}
	if g := a.groups[gk]; g != nil {
		return g
	}
	if len(a.groups) >= a.maxGroups {
		return nil
	}
	g := &aheadGroup{gk: gk, req: tmpl}
	a.groups[gk] = g
	return g
}

// startRefill starts g's refill unless one is running or g is full. Called
// with a.mu held.
func (a *KeyAhead) startRefill(g *aheadGroup) {
	if a.closed || g.refilling || len(g.pool) >= a.depth {
		return
	}
	g.refilling = true
	a.wg.Add(1)
	go a.refill(g)
}

// refill fills g up to depth, one inner call at a time.
func (a *KeyAhead) refill(g *aheadGroup) {
	defer a.wg.Done()
	for {
		req := cse.KeyRequest{CEKAlg: g.req.CEKAlg, MatDesc: maps.Clone(g.req.MatDesc)}
		ctx, cancel := context.WithTimeout(a.ctx, a.refillTimeout)
		key, w, err := a.inner.GenerateKey(ctx, req)
		cancel()

		a.mu.Lock()
		if a.closed {
			if err == nil {
				cse.Zero(key)
				a.stats.Wasted++
			}
			a.mu.Unlock()
			return
		}
		if err != nil {
			g.refilling = false
			a.stats.RefillErrors++
			a.forgetIfIdle(g)
			a.mu.Unlock()
			if a.onError != nil {
				a.onError(err)
			}
			return
		}
		g.pool = append(g.pool, aheadKey{key: key, wrapped: cloneWrapped(w), born: a.now()})
		a.stats.Refilled++
		a.armTimer()
		if len(g.pool) >= a.depth {
			g.refilling = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
	}
}

// cloneWrapped copies w's Blob and MatDesc, so that the pooled entry shares
// nothing with whatever the inner provider keeps.
func cloneWrapped(w cse.WrappedKey) cse.WrappedKey {
	w.Blob = slices.Clone(w.Blob)
	w.MatDesc = maps.Clone(w.MatDesc)
	return w
}

// expire zeroes and drops g's keys older than maxAge. Called with a.mu held.
func (a *KeyAhead) expire(g *aheadGroup, now time.Time) {
	n := 0
	for n < len(g.pool) && now.Sub(g.pool[n].born) >= a.maxAge {
		cse.Zero(g.pool[n].key)
		g.pool[n] = aheadKey{}
		n++
	}
	if n > 0 {
		g.pool = g.pool[n:]
		a.stats.Wasted += uint64(n)
	}
}

// forgetIfIdle drops g when it has no keys and no refill. Called with a.mu
// held.
func (a *KeyAhead) forgetIfIdle(g *aheadGroup) {
	if len(g.pool) == 0 && !g.refilling && a.groups[g.gk] == g {
		delete(a.groups, g.gk)
	}
}

// sweep expires the keys of every group and forgets idle groups; the timer
// runs it.
func (a *KeyAhead) sweep() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.timer = nil
	if a.closed {
		return
	}
	now := a.now()
	for _, g := range a.groups {
		a.expire(g, now)
		a.forgetIfIdle(g)
	}
	a.armTimer()
}

// armTimer schedules a sweep for when the oldest pooled key expires, unless
// one is scheduled or nothing is pooled. Called with a.mu held.
func (a *KeyAhead) armTimer() {
	if a.timer != nil || a.closed {
		return
	}
	var oldest time.Time
	for _, g := range a.groups {
		if len(g.pool) > 0 && (oldest.IsZero() || g.pool[0].born.Before(oldest)) {
			oldest = g.pool[0].born
		}
	}
	if oldest.IsZero() {
		return
	}
	d := max(oldest.Add(a.maxAge).Sub(a.now()), 0) + time.Second/10
	a.timer = time.AfterFunc(d, a.sweep)
}

// DecryptKey implements cse.Provider: it calls the inner provider.
func (a *KeyAhead) DecryptKey(ctx context.Context, w cse.WrappedKey) ([]byte, error) {
	return a.inner.DecryptKey(ctx, w)
}

// Close stops handing out pooled keys, cancels and waits for the running
// refills, and zeroes every pooled key. Later GenerateKey calls go to the
// inner provider. Close is idempotent.
func (a *KeyAhead) Close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	for gk, g := range a.groups {
		for i := range g.pool {
			cse.Zero(g.pool[i].key)
			g.pool[i] = aheadKey{}
		}
		a.stats.Wasted += uint64(len(g.pool))
		delete(a.groups, gk)
	}
}

// Stats returns the counters and the current pool size.
func (a *KeyAhead) Stats() KeyAheadStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	for _, g := range a.groups {
		s.Pooled += len(g.pool)
	}
	s.Groups = len(a.groups)
	return s
}
