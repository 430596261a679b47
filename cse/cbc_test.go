package cse

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

// cbcEncrypt is the test-side reference: AES/CBC/PKCS5Padding with stdlib
// primitives (csefs never writes CBC).
func cbcEncrypt(t testing.TB, key, iv, plain []byte) []byte {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	pad := BlockSize - len(plain)%BlockSize
	buf := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(buf, buf)
	return buf
}

func testCBCKeyIV() (key, iv []byte) { return testBytes(20, KeySize), testBytes(21, CBCIVSize) }

func TestCBCDecryptReaderGrid(t *testing.T) {
	key, iv := testCBCKeyIV()
	for _, size := range []int{0, 1, 15, 16, 17, 1000, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1<<20 + 7} {
		plain := testBytes(uint64(size), size)
		body := cbcEncrypt(t, key, iv, plain)
		if int64(len(body)) != cbcCipherSize(int64(size)) {
			t.Fatalf("cbcCipherSize(%d) = %d, body %d", size, cbcCipherSize(int64(size)), len(body))
		}
		for _, step := range []int{1, 7, 16, 4096, 1 << 20} {
			t.Run(fmt.Sprintf("size=%d/step=%d", size, step), func(t *testing.T) {
				r, err := newCBCDecryptReader(bytes.NewReader(body), key, iv)
				if err != nil {
					t.Fatal(err)
				}
				got, err := readInSteps(r, step)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatal("plaintext differs")
				}
			})
		}
		r, _ := newCBCDecryptReader(iotest.OneByteReader(bytes.NewReader(body)), key, iv)
		if err := iotest.TestReader(r, plain); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
	}
}

func TestCBCBadPadding(t *testing.T) {
	key, iv := testCBCKeyIV()
	body := cbcEncrypt(t, key, iv, testBytes(22, 1000))
	// Flipping a byte of the second-to-last block flips the same byte of the
	// last plaintext block, here the final padding byte.
	bad := bytes.Clone(body)
	bad[len(bad)-17] ^= 0x40
	r, _ := newCBCDecryptReader(bytes.NewReader(bad), key, iv)
	_, err := io.ReadAll(r)
	mustFail(t, err, ErrAuthentication)
	// Sticky.
	_, err = r.Read(make([]byte, 1))
	mustFail(t, err, ErrAuthentication)

	// Cut at a block boundary: the new last block's "padding" is data.
	r, _ = newCBCDecryptReader(bytes.NewReader(body[:len(body)-16]), key, iv)
	_, err = io.ReadAll(r)
	mustFail(t, err, ErrAuthentication)
}

func TestCBCNotBlockMultiple(t *testing.T) {
	key, iv := testCBCKeyIV()
	body := cbcEncrypt(t, key, iv, testBytes(23, 1000))
	for _, n := range []int{0, 1, 15, len(body) - 1, len(body) + 3} {
		src := append(bytes.Clone(body), 1, 2, 3)[:n]
		r, _ := newCBCDecryptReader(bytes.NewReader(src), key, iv)
		_, err := io.ReadAll(r)
		mustFail(t, err, ErrTruncated)
	}
	_, err := newCBCDecryptReader(nil, key, iv[:12])
	mustFail(t, err, ErrMalformed)
}

func TestCBCWrongKey(t *testing.T) {
	key, iv := testCBCKeyIV()
	body := cbcEncrypt(t, key, iv, testBytes(24, 1000))
	// A wrong key yields random padding, valid with probability ~1/256: try
	// fixed keys that are known (deterministically) to fail.
	bad := bytes.Clone(key)
	bad[0] ^= 1
	r, _ := newCBCDecryptReader(bytes.NewReader(body), bad, iv)
	_, err := io.ReadAll(r)
	mustFail(t, err, ErrAuthentication)
}

func TestCBCRanges(t *testing.T) {
	key, iv := testCBCKeyIV()
	for _, size := range []int{0, 5, 16, 1000} {
		plain := testBytes(25, size)
		body := cbcEncrypt(t, key, iv, plain)
		cipherSize := int64(len(body))
		var pts []int
		for i := 0; i <= size; i += 11 {
			pts = append(pts, i)
		}
		pts = append(pts, 15, 16, 17, 32, size-1, size)
		for _, a := range pts {
			for _, b := range pts {
				if a < 0 || b > size || b <= a {
					continue
				}
				fo, fl := cbcRange(int64(a), int64(b-a), cipherSize)
				if fo%16 != 0 || fl%16 != 0 || fo+fl > cipherSize || fo > int64(a) {
					t.Fatalf("cbcRange(%d,%d,%d) = %d,%d", a, b-a, cipherSize, fo, fl)
				}
				got, err := decryptCBCRange(key, iv, fo, cipherSize, body[fo:fo+fl])
				if err != nil {
					t.Fatalf("[%d,%d): %v", a, b, err)
				}
				start := cbcRangeStart(fo)
				if start > int64(a) || start+int64(len(got)) < int64(b) {
					t.Fatalf("[%d,%d): got plaintext [%d,%d)", a, b, start, start+int64(len(got)))
				}
				if !bytes.Equal(got[int64(a)-start:int64(b)-start], plain[a:b]) {
					t.Fatalf("[%d,%d) differs", a, b)
				}
			}
		}
		// Whole object through the range API strips padding.
		got, err := decryptCBCRange(key, iv, 0, cipherSize, body)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d whole: %v", size, err)
		}
	}
	if fo, fl := cbcRange(0, 0, 32); fl != 0 {
		t.Fatalf("empty range fetches %d,%d", fo, fl)
	}
	_, err := decryptCBCRange(key, iv, 8, 64, make([]byte, 16))
	mustFail(t, err, ErrMalformed)
}

func TestCBCPlainSizeFromTail(t *testing.T) {
	key, iv := testCBCKeyIV()
	for _, size := range []int{0, 1, 15, 16, 17, 1000} {
		body := cbcEncrypt(t, key, iv, testBytes(26, size))
		prev := iv
		if len(body) > 16 {
			prev = body[len(body)-32 : len(body)-16]
		}
		got, err := cbcPlainSizeFromTail(key, prev, body[len(body)-16:], int64(len(body)))
		if err != nil || got != int64(size) {
			t.Fatalf("size %d: got %d, %v", size, got, err)
		}
	}
	body := cbcEncrypt(t, key, iv, testBytes(26, 100))
	prev := bytes.Clone(body[len(body)-32 : len(body)-16])
	prev[15] ^= 0x20
	_, err := cbcPlainSizeFromTail(key, prev, body[len(body)-16:], int64(len(body)))
	mustFail(t, err, ErrAuthentication)
	_, err = cbcPlainSizeFromTail(key, prev, body[len(body)-16:], 100)
	mustFail(t, err, ErrTruncated)
}
