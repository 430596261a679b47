package cse

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
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
