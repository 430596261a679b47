package cse

import (
	"bytes"
	"fmt"
	"io"
)

// Params are the content-encryption fields an envelope stores for one
// object, for every content algorithm:
//
//   - CEKAlgGCM (V2): IV is x-amz-iv (12 bytes);
//   - CEKAlgGCMCommit (V3, suite 115): MessageID (x-amz-i) and Commitment
//     (x-amz-d); IV is the suite's fixed CommitIV();
//   - CEKAlgCBC (V1, legacy, read only): IV is x-amz-iv (16 bytes).
//
// A writer gets them from NewParams, a reader from the stored envelope
// (metadata.Envelope.Params). Readers then build a Content for the body.
type Params struct {
	CEKAlg     string
	IV         []byte
	MessageID  []byte
	Commitment []byte
}

// NewParams makes the parameters of a new object whose content is encrypted
// with cekAlg (CEKAlgGCM or CEKAlgGCMCommit) under the data key dataKey: a
// fresh IV from rand, or for V3 a fresh message ID and the key commitment.
// It returns them with the content key (the caller zeroes it): a copy of
// dataKey for V2, the key HKDF derives from it for V3.
func NewParams(cekAlg string, dataKey []byte, rand io.Reader) (p Params, contentKey []byte, err error) {
	switch cekAlg {
	case CEKAlgGCM:
		iv := make([]byte, GCMIVSize)
		if _, err := io.ReadFull(rand, iv); err != nil {
			return Params{}, nil, fmt.Errorf("cse: new IV: %w", err)
		}
		return Params{CEKAlg: cekAlg, IV: iv}, bytes.Clone(dataKey), nil
	case CEKAlgGCMCommit:
		id, err := newMessageID(rand)
		if err != nil {
			return Params{}, nil, err
		}
		ck, commitment, err := commitKeys(dataKey, id)
		if err != nil {
			return Params{}, nil, err
		}
		return Params{CEKAlg: cekAlg, IV: CommitIV(), MessageID: id, Commitment: commitment}, ck, nil
	}
	return Params{}, nil, fmt.Errorf("cse: writing content algorithm %q: %w", cekAlg, ErrUnsupported)
}

// ContentKey returns the key that decrypts the content, given the
// unwrapped data key: a copy of it, or for V3 the derived content key once
// the stored commitment has verified against it (ErrCommitment otherwise),
// so that nothing is decrypted under an uncommitted key. The caller zeroes
// both keys.
func (p Params) ContentKey(dataKey []byte) ([]byte, error) {
	switch p.CEKAlg {
	case CEKAlgGCM, CEKAlgCBC:
		return bytes.Clone(dataKey), nil
	case CEKAlgGCMCommit:
		return openCommitment(dataKey, p.MessageID, p.Commitment)
	}
	return nil, fmt.Errorf("cse: content algorithm %q: %w", p.CEKAlg, ErrUnsupported)
}

// NewEncryptWriter returns the writer that seals a new object's content
// into dst, under the content key NewParams returned.
func (p Params) NewEncryptWriter(dst io.Writer, contentKey []byte) (*EncryptWriter, error) {
	switch p.CEKAlg {
	case CEKAlgGCM:
		return newEncryptWriterAAD(dst, contentKey, p.IV, nil)
	case CEKAlgGCMCommit:
		return newEncryptWriterAAD(dst, contentKey, p.IV, commitAAD())
	}
	return nil, fmt.Errorf("cse: writing content algorithm %q: %w", p.CEKAlg, ErrUnsupported)
}

// NewSealer returns the piece-by-piece sealer of a new object's content
// (for uploads that send parts themselves), under the content key
// NewParams returned.
func (p Params) NewSealer(contentKey []byte) (*GCMSealer, error) {
	switch p.CEKAlg {
	case CEKAlgGCM:
		return newGCMSealerAAD(contentKey, p.IV, nil)
	case CEKAlgGCMCommit:
		return newGCMSealerAAD(contentKey, p.IV, commitAAD())
	}
	return nil, fmt.Errorf("cse: writing content algorithm %q: %w", p.CEKAlg, ErrUnsupported)
}

// Content is the encrypted body of one object: its algorithm and
// parameters and its stored size. It answers what a reader of the body
// needs (plaintext size, the stored range a plaintext range needs, ranged
// decryption, and a stream that authenticates at its end) for every content
// algorithm, so that callers do no block arithmetic of their own.
//
// A Content holds no key: the methods that decrypt take the content key
// (Params.ContentKey), which stays the caller's. The zero value is not
// usable; a Content is immutable and safe for concurrent use.
type Content struct {
	p          Params
	cipherSize int64
	plainSize  int64 // -1: CBC without a recorded length (PlainSizeFromTail)
}

// Content returns the Content of a body of cipherSize stored bytes.
// plainLen is the plaintext length the envelope records
// (x-amz-unencrypted-content-length), or -1; it is used for CBC, whose size
// otherwise needs the last block decrypted, when it is consistent with
// cipherSize. An impossible size gives ErrTruncated or ErrMalformed, an IV
// of the wrong length ErrMalformed, another algorithm ErrUnsupported.
func (p Params) Content(cipherSize, plainLen int64) (Content, error) {
	c := Content{p: p, cipherSize: cipherSize, plainSize: -1}
	switch p.CEKAlg {
	case CEKAlgGCM, CEKAlgGCMCommit:
		if len(p.IV) != GCMIVSize {
			return Content{}, fmt.Errorf("cse: GCM IV of %d bytes: %w", len(p.IV), ErrMalformed)
		}
		n, err := GCMPlainSize(cipherSize)
		if err != nil {
			return Content{}, err
		}
		c.plainSize = n
	case CEKAlgCBC:
		if len(p.IV) != CBCIVSize {
			return Content{}, fmt.Errorf("cse: CBC IV of %d bytes: %w", len(p.IV), ErrMalformed)
		}
		if cipherSize < BlockSize || cipherSize%BlockSize != 0 {
			return Content{}, fmt.Errorf("cse: CBC body of %d bytes: %w", cipherSize, ErrMalformed)
		}
		if plainLen >= 0 && cbcCipherSize(plainLen) == cipherSize {
			c.plainSize = plainLen
		}
	default:
		return Content{}, fmt.Errorf("cse: content algorithm %q: %w", p.CEKAlg, ErrUnsupported)
	}
	return c, nil
}

// Params returns the parameters c was built from.
func (c Content) Params() Params { return c.p }

// CipherSize is the stored size of the body.
func (c Content) CipherSize() int64 { return c.cipherSize }

// Authenticated reports whether a stream of the whole body authenticates
// it (GCM, V2 and V3). CBC is never authenticated; its padding check only
// catches most wrong keys.
func (c Content) Authenticated() bool { return c.p.CEKAlg != CEKAlgCBC }

// PlainSize returns the plaintext size when the stored size fixes it (GCM,
// and CBC with a consistent recorded length). Otherwise (CBC) known is
// false and the caller fetches SizeTail and calls PlainSizeFromTail.
func (c Content) PlainSize() (size int64, known bool) {
	return c.plainSize, c.plainSize >= 0
}

// SizeTail is the stored range [off, off+n) PlainSizeFromTail needs: the
// last two blocks of a CBC body (the last one alone when there is one).
func (c Content) SizeTail() (off, n int64) {
	off = max(c.cipherSize-2*BlockSize, 0)
	return off, c.cipherSize - off
}

// PlainSizeFromTail derives the plaintext size from the bytes of SizeTail,
// decrypting the last block to read its padding. It fails with
// ErrAuthentication for invalid padding (a wrong key or a damaged object).
// Where PlainSize is known it returns that.
func (c Content) PlainSizeFromTail(contentKey, tail []byte) (int64, error) {
	if n, ok := c.PlainSize(); ok {
		return n, nil
	}
	if _, n := c.SizeTail(); int64(len(tail)) != n {
		return 0, fmt.Errorf("cse: CBC tail of %d bytes, want %d: %w", len(tail), n, ErrMalformed)
	}
	prev, last := c.p.IV, tail
	if len(tail) == 2*BlockSize {
		prev, last = tail[:BlockSize], tail[BlockSize:]
	}
	return cbcPlainSizeFromTail(contentKey, prev, last, c.cipherSize)
}

// Range maps the plaintext range [plainOff, plainOff+plainLen) to the
// stored range [off, off+n) that DecryptRange needs for it: the same bytes
// for GCM (a CTR stream), whole blocks and the block before them for CBC.
// The range is the caller's to keep within the plaintext; an empty one
// gives n 0.
func (c Content) Range(plainOff, plainLen int64) (off, n int64) {
	if plainOff < 0 || plainLen <= 0 {
		return 0, 0
	}
	if c.p.CEKAlg == CEKAlgCBC {
		return cbcRange(plainOff, plainLen, c.cipherSize)
	}
	end := min(plainOff+plainLen, c.cipherSize-TagSize)
	if plainOff >= end {
		return 0, 0
	}
	return plainOff, end - plainOff
}

// DecryptRange decrypts, WITHOUT authentication, the plaintext range
// [plainOff, plainOff+len(dst)) into dst from src, the stored bytes that
// Range(plainOff, len(dst)) named. For GCM it is plain AES-CTR: an attacker
// who can write the object can flip chosen plaintext bits undetected (see
// the package doc); callers that need authenticity check the whole body
// first (NewReader). For CBC the padding is checked when src reaches the
// end of the body. A src that does not hold the range gives ErrMalformed.
func (c Content) DecryptRange(contentKey, dst []byte, plainOff int64, src []byte) error {
	wantOff, wantLen := c.Range(plainOff, int64(len(dst)))
	if int64(len(src)) != wantLen {
		return fmt.Errorf("cse: range [%d,+%d) needs %d stored bytes at %d, got %d: %w", plainOff, len(dst), wantLen, wantOff, len(src), ErrMalformed)
	}
	if c.p.CEKAlg != CEKAlgCBC {
		if int64(len(dst)) != wantLen {
			return fmt.Errorf("cse: range [%d,+%d) past the end of %d plaintext bytes: %w", plainOff, len(dst), c.plainSize, ErrMalformed)
		}
		return decryptGCMRange(contentKey, c.p.IV, plainOff, dst, src)
	}
	plain, err := decryptCBCRange(contentKey, c.p.IV, wantOff, c.cipherSize, src)
	if err != nil {
		return err
	}
	skip := plainOff - cbcRangeStart(wantOff)
	if skip < 0 || skip+int64(len(dst)) > int64(len(plain)) {
		return fmt.Errorf("cse: CBC range [%d,+%d) outside the plaintext: %w", plainOff, len(dst), ErrMalformed)
	}
	copy(dst, plain[skip:])
	return nil
}

// NewReader returns the plaintext of the whole body, read from src from its
// first stored byte. The stream authenticates (GCM) or checks padding (CBC)
// at its end: it returns io.EOF only once that verified, and otherwise an
// error wrapping ErrAuthentication or ErrTruncated, after which the caller
// must discard all it has read.
func (c Content) NewReader(src io.Reader, contentKey []byte) (io.Reader, error) {
	return newDecryptReader(src, contentKey, c.p.CEKAlg, c.p.IV)
}

// newDecryptReader returns a plaintext reader for a body encrypted with
// cekAlg (CEKAlgGCM, CEKAlgGCMCommit or CEKAlgCBC), as newGCMDecryptReader
// or newCBCDecryptReader. For CEKAlgGCMCommit, key is the content key that
// openCommitment returned and iv is CommitIV(); the additional data is
// commitAAD(). Another algorithm gives ErrUnsupported; an IV of the wrong
// length for the algorithm gives ErrMalformed.
func newDecryptReader(src io.Reader, key []byte, cekAlg string, iv []byte) (io.Reader, error) {
	switch cekAlg {
	case CEKAlgGCM:
		return newGCMDecryptReader(src, key, iv)
	case CEKAlgGCMCommit:
		return newGCMDecryptReaderAAD(src, key, iv, commitAAD())
	case CEKAlgCBC:
		return newCBCDecryptReader(src, key, iv)
	default:
		return nil, fmt.Errorf("cse: content algorithm %q: %w", cekAlg, ErrUnsupported)
	}
}
