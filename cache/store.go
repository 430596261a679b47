package cache

import (
	"context"
	"errors"
	"io"

	"github.com/csefs/csefs/objectstore"
)

// Store is an objectstore.Store whose ETag-pinned Gets go through a Cache.
// Everything else goes to the inner store unchanged.
//
// A Get pinned to ETag E (GetOptions.IfMatch) whose blocks are all cached is
// served from the cache, with no request; otherwise the range, widened to
// whole blocks, is fetched from the inner store and its blocks are stored
// as they stream by. Because entries are keyed by ETag, a read pinned to an
// ETag the object no longer has is served from the cache where a GET would
// fail with ErrPreconditionFailed: the bytes are still those of version E,
// which is what a handle opened on E reads.
type Store struct {
	objectstore.Store
	c *Cache
}

// Wrap returns inner with reads cached in c.
func Wrap(inner objectstore.Store, c *Cache) *Store { return &Store{Store: inner, c: c} }

// Inner returns the wrapped store.
func (s *Store) Inner() objectstore.Store { return s.Store }

// Get implements objectstore.Store.
func (s *Store) Get(ctx context.Context, key string, opt objectstore.GetOptions) (io.ReadCloser, *objectstore.Info, error) {
	if opt.IfMatch == "" || opt.Length == 0 || opt.Offset < 0 || opt.Length < -1 {
		return s.Store.Get(ctx, key, opt)
	}
	id := objID{key, opt.IfMatch}
	first := opt.Offset / BlockSize
	last := int64(-1)
	end := int64(-1) // exclusive; -1: the object's end
	if opt.Length > 0 {
		end = opt.Offset + opt.Length
		last = (end - 1) / BlockSize
	}
	if info, bs, ok := s.c.lookup(id, first, last); ok {
		if end < 0 || end > info.Size {
			end = info.Size
		}
		if opt.Offset < end || opt.Offset == 0 {
			s.c.count(true)
			refetch := func(pos, n int64) (io.ReadCloser, error) {
				rc, _, err := s.Get(ctx, key, objectstore.GetOptions{Offset: pos, Length: n, IfMatch: opt.IfMatch})
				return rc, err
			}
			return &hitReader{c: s.c, blocks: bs, off: opt.Offset - first*BlockSize, pos: opt.Offset,
				left: end - opt.Offset, refetch: refetch}, info, nil
		}
	}
	s.c.count(false)
	wide := objectstore.GetOptions{Offset: first * BlockSize, Length: -1, IfMatch: opt.IfMatch}
	if last >= 0 {
		wide.Length = (last+1)*BlockSize - wide.Offset
	}
	rc, info, err := s.Store.Get(ctx, key, wide)
	if err != nil {
		if errors.Is(err, objectstore.ErrInvalidRange) {
			// Widening never moves the start past the asked one; let
			// the store give its own answer for the exact range.
			return s.Store.Get(ctx, key, opt)
		}
		return nil, nil, err
	}
	want := int64(-1)
	if end >= 0 {
		want = end - opt.Offset
	}
	if info.ETag == "" {
		info.ETag = opt.IfMatch
	}
	info.Key = key
	return &fillReader{c: s.c, info: info, rc: rc, pos: wide.Offset, index: first,
		skip: opt.Offset - wide.Offset, left: want, buf: make([]byte, 0, BlockSize)}, info, nil
}

func (c *Cache) count(hit bool) {
	c.mu.Lock()
	if hit {
		c.stats.Hits++
	} else {
		c.stats.Misses++
	}
	c.mu.Unlock()
}

// hitReader serves a range from cached blocks, one block in memory at a
// time. If a block has gone meanwhile (evicted, or unreadable), the rest of
// the range is fetched from the store (refetch).
type hitReader struct {
	c       *Cache
	blocks  []*block
	off     int64 // into the current block
	pos     int64 // stored offset of the next byte to deliver
	left    int64 // bytes still to deliver
	cur     []byte
	err     error
	refetch func(pos, n int64) (io.ReadCloser, error)
	rest    io.ReadCloser // the refetched rest, once a block is gone
}

func (r *hitReader) Read(p []byte) (int, error) {
	if r.rest != nil {
		n, err := r.rest.Read(p)
		r.left -= int64(n)
		return n, err
	}
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.left <= 0 || len(r.blocks) == 0 {
			return 0, io.EOF
		}
		data, ok := r.c.readBlock(r.blocks[0])
		if !ok {
			r.rest, r.err = r.refetch(r.pos, r.left)
			if r.err != nil {
				return 0, r.err
			}
			return r.Read(p)
		}
		r.blocks = r.blocks[1:]
		if r.off >= int64(len(data)) {
			r.off -= int64(len(data))
			continue
		}
		data = data[r.off:]
		r.off = 0
		if int64(len(data)) > r.left {
			data = data[:r.left]
		}
		r.cur = data
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	r.left -= int64(n)
	r.pos += int64(n)
	return n, nil
}

func (r *hitReader) Close() error {
	r.cur, r.blocks = nil, nil
	if r.err == nil {
		r.err = errors.New("cache: read after Close")
	}
	if r.rest != nil {
		return r.rest.Close()
	}
	return nil
}

// fillReader delivers the asked range of a widened GET and stores every
// whole block (and the object's last, short one) it sees.
type fillReader struct {
	c     *Cache
	info  *objectstore.Info
	rc    io.ReadCloser
	pos   int64 // stored offset of the next byte from rc
	index int64 // block number of buf
	buf   []byte
	skip  int64 // bytes of the widened range before the asked one
	left  int64 // asked bytes still to deliver; -1: to the end
	ready []byte
	err   error
	eof   bool
}

func (r *fillReader) Read(p []byte) (int, error) {
	for len(r.ready) == 0 {
		if r.left == 0 || r.eof {
			return 0, io.EOF
		}
		if r.err != nil {
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.ready)
	r.ready = r.ready[n:]
	if r.left > 0 {
		r.left -= int64(n)
	}
	return n, nil
}

// fill reads once from rc into buf and sets ready to the new bytes the
// caller asked for.
func (r *fillReader) fill() {
	start := len(r.buf)
	n, err := r.rc.Read(r.buf[start:cap(r.buf)])
	r.buf = r.buf[:start+n]
	r.pos += int64(n)
	fresh := r.buf[start : start+n]
	if r.skip > 0 {
		k := min(r.skip, int64(len(fresh)))
		fresh, r.skip = fresh[k:], r.skip-k
	}
	if r.left >= 0 && int64(len(fresh)) > r.left {
		fresh = fresh[:r.left]
	}
	r.ready = fresh
	if len(r.buf) == cap(r.buf) {
		r.flush()
	}
	switch {
	case err == io.EOF:
		r.eof = true
		if len(r.buf) > 0 && r.pos == r.info.Size {
			r.flush() // the object's last block
		}
	case err != nil:
		r.err = err
	}
}

// flush stores buf as block index and starts the next block. ready may
// point into buf: it is copied first.
func (r *fillReader) flush() {
	if len(r.ready) > 0 {
		r.ready = append([]byte(nil), r.ready...)
	}
	r.c.store(r.info, r.index, r.buf)
	r.index++
	r.buf = r.buf[:0]
}

// Close reads on to the end of the current block (at most one block), so
// that a caller that stops at the end of its range still leaves that block
// cached, then closes the body.
func (r *fillReader) Close() error {
	if r.err == nil && !r.eof && len(r.buf) > 0 {
		for !r.eof && r.err == nil && len(r.buf) > 0 && len(r.buf) < cap(r.buf) {
			r.left = 0
			r.skip = 1 << 62
			r.fill()
		}
	}
	r.err = errors.New("cache: read after Close")
	return r.rc.Close()
}
