package cse

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"fmt"
	"io"
)

// Legacy AES/CBC/PKCS5Padding (Java SDK v1 EncryptionOnly, the EMRFS
// default). csefs only reads it. CBC has no integrity: the padding check at
// the end is the only thing that can fail, and it catches truncation at a
// block boundary or a wrong key only with high probability, not tampering.

// cbcBuf is the CBC reader's buffer size.
const cbcBuf = 64 << 10

func newCBCBlock(key, iv []byte) (cipher.Block, error) {
	if len(iv) != CBCIVSize {
		return nil, fmt.Errorf("cse: CBC IV of %d bytes, want %d: %w", len(iv), CBCIVSize, ErrMalformed)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	return block, nil
}

// pkcs7Len checks the PKCS#7 padding of the final block b (16 bytes) and
// returns the number of data bytes in it (0..15). (A padding oracle is moot
// for unauthenticated CBC, but the check still avoids data-dependent exits.)
func pkcs7Len(b []byte) (int, error) {
	pad := int(b[BlockSize-1])
	if pad < 1 || pad > BlockSize {
		return 0, fmt.Errorf("cse: bad CBC padding: %w", ErrAuthentication)
	}
	var diff byte
	for _, c := range b[BlockSize-pad:] {
		diff |= c ^ byte(pad)
	}
	if diff != 0 {
		return 0, fmt.Errorf("cse: bad CBC padding: %w", ErrAuthentication)
	}
	return BlockSize - pad, nil
}

type cbcDecryptReader struct {
	src   io.Reader
	mode  cipher.BlockMode
	buf   []byte // cbcBuf + BlockSize
	n     int    // valid bytes in buf
	out   []byte
	keep  bool // buf[cbcBuf:cbcBuf+BlockSize] is held back ciphertext
	total int64
	err   error
}

// newCBCDecryptReader returns a reader of the plaintext of an
// AES/CBC/PKCS5Padding body read from src. It holds back the last block and,
// at the end, strips and checks the padding: io.EOF means the padding was
// valid, ErrAuthentication that it was not (wrong key, or a body cut at a
// block boundary), ErrTruncated an empty body or one that is not a multiple
// of 16 bytes. Nothing here is authenticated. Errors are sticky.
func newCBCDecryptReader(src io.Reader, key, iv []byte) (io.Reader, error) {
	block, err := newCBCBlock(key, iv)
	if err != nil {
		return nil, err
	}
	return &cbcDecryptReader{
		src:  src,
		mode: cipher.NewCBCDecrypter(block, iv),
		buf:  make([]byte, cbcBuf+BlockSize),
	}, nil
}

func (r *cbcDecryptReader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.fill()
	}
	k := copy(p, r.out)
	r.out = r.out[k:]
	return k, nil
}

func (r *cbcDecryptReader) fill() {
	if r.keep {
		r.n = copy(r.buf, r.buf[cbcBuf:cbcBuf+BlockSize])
		r.keep = false
	}
	for r.n < len(r.buf) {
		m, err := r.src.Read(r.buf[r.n:])
		r.n += m
		r.total += int64(m)
		if err == io.EOF {
			r.finish()
			return
		}
		if err != nil {
			r.err = fmt.Errorf("cse: reading ciphertext at offset %d: %w", r.total, err)
			return
		}
	}
	ct := r.buf[:cbcBuf]
	r.mode.CryptBlocks(ct, ct)
	r.out = ct
	r.keep = true
}

func (r *cbcDecryptReader) finish() {
	if r.total%BlockSize != 0 || r.total == 0 {
		r.err = fmt.Errorf("cse: CBC body of %d bytes is not a positive multiple of 16: %w", r.total, ErrTruncated)
		return
	}
	ct := r.buf[:r.n] // r.n >= 16: the last block is always held back
	r.mode.CryptBlocks(ct, ct)
	last, err := pkcs7Len(ct[len(ct)-BlockSize:])
	if err != nil {
		r.err = err
		return
	}
	r.out = ct[:len(ct)-BlockSize+last]
	r.err = io.EOF
}

// CBCPlainSize returns the plaintext size for a CBC body of cipherSize bytes
// whose final block holds lastLen data bytes (0..15). Most callers use
// cbcPlainSizeFromTail.
func cbcPlainSize(cipherSize int64, lastLen int) int64 {
	return cipherSize - BlockSize + int64(lastLen)
}

// cbcCipherSize returns the CBC body size for plainSize bytes: PKCS#7 always
// adds 1..16 bytes.
func cbcCipherSize(plainSize int64) int64 { return plainSize/BlockSize*BlockSize + BlockSize }

// cbcPlainSizeFromTail derives the plaintext size of a CBC body of cipherSize
// bytes from its last block and the block before it (the IV when the body is
// a single block), for objects without x-amz-unencrypted-content-length. It
// fails with ErrTruncated/ErrMalformed for an impossible size and
// ErrAuthentication for invalid padding (wrong key, or a damaged object).
func cbcPlainSizeFromTail(key []byte, prevBlock, lastBlock []byte, cipherSize int64) (int64, error) {
	if cipherSize < BlockSize || cipherSize%BlockSize != 0 {
		return 0, fmt.Errorf("cse: CBC body of %d bytes: %w", cipherSize, ErrTruncated)
	}
	if len(prevBlock) != BlockSize || len(lastBlock) != BlockSize {
		return 0, fmt.Errorf("cse: CBC tail blocks of %d and %d bytes: %w", len(prevBlock), len(lastBlock), ErrMalformed)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return 0, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	var pt [BlockSize]byte
	block.Decrypt(pt[:], lastBlock)
	subtle.XORBytes(pt[:], pt[:], prevBlock)
	last, err := pkcs7Len(pt[:])
	if err != nil {
		return 0, err
	}
	return cbcPlainSize(cipherSize, last), nil
}

// cbcRange maps the plaintext range [plainOff, plainOff+plainLen) of a CBC
// body of cipherSize bytes to the ciphertext range to fetch. The fetch starts
// one block before the first needed block (that block is the CBC IV of the
// next one) unless the range starts in block 0, and ends at the end of the
// last needed block, clamped to cipherSize. Pass the result to
// decryptCBCRange. A plainLen of 0 or a range past the end yields fetchLen 0.
func cbcRange(plainOff, plainLen, cipherSize int64) (fetchOff, fetchLen int64) {
	if plainOff < 0 || plainLen <= 0 || plainOff >= cipherSize {
		return 0, 0
	}
	first := plainOff / BlockSize * BlockSize
	fetchOff = max(0, first-BlockSize)
	end := plainOff + plainLen
	end = min((end+BlockSize-1)/BlockSize*BlockSize, cipherSize)
	return fetchOff, end - fetchOff
}

// cbcRangeStart returns the plaintext offset at which the output of
// decryptCBCRange for a fetch at fetchOff begins: 0 for fetchOff 0, else
// fetchOff + 16 (the first fetched block only serves as IV).
func cbcRangeStart(fetchOff int64) int64 {
	if fetchOff == 0 {
		return 0
	}
	return fetchOff + BlockSize
}

// decryptCBCRange decrypts src, the ciphertext bytes [fetchOff,
// fetchOff+len(src)) of a CBC body of cipherSize bytes, as chosen by cbcRange.
// iv is the object's IV (x-amz-iv), used when fetchOff is 0; otherwise the
// first block of src is the IV. The returned plaintext starts at plaintext
// offset cbcRangeStart(fetchOff). Padding is checked and stripped only when
// src reaches the end of the body. Nothing is authenticated.
func decryptCBCRange(key, iv []byte, fetchOff, cipherSize int64, src []byte) (plain []byte, err error) {
	if len(iv) != CBCIVSize {
		return nil, fmt.Errorf("cse: CBC IV of %d bytes: %w", len(iv), ErrMalformed)
	}
	if fetchOff < 0 || fetchOff%BlockSize != 0 || len(src)%BlockSize != 0 ||
		cipherSize%BlockSize != 0 || fetchOff+int64(len(src)) > cipherSize {
		return nil, fmt.Errorf("cse: CBC range %d+%d of %d bytes: %w", fetchOff, len(src), cipherSize, ErrMalformed)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	reachesEnd := fetchOff+int64(len(src)) == cipherSize
	chainIV := iv
	if fetchOff > 0 {
		if len(src) < BlockSize {
			return nil, fmt.Errorf("cse: CBC range without its IV block: %w", ErrMalformed)
		}
		chainIV, src = src[:BlockSize], src[BlockSize:]
	}
	plain = make([]byte, len(src))
	if len(src) == 0 {
		return plain, nil
	}
	cipher.NewCBCDecrypter(block, chainIV).CryptBlocks(plain, src)
	if reachesEnd {
		last, err := pkcs7Len(plain[len(plain)-BlockSize:])
		if err != nil {
			return nil, err
		}
		plain = plain[:len(plain)-BlockSize+last]
	}
	return plain, nil
}
