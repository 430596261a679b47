package cse

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
)

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
