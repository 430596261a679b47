package cse

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
)

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
