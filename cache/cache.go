// Package cache is csefs's encrypted, persistent local read cache: an
// objectstore.Store wrapper that keeps the bytes of ranged GETs on local
// disk, sealed under a cache key, so that re-reads (also after a restart)
// make no GET.
//
// What is cached is the object's stored bytes as S3 returned them, in
// aligned blocks of BlockSize: for an encrypted object that is S3EC
// ciphertext, which every read still decrypts and authenticates as it would
// a GET's body. Each block file is sealed again with AES-256-GCM under a key
// derived from the cache key, with the block's identity (object key, ETag,
// block number) bound as additional data, and is named by an HMAC of that
// identity, so the directory shows neither names, ETags nor which blocks
// belong together. The index (object keys, ETags, sizes, envelopes, LRU
// order) is one sealed file.
//
// The cache key is a data key of the mount's key provider (KMS
// GenerateDataKey for CSE-KMS, the keyring or exec provider for CSE-C);
// only its wrapped form is stored (key.json). Opening an existing cache
// costs one DecryptKey (one KMS Decrypt). A cache whose key cannot be
// unwrapped, or whose index does not authenticate, is discarded and
// started afresh, with a log line.
//
// Entries are keyed by object key and ETag: a changed object has a new ETag
// and is fetched again. Only Gets pinned to an ETag (GetOptions.IfMatch,
// which every read of fusefs sets) are cached. The cache is LRU within its
// size bound. One cache directory serves one mount at a time (a lock file;
// Open fails while another process holds it). Failures to write the cache
// (a full disk) make reads uncached, never failed.
package cache

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// BlockSize is the unit of caching: ranges are fetched, stored and evicted
// in aligned blocks of this many stored bytes.
const BlockSize = 1 << 20

// ErrLocked: the cache directory is in use by another process.
var ErrLocked = errors.New("cache: directory in use by another mount")

const (
	keyFile   = "key.json"
	indexFile = "index"
	lockFile  = "lock"
	blockDir  = "blocks"

	aadIndex = "csefs-cache-index-v1"
	aadBlock = "csefs-cache-block-v1\x00"
)

// Options shape a Cache.
type Options struct {
	Dir  string // created (0700) if missing
	Size int64  // bound on the block files' total size
	// Provider makes the cache key (GenerateKey) and unwraps it (DecryptKey).
	Provider cse.Provider
	Logger   *slog.Logger
	// SaveEvery is how often a changed index is written (default 2 s); it
	// is also written by Close.
	SaveEvery time.Duration
}

// Cache is an open cache directory. It is safe for concurrent use.
type Cache struct {
	opt  Options
	log  *slog.Logger
	lock *os.File
	aead cipher.AEAD
	mac  []byte

	mu      sync.Mutex
	objects map[objID]*object
	lru     lruList
	used    int64
	dirty   bool
	closed  bool
	stats   Stats
	lastErr time.Time // of the last "cannot store" log line

	stop chan struct{}
	done chan struct{}
}

// Stats count what the cache did.
type Stats struct {
	Hits, Misses, Stored, Evicted, StoreErrors int64
}

type objID struct{ key, etag string }

type object struct {
	id     objID
	info   objectstore.Info
	blocks map[int64]*block
}

type block struct {
	obj        *object
	index      int64
	n          int   // stored bytes (plain length)
	size       int64 // file size (sealed)
	name       string
	used       int64 // unix nanoseconds
	prev, next *block
}

// storedKey is key.json: the wrapped cache key.
type storedKey struct {
	Version int               `json:"version"`
	WrapAlg string            `json:"wrap_alg"`
	CEKAlg  string            `json:"cek_alg"`
	Blob    []byte            `json:"blob"`
	MatDesc map[string]string `json:"matdesc"`
}

// Open opens (or creates) the cache in opt.Dir. It locks the directory,
// unwraps the stored cache key (or makes a new one), and loads the index;
// anything that cannot be trusted is discarded with a log line.
func Open(ctx context.Context, opt Options) (*Cache, error) {
	if opt.Provider == nil {
		return nil, errors.New("cache: a read cache needs a key provider (--cse kms or custom)")
	}
	if opt.Size <= 0 {
		return nil, errors.New("cache: size must be positive")
	}
	if opt.SaveEvery <= 0 {
		opt.SaveEvery = 2 * time.Second
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(opt.Dir, blockDir), 0o700); err != nil {
		return nil, fmt.Errorf("cache %s: %w", opt.Dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(opt.Dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", opt.Dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cache %s: %w (one cache directory per mount)", opt.Dir, ErrLocked)
	}
	c := &Cache{opt: opt, log: log, lock: lock, objects: map[objID]*object{},
		stop: make(chan struct{}), done: make(chan struct{})}
	key, fresh, err := c.cacheKey(ctx)
	if err != nil {
		lock.Close()
		return nil, err
	}
	err = c.setKey(key)
	cse.Zero(key)
	if err != nil {
		lock.Close()
		return nil, err
	}
	if !fresh {
		if err := c.loadIndex(); err != nil {
			log.Warn("read cache: index unreadable or not authentic; discarding the cache", "dir", opt.Dir, "cause", err.Error())
			c.objects, c.lru, c.used = map[objID]*object{}, lruList{}, 0
		}
	}
	c.reconcile()
	c.evict(0)
	go c.saver()
	log.Info("read cache open", "dir", opt.Dir, "size", opt.Size, "used", c.used, "objects", len(c.objects))
	return c, nil
}

// cacheKey unwraps the stored key, or makes and stores a new one (fresh),
// discarding the directory's contents when the stored one cannot be
// unwrapped.
func (c *Cache) cacheKey(ctx context.Context) (key []byte, fresh bool, err error) {
	path := filepath.Join(c.opt.Dir, keyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		var sk storedKey
		if err = json.Unmarshal(data, &sk); err == nil && sk.Version != 1 {
			err = fmt.Errorf("version %d", sk.Version)
		}
		if err == nil {
			key, err = c.opt.Provider.DecryptKey(ctx, cse.WrappedKey{WrapAlg: sk.WrapAlg, CEKAlg: sk.CEKAlg, Blob: sk.Blob, MatDesc: sk.MatDesc})
			if err == nil && len(key) != 32 {
				cse.Zero(key)
				err = fmt.Errorf("unwrapped key is %d bytes", len(key))
			}
		}
		if err == nil {
			return key, false, nil
		}
		c.log.Warn("read cache: its key cannot be unwrapped; discarding the cache", "dir", c.opt.Dir, "cause", err.Error())
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("cache %s: %w", c.opt.Dir, err)
	}
	if err := c.wipe(); err != nil {
		return nil, false, err
	}
	key, w, err := c.opt.Provider.GenerateKey(ctx, cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, MatDesc: map[string]string{"csefs-purpose": "read-cache"}})
	if err != nil {
		return nil, false, fmt.Errorf("cache %s: making the cache key: %w", c.opt.Dir, err)
	}
	data, _ = json.Marshal(storedKey{Version: 1, WrapAlg: w.WrapAlg, CEKAlg: w.CEKAlg, Blob: w.Blob, MatDesc: w.MatDesc})
	if err := writeFileAtomic(path, data); err != nil {
		cse.Zero(key)
		return nil, false, fmt.Errorf("cache %s: %w", c.opt.Dir, err)
	}
	return key, true, nil
}

// setKey derives the sealing and naming keys from the cache key.
func (c *Cache) setKey(key []byte) error {
	seal, err := hkdf.Key(sha256.New, key, nil, "csefs read cache: sealing", 32)
	if err != nil {
		return err
	}
	defer cse.Zero(seal)
	if c.mac, err = hkdf.Key(sha256.New, key, nil, "csefs read cache: names", 32); err != nil {
		return err
	}
	b, err := aes.NewCipher(seal)
	if err != nil {
		return err
	}
	c.aead, err = cipher.NewGCM(b)
	return err
}

// wipe removes everything but the lock.
func (c *Cache) wipe() error {
	for _, n := range []string{keyFile, indexFile, blockDir} {
		if err := os.RemoveAll(filepath.Join(c.opt.Dir, n)); err != nil {
			return fmt.Errorf("cache %s: %w", c.opt.Dir, err)
		}
	}
	return os.MkdirAll(filepath.Join(c.opt.Dir, blockDir), 0o700)
}

// blockName is the file name of a block: the HMAC of its identity.
func (c *Cache) blockName(id objID, index int64) string {
	m := hmac.New(sha256.New, c.mac)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(id.key)))
	m.Write(n[:])
	m.Write([]byte(id.key))
	binary.BigEndian.PutUint64(n[:], uint64(len(id.etag)))
	m.Write(n[:])
	m.Write([]byte(id.etag))
	binary.BigEndian.PutUint64(n[:], uint64(index))
	m.Write(n[:])
	return hex.EncodeToString(m.Sum(nil))
}

func (c *Cache) blockPath(name string) string {
	return filepath.Join(c.opt.Dir, blockDir, name[:2], name)
}

// seal encrypts plain with a random nonce, aad bound.
func (c *Cache) seal(plain []byte, aad string) []byte {
	out := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plain)+c.aead.Overhead())
	rand.Read(out)
	return c.aead.Seal(out, out, plain, []byte(aad))
}

func (c *Cache) open(sealed []byte, aad string) ([]byte, error) {
	ns := c.aead.NonceSize()
	if len(sealed) < ns+c.aead.Overhead() {
		return nil, errors.New("cache: sealed data too short")
	}
	return c.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(aad))
}

// index is the sealed index's content.
type index struct {
	Objects []indexObject `json:"objects"`
}

type indexObject struct {
	Info   objectstore.Info `json:"info"`
	Blocks []indexBlock     `json:"blocks"`
}

type indexBlock struct {
	Index int64 `json:"i"`
	N     int   `json:"n"`
	Size  int64 `json:"s"`
	Used  int64 `json:"u"`
}

func (c *Cache) loadIndex() error {
	data, err := os.ReadFile(filepath.Join(c.opt.Dir, indexFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	plain, err := c.open(data, aadIndex)
	if err != nil {
		return err
	}
	var ix index
	if err := json.Unmarshal(plain, &ix); err != nil {
		return err
	}
	var all []*block
	for _, e := range ix.Objects {
		id := objID{e.Info.Key, e.Info.ETag}
		o := &object{id: id, info: e.Info, blocks: map[int64]*block{}}
		c.objects[id] = o
		for _, ib := range e.Blocks {
			b := &block{obj: o, index: ib.Index, n: ib.N, size: ib.Size, used: ib.Used, name: c.blockName(id, ib.Index)}
			o.blocks[ib.Index] = b
			all = append(all, b)
		}
	}
	// Least recently used first, so pushing each to the front leaves the
	// most recent there.
	sortByUsed(all)
	for _, b := range all {
		c.lru.pushFront(b)
		c.used += b.size
	}
	return nil
}

// reconcile drops index entries whose files are gone and files no entry
// names (left by a crash between a block's write and the index's).
func (c *Cache) reconcile() {
	known := map[string]bool{}
	for _, o := range c.objects {
		for _, b := range o.blocks {
			if fi, err := os.Stat(c.blockPath(b.name)); err != nil || fi.Size() != b.size {
				c.drop(b)
				continue
			}
			known[b.name] = true
		}
	}
	root := filepath.Join(c.opt.Dir, blockDir)
	subs, _ := os.ReadDir(root)
	for _, s := range subs {
		files, _ := os.ReadDir(filepath.Join(root, s.Name()))
		for _, f := range files {
			if !known[f.Name()] {
				os.Remove(filepath.Join(root, s.Name(), f.Name()))
			}
		}
	}
}

// drop forgets b (the caller holds mu or owns c) without touching its file.
func (c *Cache) drop(b *block) {
	c.lru.remove(b)
	c.used -= b.size
	delete(b.obj.blocks, b.index)
	if len(b.obj.blocks) == 0 {
		delete(c.objects, b.obj.id)
	}
	c.dirty = true
}

// evict removes least recently used blocks until need more bytes fit.
func (c *Cache) evict(need int64) {
	for c.used+need > c.opt.Size && c.lru.tail != nil {
		b := c.lru.tail
		os.Remove(c.blockPath(b.name))
		c.drop(b)
		c.stats.Evicted++
	}
}

// lookup returns the blocks first..last of id if all are cached (marking
// them used), with the object's Info.
func (c *Cache) lookup(id objID, first, last int64) (*objectstore.Info, []*block, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.objects[id]
	if o == nil {
		return nil, nil, false
	}
	if last < 0 { // to the end
		if o.info.Size == 0 {
			return nil, nil, false
		}
		last = (o.info.Size - 1) / BlockSize
	}
	bs := make([]*block, 0, last-first+1)
	for i := first; i <= last; i++ {
		b := o.blocks[i]
		if b == nil {
			return nil, nil, false
		}
		bs = append(bs, b)
	}
	now := time.Now().UnixNano()
	for _, b := range bs {
		b.used = now
		c.lru.remove(b)
		c.lru.pushFront(b)
	}
	info := o.info
	return &info, bs, true
}

// readBlock returns a cached block's bytes; on any failure the block is
// dropped and ok is false.
func (c *Cache) readBlock(b *block) ([]byte, bool) {
	c.mu.Lock()
	gone := b.obj.blocks[b.index] != b
	c.mu.Unlock()
	if gone {
		return nil, false // evicted since the lookup
	}
	data, err := os.ReadFile(c.blockPath(b.name))
	var plain []byte
	if err == nil {
		plain, err = c.open(data, aadBlock+b.name)
	}
	if err == nil && len(plain) != b.n {
		err = fmt.Errorf("block is %d bytes, index says %d", len(plain), b.n)
	}
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) { // else evicted meanwhile
			c.log.Warn("read cache: a block is unreadable; dropped, read from the store", "cause", err.Error())
		}
		c.mu.Lock()
		if b.obj.blocks[b.index] == b {
			os.Remove(c.blockPath(b.name))
			c.drop(b)
		}
		c.mu.Unlock()
		return nil, false
	}
	return plain, true
}

// store seals and writes block index of the object info describes. Errors
// (a full disk) are logged at most once a minute and leave the cache as it
// was.
func (c *Cache) store(info *objectstore.Info, index int64, data []byte) {
	id := objID{info.Key, info.ETag}
	name := c.blockName(id, index)
	sealed := c.seal(data, aadBlock+name)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if o := c.objects[id]; o != nil && o.blocks[index] != nil {
		c.mu.Unlock()
		return
	}
	c.evict(int64(len(sealed)))
	c.mu.Unlock()
	path := c.blockPath(name)
	err := os.MkdirAll(filepath.Dir(path), 0o700)
	if err == nil {
		err = writeFileAtomic(path, sealed)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.stats.StoreErrors++
		if time.Since(c.lastErr) > time.Minute {
			c.lastErr = time.Now()
			c.log.Warn("read cache: cannot store a block (disk full?); reads continue uncached", "dir", c.opt.Dir, "cause", err.Error())
		}
		return
	}
	o := c.objects[id]
	if o == nil {
		o = &object{id: id, info: *info, blocks: map[int64]*block{}}
		o.info.Key, o.info.ETag = id.key, id.etag
		c.objects[id] = o
	}
	if old := o.blocks[index]; old != nil {
		c.drop(old)
	}
	b := &block{obj: o, index: index, n: len(data), size: int64(len(sealed)), name: name, used: time.Now().UnixNano()}
	o.blocks[index] = b
	c.objects[id] = o
	c.lru.pushFront(b)
	c.used += b.size
	c.stats.Stored++
	c.dirty = true
	c.evict(0)
}

// Stats returns the counters so far.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Cache) saver() {
	defer close(c.done)
	t := time.NewTicker(c.opt.SaveEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.save()
		}
	}
}

// save writes the index if it changed.
func (c *Cache) save() {
	c.mu.Lock()
	if !c.dirty {
		c.mu.Unlock()
		return
	}
	var ix index
	for _, o := range c.objects {
		e := indexObject{Info: o.info}
		for _, b := range o.blocks {
			e.Blocks = append(e.Blocks, indexBlock{Index: b.index, N: b.n, Size: b.size, Used: b.used})
		}
		ix.Objects = append(ix.Objects, e)
	}
	c.dirty = false
	c.mu.Unlock()
	plain, _ := json.Marshal(ix)
	sealed := c.seal(plain, aadIndex)
	clear(plain)
	if err := writeFileAtomic(filepath.Join(c.opt.Dir, indexFile), sealed); err != nil {
		c.mu.Lock()
		c.dirty = true
		c.mu.Unlock()
		c.log.Warn("read cache: cannot write its index", "dir", c.opt.Dir, "cause", err.Error())
	}
}

// Close writes the index and releases the directory.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	c.save()
	cse.Zero(c.mac)
	return c.lock.Close()
}

// writeFileAtomic writes data to path through a temporary file and rename,
// so a crash leaves the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

var _ io.Closer = (*Cache)(nil)
