package cse

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"testing"
)

// contentFixture is one object's body sealed under each content algorithm.
type contentFixture struct {
	name   string
	c      Content
	key    []byte // the content key
	plain  []byte
	stored []byte
}

// sealedContents seals plain under V2 GCM, V3 and CBC; withLen says whether
// the CBC envelope records the plaintext length.
func sealedContents(t testing.TB, plain []byte, withLen bool) []contentFixture {
	t.Helper()
	var out []contentFixture
	dk := testBytes(30, KeySize)
	for _, alg := range []string{CEKAlgGCM, CEKAlgGCMCommit} {
		p, ck, err := NewParams(alg, dk, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		w, err := p.NewEncryptWriter(&body, ck)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeInSteps(w, plain, 7000); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		c, err := p.Content(int64(body.Len()), -1)
		if err != nil {
			t.Fatal(err)
		}
		// A reader derives the same content key from the data key.
		rk, err := p.ContentKey(dk)
		if err != nil || !bytes.Equal(rk, ck) {
			t.Fatalf("%s: ContentKey = %x, %v; the writer used %x", alg, rk, err, ck)
		}
		out = append(out, contentFixture{alg, c, ck, plain, body.Bytes()})
	}
	key, iv := testCBCKeyIV()
	stored := cbcEncrypt(t, key, iv, plain)
	plainLen := int64(-1)
	if withLen {
		plainLen = int64(len(plain))
	}
	c, err := Params{CEKAlg: CEKAlgCBC, IV: iv}.Content(int64(len(stored)), plainLen)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, contentFixture{CEKAlgCBC, c, key, plain, stored})
	return out
}

// plainSizeOf answers the size as a reader would: from the stored size, or
// from the tail.
func plainSizeOf(t testing.TB, f contentFixture) int64 {
	t.Helper()
	if n, ok := f.c.PlainSize(); ok {
		return n
	}
	off, n := f.c.SizeTail()
	size, err := f.c.PlainSizeFromTail(f.key, f.stored[off:off+n])
	if err != nil {
		t.Fatalf("%s: PlainSizeFromTail: %v", f.name, err)
	}
	return size
}

// TestContentRanges checks, for every algorithm and sizes around block and
// piece boundaries, that the plaintext size is right, that every range
// (a grid of offsets and lengths) decrypts from exactly the stored bytes
// Range names, and that the stream returns the whole plaintext.
func TestContentRanges(t *testing.T) {
	for _, size := range []int{0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 65536 + 5} {
		for _, withLen := range []bool{false, true} {
			plain := testBytes(uint64(size)+1, size)
			for _, f := range sealedContents(t, plain, withLen) {
				name := fmt.Sprintf("%s/%d/len=%v", f.name, size, withLen)
				if got := plainSizeOf(t, f); got != int64(size) {
					t.Fatalf("%s: plaintext size %d", name, got)
				}
				if f.c.CipherSize() != int64(len(f.stored)) {
					t.Fatalf("%s: CipherSize %d, stored %d", name, f.c.CipherSize(), len(f.stored))
				}
				r, err := f.c.NewReader(bytes.NewReader(f.stored), f.key)
				if err != nil {
					t.Fatal(err)
				}
				got, err := readInSteps(r, 4097)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("%s: stream: %d bytes, %v", name, len(got), err)
				}
				step := max(1, size/13)
				for off := 0; off < size; off += step {
					for _, n := range []int{1, 15, 16, 17, 100, size} {
						n = min(n, size-off)
						off64, n64 := f.c.Range(int64(off), int64(n))
						if off64 < 0 || off64+n64 > int64(len(f.stored)) {
							t.Fatalf("%s: Range(%d,%d) = %d+%d outside %d stored bytes", name, off, n, off64, n64, len(f.stored))
						}
						dst := make([]byte, n)
						if err := f.c.DecryptRange(f.key, dst, int64(off), f.stored[off64:off64+n64]); err != nil {
							t.Fatalf("%s: DecryptRange(%d,%d): %v", name, off, n, err)
						}
						if !bytes.Equal(dst, plain[off:off+n]) {
							t.Fatalf("%s: DecryptRange(%d,%d) returned other bytes", name, off, n)
						}
					}
				}
			}
		}
	}
}

// TestContentRefuses checks the errors a reader gets from bad input.
func TestContentRefuses(t *testing.T) {
	plain := testBytes(5, 5000)
	for _, f := range sealedContents(t, plain, false) {
		// A flipped bit: the stream fails at its end.
		bad := bytes.Clone(f.stored)
		bad[len(bad)/2] ^= 1
		r, err := f.c.NewReader(bytes.NewReader(bad), f.key)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(r)
		if f.c.Authenticated() {
			mustFail(t, err, ErrAuthentication)
		} else if err != nil {
			t.Fatalf("%s: a flipped bit mid-body is not detectable in CBC, got %v", f.name, err)
		}
		// A wrong key: GCM fails authentication, CBC its padding (here).
		r, err = f.c.NewReader(bytes.NewReader(f.stored), testBytes(99, KeySize))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(r)
		mustFail(t, err, ErrAuthentication)
		// A src that is not what Range named.
		off, n := f.c.Range(100, 50)
		err = f.c.DecryptRange(f.key, make([]byte, 50), 100, f.stored[off:off+n-1])
		mustFail(t, err, ErrMalformed)
	}

	// Impossible sizes and parameters.
	iv12, iv16 := testBytes(1, GCMIVSize), testBytes(2, CBCIVSize)
	for _, tc := range []struct {
		p    Params
		size int64
		want error
	}{
		{Params{CEKAlg: CEKAlgGCM, IV: iv12}, 15, ErrTruncated},
		{Params{CEKAlg: CEKAlgGCM, IV: iv16}, 100, ErrMalformed},
		{Params{CEKAlg: CEKAlgGCMCommit, IV: iv12}, MaxGCMPlaintext + TagSize + 1, ErrMalformed},
		{Params{CEKAlg: CEKAlgCBC, IV: iv16}, 17, ErrMalformed},
		{Params{CEKAlg: CEKAlgCBC, IV: iv16}, 0, ErrMalformed},
		{Params{CEKAlg: CEKAlgCBC, IV: iv12}, 32, ErrMalformed},
		{Params{CEKAlg: "AES/CTR/NoPadding", IV: iv16}, 32, ErrUnsupported},
	} {
		_, err := tc.p.Content(tc.size, -1)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s IV %d size %d: %v, want %v", tc.p.CEKAlg, len(tc.p.IV), tc.size, err, tc.want)
		}
	}

	// V3: a data key, message ID or commitment that do not belong
	// together give ErrCommitment before any key is returned.
	dk := testBytes(7, KeySize)
	p, ck, err := NewParams(CEKAlgGCMCommit, dk, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	Zero(ck)
	for name, q := range map[string]Params{
		"message ID": {CEKAlg: p.CEKAlg, IV: p.IV, MessageID: testBytes(8, len(p.MessageID)), Commitment: p.Commitment},
		"commitment": {CEKAlg: p.CEKAlg, IV: p.IV, MessageID: p.MessageID, Commitment: testBytes(9, len(p.Commitment))},
	} {
		if k, err := q.ContentKey(dk); !errors.Is(err, ErrCommitment) || k != nil {
			t.Errorf("changed %s: ContentKey = %x, %v", name, k, err)
		}
	}
	if k, err := p.ContentKey(testBytes(10, KeySize)); !errors.Is(err, ErrCommitment) || k != nil {
		t.Errorf("other data key: ContentKey = %x, %v", k, err)
	}
	if _, _, err := NewParams(CEKAlgCBC, dk, rand.Reader); !errors.Is(err, ErrUnsupported) {
		t.Errorf("NewParams(CBC): %v, want ErrUnsupported (CBC is read only)", err)
	}
}

// TestContentKeyIsCopy: ContentKey's key is the caller's to zero.
func TestContentKeyIsCopy(t *testing.T) {
	dk := testBytes(11, KeySize)
	k, err := Params{CEKAlg: CEKAlgGCM, IV: testBytes(1, GCMIVSize)}.ContentKey(dk)
	if err != nil {
		t.Fatal(err)
	}
	Zero(k)
	if bytes.Equal(dk, make([]byte, KeySize)) {
		t.Fatal("zeroing the content key zeroed the data key")
	}
}

// FuzzContentRange checks ranged decryption against the plaintext for
// any range, and that no range request panics or reads outside src.
func FuzzContentRange(f *testing.F) {
	f.Add(uint16(100), int64(0), int64(10), uint8(0))
	f.Add(uint16(33), int64(16), int64(17), uint8(2))
	f.Add(uint16(0), int64(0), int64(1), uint8(1))
	f.Fuzz(func(t *testing.T, size uint16, off, n int64, alg uint8) {
		plain := testBytes(uint64(size), int(size)%5000)
		fs := sealedContents(t, plain, alg&4 != 0)
		c := fs[int(alg)%len(fs)]
		if off < 0 || off >= int64(len(plain)) || n <= 0 {
			return
		}
		n = min(n, int64(len(plain))-off)
		so, sn := c.c.Range(off, n)
		if so < 0 || sn <= 0 || so+sn > int64(len(c.stored)) {
			t.Fatalf("Range(%d,%d) = %d+%d outside %d stored bytes", off, n, so, sn, len(c.stored))
		}
		dst := make([]byte, n)
		if err := c.c.DecryptRange(c.key, dst, off, c.stored[so:so+sn]); err != nil {
			t.Fatalf("DecryptRange(%d,%d): %v", off, n, err)
		}
		if !bytes.Equal(dst, plain[off:off+n]) {
			t.Fatalf("DecryptRange(%d,%d): other bytes", off, n)
		}
	})
}
