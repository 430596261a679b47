package cse

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
)

// ghashChunk is the unit in which ciphertext is fed to GHASH. It is fixed so
// that H^(ghashChunk/16) and the chunk's length-block term are computed once
// per key. 64 KiB keeps the chunk in L2 between the CTR and GHASH passes.
const ghashChunk = 64 << 10

// gfElem is an element of GF(2^128) in GCM's bit order: hi holds bytes 0..7
// (big endian), lo bytes 8..15. Bit 0 of the field element is the MSB of hi.
type gfElem struct{ hi, lo uint64 }

func gfLoad(b []byte) gfElem {
	return gfElem{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:16])}
}

func (x gfElem) store(b []byte) {
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:16], x.lo)
}

func (x gfElem) xor(y gfElem) gfElem { return gfElem{x.hi ^ y.hi, x.lo ^ y.lo} }

// gfMul multiplies in GF(2^128) with the GCM polynomial (NIST SP 800-38D,
// Algorithm 1). It is a plain bitwise loop: it runs a few times per 64 KiB
// chunk, never per block, and it is constant-time (no secret-dependent
// branches).
func gfMul(x, y gfElem) gfElem {
	var z gfElem
	v := y
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = (x.hi >> (63 - uint(i))) & 1
		} else {
			bit = (x.lo >> (127 - uint(i))) & 1
		}
		mask := -bit
		z.hi ^= v.hi & mask
		z.lo ^= v.lo & mask
		lsb := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ (0xe100000000000000 & -lsb)
	}
	return z
}

// gfPow returns h^n for n >= 0.
func gfPow(h gfElem, n uint64) gfElem {
	r := gfElem{hi: 1 << 63} // the field's 1
	for n > 0 {
		if n&1 == 1 {
			r = gfMul(r, h)
		}
		h = gfMul(h, h)
		n >>= 1
	}
	return r
}

// gcmCore is the shared state of streaming GCM encryption and decryption:
// AES-CTR for the data, and an incremental GHASH over the ciphertext.
//
// GHASH of a chunk is obtained from the standard library's assembly GCM by
// authenticating the chunk as additional data under a fixed internal nonce N'
// with empty plaintext: tag' = GHASH_H(A=chunk) ^ E_K(N'||1). Writing S for
// the GHASH state after the chunk's m blocks (without the length block LB),
// tag' ^ E_K(N'||1) = S·H ^ LB·H. The running value z = X·H (X the GHASH state
// of the whole message so far) then advances as z = z·H^m ^ (S·H). The final
// GHASH is z ^ LBfinal·H, where LBfinal = 0^64 || bitlen(C). The internal tags
// never leave this type.
type gcmCore struct {
	block    cipher.Block
	iv       [GCMIVSize]byte
	ctr      cipher.Stream // the decrypt path's running CTR stream
	aead     cipher.AEAD   // 12-byte nonces: GHASH via AD, and the first sealed chunk
	aead16   cipher.AEAD   // 16-byte nonces: fused sealing of later chunks (see sealChunk)
	hInv2    gfElem        // H^-2, computed with aead16
	lb16H    gfElem        // LB(16-byte nonce)·H
	hFused   gfElem        // H^(fusedChunk/16)
	lbFused  gfElem        // LB(C = fusedChunk bytes)·H
	h        gfElem
	hChunk   gfElem // H^(ghashChunk/16)
	lbChunk  gfElem // LB(A = ghashChunk bytes)·H
	lbChunkC gfElem // LB(C = ghashChunk bytes)·H
	ekJ0     [16]byte
	ekJ0p    [16]byte
	z        gfElem
	n        int64 // ciphertext bytes hashed
	tagBuf   [16]byte
	// aadS is the GHASH state after the additional data A (its blocks,
	// zero-padded, without a length block): Σ A_j·H^(a-j+1) over its a
	// blocks; aadBits is its length in bits. Both are zero without A.
	aadS    gfElem
	aadBits uint64
}

var fixedNonce [GCMIVSize]byte

func newGCMCore(key, iv, aad []byte) (*gcmCore, error) {
	if len(key) != 16 && len(key) != 24 && len(key) != 32 {
		return nil, fmt.Errorf("cse: AES key of %d bytes: %w", len(key), ErrMalformed)
	}
	if len(iv) != GCMIVSize {
		return nil, fmt.Errorf("cse: GCM IV of %d bytes, want %d: %w", len(iv), GCMIVSize, ErrMalformed)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	c := &gcmCore{block: block, aead: aead}
	copy(c.iv[:], iv)
	var hb [16]byte
	block.Encrypt(hb[:], hb[:])
	c.h = gfLoad(hb[:])
	c.hChunk = gfPow(c.h, ghashChunk/16)
	c.lbChunk = gfMul(gfElem{hi: ghashChunk * 8}, c.h)
	c.lbChunkC = gfMul(gfElem{lo: ghashChunk * 8}, c.h)

	var j [16]byte
	copy(j[:], iv)
	j[15] = 1
	block.Encrypt(c.ekJ0[:], j[:])
	copy(j[:], fixedNonce[:])
	j[12], j[13], j[14], j[15] = 0, 0, 0, 1
	block.Encrypt(c.ekJ0p[:], j[:])

	copy(j[:], iv)
	binary.BigEndian.PutUint32(j[12:], 2)
	c.ctr = cipher.NewCTR(block, j[:])
	clear(j[:])
	c.aadBits = uint64(len(aad)) * 8
	for len(aad) > 0 {
		var blk [16]byte
		aad = aad[copy(blk[:], aad):]
		c.aadS = gfMul(c.aadS.xor(gfLoad(blk[:])), c.h)
	}
	return c, nil
}

// hash feeds ciphertext to GHASH. Every call but the last must be a multiple
// of 16 bytes (the caller enforces this).
func (c *gcmCore) hash(ct []byte) {
	c.n += int64(len(ct))
	for len(ct) > 0 {
		k := min(len(ct), ghashChunk)
		chunk := ct[:k]
		ct = ct[k:]
		t := c.aead.Seal(c.tagBuf[:0], fixedNonce[:], nil, chunk)
		s := gfLoad(t).xor(gfLoad(c.ekJ0p[:]))
		if k == ghashChunk {
			s = s.xor(c.lbChunk)
			c.z = gfMul(c.z, c.hChunk).xor(s)
		} else {
			s = s.xor(gfMul(gfElem{hi: uint64(k) * 8}, c.h))
			c.z = gfMul(c.z, gfPow(c.h, uint64(k+15)/16)).xor(s)
		}
	}
}

// tag computes the final tag into dst[:16].
//
// The additional data A, if any, precedes the m ciphertext blocks in GHASH,
// so its term is aadS·H^(m+1); the ciphertext terms in z do not depend on A
// (each C_i is weighted H^(m+2-i) either way), and the length block gains
// bitlen(A) in its upper half.
func (c *gcmCore) tag(dst []byte) {
	g := c.z.xor(gfMul(gfElem{hi: c.aadBits, lo: uint64(c.n) * 8}, c.h))
	if c.aadBits > 0 {
		m := uint64(c.n+BlockSize-1) / BlockSize
		g = g.xor(gfMul(c.aadS, gfPow(c.h, m+1)))
	}
	g.store(dst)
	subtle.XORBytes(dst[:16], dst[:16], c.ekJ0[:])
}

// fusedAfter is the message offset after which sealing switches to the
// fused path for chunks past the first (see sealChunk). Below it, the one-off
// cost of inverting H^2 (~75µs) would outweigh the gain (~90µs per MiB).
var fusedAfter int64 = 1 << 20

// fusedChunk is the chunk size on the fused path: it makes one pass, so it
// needs no cache locality, and larger chunks amortise the per-chunk field
// multiplications.
const fusedChunk = 1 << 20

// fused reports whether the next chunk goes through the fused path.
func (c *gcmCore) fused() bool { return c.n > 0 && c.n >= fusedAfter }

// gfInv returns x^-1 = x^(2^128-2) in GF(2^128) (x != 0).
func gfInv(x gfElem) gfElem {
	r := gfElem{hi: 1 << 63}
	for i := 127; i >= 0; i-- {
		r = gfMul(r, r)
		if i != 0 {
			r = gfMul(r, x)
		}
	}
	return r
}

// sealChunk encrypts src (at most ghashChunk bytes, or fusedChunk on the
// fused path; a multiple of 16 unless
// it is the last) into d[:len(src)] and feeds the ciphertext to GHASH.
// If borrow, d[len(src):len(src)+TagSize] exists and may be borrowed for the
// standard library's tag (it is saved and restored; it may be the next chunk
// of an in-place Seal); otherwise the chunk goes through scratch (capacity
// ghashChunk+TagSize), costing a copy.
//
// Sealing the chunk that starts at plaintext block b needs AES-CTR from
// counter IV||BE32(2+b) plus GHASH of the result. The standard library's
// fused assembly GCM does both in one pass, but starts its counter at
// inc32(J0) for J0 = IV||1 (12-byte nonce). For b = 0 that is exactly right.
// For b > 0 a 16-byte nonce N is used: then J0 = GHASH_H(N || 0^64 || BE64(128))
// = N·H^2 ^ LB16·H, so N = (IV||BE32(1+b) ^ LB16·H)·H^-2 makes the library
// start at IV||BE32(2+b). Its tag is GHASH_H(C) ^ E_K(J0), from which the
// chunk's GHASH term is recovered as for hash.
func (c *gcmCore) sealChunk(d, src []byte, borrow bool, scratch []byte) {
	k := len(src)
	block := uint64(c.n / BlockSize)
	var (
		aead  cipher.AEAD
		nonce []byte
		ekJ   [16]byte
		n16   [16]byte
	)
	switch {
	case block == 0:
		aead, nonce, ekJ = c.aead, c.iv[:], c.ekJ0
	case c.fused():
		if c.aead16 == nil {
			a, err := cipher.NewGCMWithNonceSize(c.block, 16)
			if err != nil {
				panic("cse: internal error: " + err.Error())
			}
			c.aead16 = a
			c.hInv2 = gfInv(gfMul(c.h, c.h))
			c.lb16H = gfMul(gfElem{lo: 128}, c.h)
			c.hFused = gfPow(c.h, fusedChunk/BlockSize)
			c.lbFused = gfMul(gfElem{lo: fusedChunk * 8}, c.h)
		}
		var j0 [16]byte
		copy(j0[:], c.iv[:])
		binary.BigEndian.PutUint32(j0[12:], uint32(1+block))
		c.block.Encrypt(ekJ[:], j0[:])
		gfMul(gfLoad(j0[:]).xor(c.lb16H), c.hInv2).store(n16[:])
		aead, nonce = c.aead16, n16[:]
	default:
		// Two passes: CTR, then GHASH of the ciphertext.
		var ctrIV [16]byte
		copy(ctrIV[:], c.iv[:])
		binary.BigEndian.PutUint32(ctrIV[12:], uint32(2+block))
		cipher.NewCTR(c.block, ctrIV[:]).XORKeyStream(d[:k], src)
		c.hash(d[:k])
		return
	}
	var tag [TagSize]byte
	if borrow {
		ext := d[:k+TagSize]
		var save [TagSize]byte
		copy(save[:], ext[k:])
		out := aead.Seal(d[:0], nonce, src, nil)
		if &out[0] != &d[0] {
			panic("cse: internal error: Seal did not encrypt in place")
		}
		copy(tag[:], out[k:])
		copy(ext[k:], save[:])
	} else {
		out := aead.Seal(scratch[:0], nonce, src, nil)
		copy(d[:k], out[:k])
		copy(tag[:], out[k:])
	}
	s := gfLoad(tag[:]).xor(gfLoad(ekJ[:]))
	m := uint64(k+BlockSize-1) / BlockSize
	switch {
	case k == ghashChunk:
		s = s.xor(c.lbChunkC)
		c.z = gfMul(c.z, c.hChunk).xor(s)
	case k == fusedChunk && c.aead16 != nil:
		s = s.xor(c.lbFused)
		c.z = gfMul(c.z, c.hFused).xor(s)
	default:
		s = s.xor(gfMul(gfElem{lo: uint64(k) * 8}, c.h))
		c.z = gfMul(c.z, gfPow(c.h, m)).xor(s)
	}
	c.n += int64(k)
}

// GCMSealer encrypts one AES-GCM message in pieces. The concatenation of
// every Seal output followed by Tag() is byte-identical to
// cipher.NewGCM(aes).Seal(nil, iv, plaintext, aad), where aad is the
// additional data given to newGCMSealerAAD (none for newGCMSealer).
//
// Not safe for concurrent use. Memory use is constant.
type GCMSealer struct {
	core    *gcmCore
	scratch []byte // for chunks whose tag cannot borrow dst; allocated when first needed
	partial bool   // a Seal of a non-16-multiple length happened: it was the last
	done    bool
}

// newGCMSealer starts a message under key (16, 24 or 32 bytes) and a 12-byte IV.
// It returns an error wrapping ErrMalformed for bad sizes.
func newGCMSealer(key, iv []byte) (*GCMSealer, error) {
	return newGCMSealerAAD(key, iv, nil)
}

// newGCMSealerAAD is newGCMSealer with additional authenticated data aad
// (the S3EC V3 content cipher authenticates its suite id, commitAAD). aad is
// consumed here and not retained.
func newGCMSealerAAD(key, iv, aad []byte) (*GCMSealer, error) {
	core, err := newGCMCore(key, iv, aad)
	if err != nil {
		return nil, err
	}
	return &GCMSealer{core: core}, nil
}

// Seal encrypts src into dst[:len(src)]. dst must be at least as long as src
// and may be src itself (in-place), but must not otherwise overlap it.
// Every call except the last must pass a multiple of 16 bytes; calling Seal
// after a non-multiple, or after Tag, panics (a caller bug). Seal returns an
// error wrapping ErrTooLarge, and encrypts nothing, if the message would
// exceed MaxGCMPlaintext; callers that ignore the result must bound sizes
// themselves.
func (s *GCMSealer) Seal(dst, src []byte) error {
	if s.done {
		panic("cse: internal error: GCMSealer.Seal after Tag")
	}
	if len(src) == 0 {
		return nil
	}
	if s.partial {
		panic("cse: internal error: GCMSealer.Seal after a non-16-multiple piece")
	}
	if len(dst) < len(src) {
		panic("cse: internal error: GCMSealer.Seal dst shorter than src")
	}
	if s.core.n+int64(len(src)) > MaxGCMPlaintext {
		return fmt.Errorf("cse: sealing %d bytes after %d: %w", len(src), s.core.n, ErrTooLarge)
	}
	if len(src)%BlockSize != 0 {
		s.partial = true
	}
	s.seal(dst, src, false)
	return nil
}

// seal encrypts chunk by chunk. spare says that dst has TagSize bytes of
// capacity past len(src) that nobody else uses (EncryptWriter's own buffer).
func (s *GCMSealer) seal(dst, src []byte, spare bool) {
	for len(src) > 0 {
		chunk := ghashChunk
		if s.core.fused() {
			chunk = fusedChunk
		}
		k := min(len(src), chunk)
		// The tag may borrow the next chunk's output bytes, which this call
		// overwrites anyway, or the spare capacity.
		borrow := len(src) >= k+TagSize || spare
		if !borrow && cap(s.scratch) < k+TagSize {
			s.scratch = make([]byte, 0, k+TagSize)
		}
		s.core.sealChunk(dst, src[:k], borrow, s.scratch)
		dst, src = dst[k:], src[k:]
	}
}

// Tag ends the message and returns the 16-byte tag. Seal must not be called
// afterwards; Tag may be called again and returns the same value.
func (s *GCMSealer) Tag() []byte {
	t := make([]byte, TagSize)
	s.core.tag(t)
	s.done = true
	return t
}

// Size returns the number of plaintext bytes sealed so far.
func (s *GCMSealer) Size() int64 { return s.core.n }

// encryptBuf is the EncryptWriter's buffer size: at most this much plaintext
// is held before it is encrypted and written.
const encryptBuf = ghashChunk

// EncryptWriter is an io.WriteCloser that AES-GCM encrypts everything written
// to it onto dst, followed by the tag on Close. The output equals a one-shot
// GCM Seal with no additional data. It buffers at most 64 KiB. Errors are
// sticky: after a failed Write or Close, every call returns the same error.
// Errors from dst are returned wrapped, without a cse sentinel.
type EncryptWriter struct {
	dst    io.Writer
	s      *GCMSealer
	buf    []byte // len = encryptBuf
	n      int    // buffered plaintext bytes
	err    error
	closed bool
}

var _ io.WriteCloser = (*EncryptWriter)(nil)

// newEncryptWriter returns a writer that encrypts onto dst under key and a
// 12-byte IV.
func newEncryptWriter(dst io.Writer, key, iv []byte) (*EncryptWriter, error) {
	return newEncryptWriterAAD(dst, key, iv, nil)
}

// newEncryptWriterAAD is newEncryptWriter with additional authenticated data
// aad: the output equals a one-shot Seal(nil, iv, plaintext, aad).
func newEncryptWriterAAD(dst io.Writer, key, iv, aad []byte) (*EncryptWriter, error) {
	s, err := newGCMSealerAAD(key, iv, aad)
	if err != nil {
		return nil, err
	}
	// TagSize spare capacity lets the sealer encrypt in place (sealChunk).
	return &EncryptWriter{dst: dst, s: s, buf: make([]byte, encryptBuf, encryptBuf+TagSize)}, nil
}

func (w *EncryptWriter) emit(ct []byte) error {
	if _, err := w.dst.Write(ct); err != nil {
		w.err = fmt.Errorf("cse: writing ciphertext: %w", err)
		return w.err
	}
	return nil
}

// sealBuf encrypts src (w.buf itself or caller memory) into w.buf, whose
// spare capacity the sealer may borrow.
func (w *EncryptWriter) sealBuf(src []byte) error {
	if w.s.core.n+int64(len(src)) > MaxGCMPlaintext {
		w.err = fmt.Errorf("cse: %w", ErrTooLarge)
		return w.err
	}
	if len(src) > 0 {
		if w.s.partial {
			panic("cse: internal error: EncryptWriter sealed a partial block")
		}
		w.s.partial = len(src)%BlockSize != 0
		w.s.seal(w.buf, src, true)
	}
	return nil
}

// Write encrypts p. It returns len(p) unless an error occurred.
func (w *EncryptWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		w.err = fmt.Errorf("cse: write after Close: %w", io.ErrClosedPipe)
		return 0, w.err
	}
	if w.s.core.n+int64(w.n)+int64(len(p)) > MaxGCMPlaintext {
		w.err = fmt.Errorf("cse: %w", ErrTooLarge)
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if w.n == 0 && len(p) >= encryptBuf {
			// Encrypt straight from p into buf: no copy of the plaintext.
			if err := w.sealBuf(p[:encryptBuf]); err != nil {
				return written, err
			}
			if err := w.emit(w.buf); err != nil {
				return written, err
			}
			p = p[encryptBuf:]
			written += encryptBuf
			continue
		}
		k := copy(w.buf[w.n:], p)
		w.n += k
		p = p[k:]
		written += k
		if w.n == encryptBuf {
			if err := w.sealBuf(w.buf); err != nil {
				return written, err
			}
			w.n = 0
			if err := w.emit(w.buf); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// Close encrypts what is buffered and writes it and the tag. It does not close
// dst. A second Close returns the result of the first.
func (w *EncryptWriter) Close() error {
	if w.closed || w.err != nil {
		return w.err
	}
	w.closed = true
	if err := w.sealBuf(w.buf[:w.n]); err != nil {
		return err
	}
	out := append(w.buf[:w.n], w.s.Tag()...)
	w.n = 0
	return w.emit(out)
}

// gcmDecryptReader streams plaintext, holding back the last TagSize bytes
// of the input, which it checks as the tag at EOF.
//
// Ciphertext is read straight into the caller's buffer and decrypted in
// place when that buffer is large (no copies); small reads go through an
// internal 64 KiB buffer.
type gcmDecryptReader struct {
	src   io.Reader
	core  *gcmCore
	pend  []byte // held-back ciphertext, TagSize..2*BlockSize-1 bytes between fills
	buf   []byte // for small reads; allocated on first use
	out   []byte // decrypted, not yet returned (aliases buf)
	total int64  // ciphertext bytes read from src
	err   error
}

// directRead is the smallest Read buffer decrypted into directly.
const directRead = 4096

// A Lender is a source that lends the bytes it has buffered instead of
// copying them out, so that a decrypting reader can decrypt straight from its
// buffer into the caller's (a prefetcher of ranged GETs, say). Next returns
// the next at most n bytes of the stream, at least one unless err is not nil;
// they stay valid until the next call. At the end of the stream it returns
// io.EOF, with no bytes. n is always positive.
type Lender interface {
	Next(n int) ([]byte, error)
}

// newGCMDecryptReader returns a reader of the plaintext of a GCM body (the
// ciphertext followed by the 16-byte tag) read from src.
//
// Plaintext is released as it streams, before the tag has been checked. The
// last piece read from src (at least the final 16..4096+ bytes, and the whole
// body when it arrives in one Read buffer) is held until the tag verifies.
// The reader returns io.EOF only after the tag verified. Otherwise it returns
// an error wrapping ErrAuthentication (tag mismatch) or ErrTruncated (fewer
// than 16 bytes in all), and the caller must discard everything it read.
// Read errors from src are returned wrapped. Errors are sticky.
func newGCMDecryptReader(src io.Reader, key, iv []byte) (io.Reader, error) {
	return newGCMDecryptReaderAAD(src, key, iv, nil)
}

// newGCMDecryptReaderAAD is newGCMDecryptReader for a body sealed with
// additional authenticated data aad.
func newGCMDecryptReaderAAD(src io.Reader, key, iv, aad []byte) (io.Reader, error) {
	core, err := newGCMCore(key, iv, aad)
	if err != nil {
		return nil, err
	}
	return &gcmDecryptReader{src: src, core: core, pend: make([]byte, 0, 2*BlockSize)}, nil
}

func (r *gcmDecryptReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if len(p) >= directRead {
			if n := r.decryptInto(p); n > 0 {
				return n, nil
			}
			continue // r.err is set
		}
		if r.buf == nil {
			r.buf = make([]byte, ghashChunk)
		}
		r.out = r.buf[:r.decryptInto(r.buf)]
	}
	k := copy(p, r.out)
	r.out = r.out[k:]
	return k, nil
}

// decryptInto fills t (len(t) > 2*BlockSize) with held-back ciphertext and
// then src, until t is full or src ends; it decrypts in place and returns how
// many plaintext bytes t now starts with. It sets r.err on failure or EOF.
func (r *gcmDecryptReader) decryptInto(t []byte) int {
	if l, ok := r.src.(Lender); ok {
		return r.decryptLent(t, l)
	}
	m := copy(t, r.pend)
	r.pend = r.pend[:0]
	for m < len(t) {
		n, err := r.src.Read(t[m:])
		m += n
		r.total += int64(n)
		if err == io.EOF {
			return r.finish(t[:m])
		}
		if err != nil {
			r.err = fmt.Errorf("cse: reading ciphertext at offset %d: %w", r.total, err)
			return 0
		}
	}
	// t is full and src may have more: release a 16-multiple, hold back at
	// least TagSize bytes.
	k := (m - TagSize) &^ (BlockSize - 1)
	r.pend = append(r.pend, t[k:m]...)
	if r.core.n+int64(k) > MaxGCMPlaintext {
		r.err = fmt.Errorf("cse: GCM body longer than the format allows: %w", ErrMalformed)
		return 0
	}
	r.decryptChunks(t[:k])
	return k
}

// decryptLent is decryptInto for a Lender: what it lends is decrypted
// straight into t, without being copied there first. Only the few bytes that
// make the held-back ciphertext up to a whole block, and the new held-back
// tail, are copied. The invariant at each step: t[:d] is plaintext, t[d:m]
// held-back ciphertext (TagSize..2*BlockSize-1 bytes after each release), d
// a multiple of BlockSize.
func (r *gcmDecryptReader) decryptLent(t []byte, src Lender) int {
	d, m := 0, copy(t, r.pend)
	r.pend = r.pend[:0]
	for m < len(t) {
		b, err := src.Next(len(t) - m)
		r.total += int64(len(b))
		if err == io.EOF && len(b) == 0 {
			if n := r.finish(t[d:m]); n > 0 || r.err == io.EOF {
				return d + n
			}
			return 0 // nothing of this call is released unless the tag verifies
		}
		if err != nil {
			r.err = fmt.Errorf("cse: reading ciphertext at offset %d: %w", r.total, err)
			return 0
		}
		held := m - d
		k := (held + len(b) - TagSize) &^ (BlockSize - 1) // releasable now
		if k <= 0 {
			m += copy(t[m:], b) // too little yet: hold it all
			continue
		}
		if r.core.n+int64(k) > MaxGCMPlaintext {
			r.err = fmt.Errorf("cse: GCM body longer than the format allows: %w", ErrMalformed)
			return 0
		}
		if k <= held { // a short lend: release from what t holds
			r.decryptChunks(t[d : d+k])
			d += k
			m += copy(t[m:], b)
			continue
		}
		// Complete the held-back bytes to a whole block from b, decrypt
		// them in place, then the rest of the releasable bytes from b.
		a := (BlockSize - held%BlockSize) % BlockSize
		copy(t[m:], b[:a])
		r.decryptChunks(t[d : m+a])
		from := k - held // b[a:from] is released, b[from:] held back
		r.decryptChunksTo(t[m+a:d+k], b[a:from])
		d += k
		m = d + copy(t[d:], b[from:])
	}
	// t is full and src may have more: hold back what is not released.
	r.pend = append(r.pend, t[d:m]...)
	return d
}

// decryptChunks hashes then decrypts ct in place, chunk by chunk.
func (r *gcmDecryptReader) decryptChunks(ct []byte) { r.decryptChunksTo(ct, ct) }

// decryptChunksTo hashes ct and decrypts it into dst[:len(ct)], chunk by
// chunk (dst and ct may be the same memory).
func (r *gcmDecryptReader) decryptChunksTo(dst, ct []byte) {
	for len(ct) > 0 {
		k := min(len(ct), ghashChunk)
		r.core.hash(ct[:k])
		r.core.ctr.XORKeyStream(dst[:k], ct[:k])
		ct, dst = ct[k:], dst[k:]
	}
}

// finish handles the final piece t = the rest of the ciphertext plus the tag.
func (r *gcmDecryptReader) finish(t []byte) int {
	if len(t) < TagSize {
		r.err = fmt.Errorf("cse: GCM body of %d bytes is shorter than the tag: %w", r.total, ErrTruncated)
		return 0
	}
	ct := t[:len(t)-TagSize]
	if r.core.n+int64(len(ct)) > MaxGCMPlaintext {
		r.err = fmt.Errorf("cse: GCM body longer than the format allows: %w", ErrMalformed)
		return 0
	}
	// Hash everything first: nothing of this piece is released unless the
	// tag verifies.
	for rest := ct; len(rest) > 0; {
		k := min(len(rest), ghashChunk)
		r.core.hash(rest[:k])
		rest = rest[k:]
	}
	var want [TagSize]byte
	r.core.tag(want[:])
	if subtle.ConstantTimeCompare(want[:], t[len(ct):]) != 1 {
		r.err = fmt.Errorf("cse: GCM tag mismatch after %d bytes: %w", r.total, ErrAuthentication)
		return 0
	}
	r.core.ctr.XORKeyStream(ct, ct)
	r.err = io.EOF
	return len(ct)
}

// openGCM decrypts and authenticates a whole GCM body held in memory with the
// standard library. It returns ErrTruncated for fewer than 16 bytes and
// ErrAuthentication when the tag does not verify.
func openGCM(key, iv, body []byte) ([]byte, error) { return openGCMAAD(key, iv, body, nil) }

// openGCMAAD is openGCM for a body sealed with additional data aad.
func openGCMAAD(key, iv, body, aad []byte) ([]byte, error) {
	if len(iv) != GCMIVSize {
		return nil, fmt.Errorf("cse: GCM IV of %d bytes: %w", len(iv), ErrMalformed)
	}
	if len(body) < TagSize {
		return nil, fmt.Errorf("cse: GCM body of %d bytes: %w", len(body), ErrTruncated)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	plain, err := aead.Open(nil, iv, body, aad)
	if err != nil {
		return nil, fmt.Errorf("cse: GCM tag mismatch: %w", ErrAuthentication)
	}
	return plain, nil
}

// GCMPlainSize returns the plaintext size of a GCM body of cipherSize bytes.
// It fails with ErrTruncated below 16 bytes and ErrMalformed above
// MaxGCMPlaintext+16.
func GCMPlainSize(cipherSize int64) (int64, error) {
	if cipherSize < TagSize {
		return 0, fmt.Errorf("cse: GCM body of %d bytes: %w", cipherSize, ErrTruncated)
	}
	if cipherSize-TagSize > MaxGCMPlaintext {
		return 0, fmt.Errorf("cse: GCM body of %d bytes: %w", cipherSize, ErrMalformed)
	}
	return cipherSize - TagSize, nil
}

// gcmCipherSize returns the size of the GCM body for plainSize bytes of
// plaintext: plainSize + 16.
func gcmCipherSize(plainSize int64) int64 { return plainSize + TagSize }

// decryptGCMRange decrypts, WITHOUT authentication, a piece of a GCM body:
// src is ciphertext starting at byte plainOff of the body (any offset), and
// dst[:len(src)] receives the matching plaintext. It is plain AES-CTR with the
// counter of block k set to IV || BE32(2+k). src must not include tag bytes.
// The output is malleable: an attacker who can change the object can flip
// plaintext bits undetected (see the package doc).
func decryptGCMRange(key, iv []byte, plainOff int64, dst, src []byte) error {
	if len(iv) != GCMIVSize {
		return fmt.Errorf("cse: GCM IV of %d bytes: %w", len(iv), ErrMalformed)
	}
	if plainOff < 0 || plainOff+int64(len(src)) > MaxGCMPlaintext {
		return fmt.Errorf("cse: GCM range at %d+%d outside the message: %w", plainOff, len(src), ErrMalformed)
	}
	if len(dst) < len(src) {
		panic("cse: internal error: decryptGCMRange dst shorter than src")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	var ctrIV [16]byte
	copy(ctrIV[:], iv)
	binary.BigEndian.PutUint32(ctrIV[12:], uint32(2+plainOff/BlockSize))
	stream := cipher.NewCTR(block, ctrIV[:])
	if skip := int(plainOff % BlockSize); skip > 0 {
		var discard [BlockSize]byte
		stream.XORKeyStream(discard[:skip], discard[:skip])
	}
	stream.XORKeyStream(dst[:len(src)], src)
	return nil
}
