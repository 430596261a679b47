// Package keycache holds the key material a mount keeps in memory, as two
// decorators over a cse.Provider:
//
//   - Cache (this file) keeps unwrapped data keys, so that reading an object
//     again (or many objects that share a data key) does not call the key
//     service every time;
//   - KeyAhead (keyahead.go) keeps a few fresh data keys generated ahead,
//     so that creating a file does not wait for the key service.
//
// The Cache's invariants:
//   - An entry is found only by everything the unwrapping is bound to: the
//     wrap algorithm, the content algorithm, the wrapped key bytes and the
//     canonical materials description (encryption context). A change in any
//     of them is a miss that goes to the provider, which checks the bindings.
//   - Callers always get their own copy of a key and may zero it. The cache
//     zeroes its own copy when the entry is evicted, expires or is purged.
//   - Concurrent misses of one key share a single provider call; errors are
//     never cached.
//   - Nothing here logs keys or cache ids.
package keycache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/csefs/csefs/cse"
)

// Defaults for Options.
const (
	DefaultSize = 1024
	DefaultTTL  = 10 * time.Minute
)

// Options configure a Cache. Zero values select the defaults.
type Options struct {
	// Size is the number of keys kept (default DefaultSize).
	Size int
	// TTL is how long a key stays usable after it was fetched (default
	// DefaultTTL). Expiry is checked on lookup; expired keys are removed and
	// zeroed then, or when evicted for capacity.
	TTL time.Duration
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
}

// Stats are cumulative counters.
type Stats struct {
	Hits          uint64 // DecryptKey answered from the cache
	Misses        uint64 // DecryptKey calls not answered from the cache (includes those that waited on another caller's provider call)
	ProviderCalls uint64 // calls made to the wrapped provider (DecryptKey and GenerateKey)
	Evictions     uint64 // entries dropped to make room
	Expirations   uint64 // entries dropped because their TTL passed
}

type id [sha256.Size]byte

// entry is one cached key. mu orders the hit path's copy against zeroing.
type entry struct {
	mu      sync.RWMutex
	key     []byte // the cache's own copy; zeroed and set to nil on removal
	expires time.Time
}

// call is one provider call in flight, shared by concurrent misses.
type call struct {
	done chan struct{}
	ent  *entry // set on success
	err  error
}

// Cache is an LRU of unwrapped data keys in front of a cse.Provider. It is
// safe for concurrent use.
type Cache struct {
	p   cse.Provider
	ttl time.Duration
	now func() time.Time
	lru *lru.Cache[id, *entry]

	mu       sync.Mutex
	inflight map[id]*call

	hits, misses, providerCalls, evictions, expirations atomic.Uint64
}

var _ cse.Provider = (*Cache)(nil)

// New returns a Cache in front of p.
func New(p cse.Provider, opt Options) *Cache {
	c := &Cache{p: p, ttl: opt.TTL, now: opt.Now, inflight: map[id]*call{}}
	if c.ttl <= 0 {
		c.ttl = DefaultTTL
	}
	if c.now == nil {
		c.now = time.Now
	}
	size := opt.Size
	if size <= 0 {
		size = DefaultSize
	}
	l, err := lru.NewWithEvict(size, func(_ id, e *entry) { e.zero() })
	if err != nil {
		panic("keycache: internal error: " + err.Error())
	}
	c.lru = l
	return c
}

func (e *entry) zero() {
	e.mu.Lock()
	cse.Zero(e.key)
	e.key = nil
	e.mu.Unlock()
}

// copyKey returns a copy of the key, or nil once the entry was zeroed.
func (e *entry) copyKey() []byte {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.key == nil {
		return nil
	}
	return clone(e.key)
}

// clone copies b into a new non-nil slice.
func clone(b []byte) []byte {
	out := make([]byte, len(b))
	copy(out, b)
	return out
}

// cacheID hashes a length-prefixed encoding of everything the key is bound
// to: the wrap and content algorithms, the blob, and the materials
// description as its entries sorted by key (canonical, like json.Marshal of
// the map; nil and empty are the same).
func cacheID(w cse.WrappedKey) id {
	var stack [512]byte
	b := append(stack[:0], "csefs keycache v1"...)
	b = appendField(b, w.WrapAlg)
	b = appendField(b, w.CEKAlg)
	b = appendField(b, string(w.Blob))
	b = binary.BigEndian.AppendUint64(b, uint64(len(w.MatDesc)))
	var keyStack [16]string
	keys := keyStack[:0]
	for k := range w.MatDesc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendField(b, k)
		b = appendField(b, w.MatDesc[k])
	}
	return sha256.Sum256(b)
}

func appendField(b []byte, f string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(f)))
	return append(b, f...)
}

// lookup returns a copy of a live cached key, removing an expired one.
func (c *Cache) lookup(k id) []byte {
	e, ok := c.lru.Get(k)
	if !ok {
		return nil
	}
	e.mu.RLock()
	expired := !c.now().Before(e.expires)
	e.mu.RUnlock()
	if expired {
		// Remove only this entry, not one a concurrent miss has put in its
		// place (a narrow race remains; it costs a provider call, no more).
		if cur, ok := c.lru.Peek(k); ok && cur == e && c.lru.Remove(k) {
			c.expirations.Add(1)
		}
		return nil
	}
	return e.copyKey()
}

// insert caches key (taking ownership of it) under k.
func (c *Cache) insert(k id, key []byte) *entry {
	if key == nil {
		key = []byte{}
	}
	e := &entry{key: key, expires: c.now().Add(c.ttl)}
	if old, ok := c.lru.Peek(k); ok {
		// Add on an existing id would replace the entry without the evict
		// callback, leaving the old key unzeroed.
		if c.lru.Remove(k) && !c.now().Before(old.expires) {
			c.expirations.Add(1)
		}
	}
	if contained, evicted := c.lru.ContainsOrAdd(k, e); contained {
		// Lost a race with another insert of the same id: keep theirs.
		e.zero()
		cur, ok := c.lru.Peek(k)
		if !ok {
			return nil
		}
		return cur
	} else if evicted {
		c.evictions.Add(1)
	}
	return e
}

// DecryptKey returns the data key for w, from the cache when possible.
// Otherwise it calls the provider once for all concurrent callers asking for
// the same key, caches the result and returns a copy. Errors are returned to
// the callers waiting on that call but not cached. A caller whose context ends
// while waiting returns ctx.Err(); a caller that waited on another caller's
// call that failed with a context error retries with its own context.
func (c *Cache) DecryptKey(ctx context.Context, w cse.WrappedKey) ([]byte, error) {
	k := cacheID(w)
	if key := c.lookup(k); key != nil {
		c.hits.Add(1)
		return key, nil
	}
	c.misses.Add(1)
	for {
		c.mu.Lock()
		// Check again under mu: a call may have finished and inserted the key
		// between lookup and now (restic bloblru GetOrCompute).
		if key := c.lookup(k); key != nil {
			c.mu.Unlock()
			return key, nil
		}
		if cl, ok := c.inflight[k]; ok {
			c.mu.Unlock()
			select {
			case <-cl.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if cl.err != nil {
				if isContextErr(cl.err) && ctx.Err() == nil {
					continue // the leader gave up, we have not
				}
				return nil, cl.err
			}
			if cl.ent != nil {
				if key := cl.ent.copyKey(); key != nil {
					return key, nil
				}
			}
			continue // evicted before we copied it: try again
		}
		cl := &call{done: make(chan struct{})}
		c.inflight[k] = cl
		c.mu.Unlock()
		return c.lead(ctx, k, w, cl)
	}
}

// lead makes the provider call for cl and publishes its result.
func (c *Cache) lead(ctx context.Context, k id, w cse.WrappedKey, cl *call) (out []byte, err error) {
	cl.err = errLeaderPanicked // overwritten unless the provider panics
	defer func() {
		c.mu.Lock()
		delete(c.inflight, k)
		c.mu.Unlock()
		close(cl.done)
	}()
	key, err := c.p.DecryptKey(ctx, w)
	c.providerCalls.Add(1)
	if err != nil {
		cl.err = err
		return nil, err
	}
	out = clone(key)
	cl.ent, cl.err = c.insert(k, key), nil
	return out, nil
}

var errLeaderPanicked = errors.New("keycache: provider panicked")

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// GenerateKey calls the provider and then caches the new key under the
// returned WrappedKey, so that reading back one's own writes needs no
// provider call, provided the reader presents the same WrapAlg, CEKAlg, Blob
// and MatDesc (as it does after storing them with metadata.Envelope and
// parsing them back). The returned key is the caller's; the cache keeps its
// own copy.
func (c *Cache) GenerateKey(ctx context.Context, req cse.KeyRequest) ([]byte, cse.WrappedKey, error) {
	key, w, err := c.p.GenerateKey(ctx, req)
	c.providerCalls.Add(1)
	if err != nil {
		return key, w, err
	}
	c.insert(cacheID(w), clone(key))
	return key, w, nil
}

// Purge zeroes and removes every cached key.
func (c *Cache) Purge() { c.lru.Purge() }

// Len returns the number of cached keys, expired ones included.
func (c *Cache) Len() int { return c.lru.Len() }

// Stats returns the counters so far.
func (c *Cache) Stats() Stats {
	return Stats{
		Hits:          c.hits.Load(),
		Misses:        c.misses.Load(),
		ProviderCalls: c.providerCalls.Load(),
		Evictions:     c.evictions.Load(),
		Expirations:   c.expirations.Load(),
	}
}
