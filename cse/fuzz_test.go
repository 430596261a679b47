package cse

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

// FuzzGCMDecrypt mutates a valid body (flip, cut, extend) and checks that
// the streaming reader authenticates it only if it still equals the original,
// and then returns exactly the plaintext.
func FuzzGCMDecrypt(f *testing.F) {
	f.Add(uint32(0), uint32(0), byte(0), uint16(0), uint16(4096), uint16(0))
	f.Add(uint32(100), uint32(5), byte(1), uint16(0), uint16(1), uint16(0))
	f.Add(uint32(1000), uint32(1010), byte(0x80), uint16(0), uint16(7), uint16(3))
	f.Add(uint32(70000), uint32(3), byte(0), uint16(1), uint16(65535), uint16(4096))
	f.Add(uint32(17), uint32(0), byte(0), uint16(20), uint16(16), uint16(0))
	f.Add(uint32(65536), uint32(65540), byte(4), uint16(0), uint16(5000), uint16(17))
	key, iv := testKeyIV(f)
	// lend > 0: the source is a Lender lending at most lend bytes at a time.
	f.Fuzz(func(t *testing.T, size, pos uint32, flip byte, cut, step, lend uint16) {
		size %= 150000
		plain := testBytes(uint64(size), int(size))
		orig := stdSeal(t, key, iv, plain)
		body := bytes.Clone(orig)
		body[int(pos)%len(body)] ^= flip
		if c := int(cut); c > 0 {
			if c <= len(body) {
				body = body[:len(body)-c]
			} else {
				body = append(body, make([]byte, c%32)...)
			}
		}
		var src io.Reader = bytes.NewReader(body)
		if lend > 0 {
			src = &lender{body: body, step: int(lend)}
		}
		r, err := newGCMDecryptReader(src, key, iv)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readInSteps(r, int(step)%70000+1)
		if err == nil {
			if !bytes.Equal(body, orig) {
				t.Fatalf("modified body authenticated (size %d pos %d flip %#x cut %d)", size, pos, flip, cut)
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("authenticated but wrong plaintext")
			}
			return
		}
		if !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("unexpected error class: %v", err)
		}
		if bytes.Equal(body, orig) {
			t.Fatalf("original body rejected: %v", err)
		}
	})
}

// FuzzGCMDecryptDifferential compares the streaming reader with stdlib Open
// on arbitrary bodies and additional data (V3 uses commitAAD): same verdict,
// same plaintext.
func FuzzGCMDecryptDifferential(f *testing.F) {
	key, iv := testKeyIV(f)
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, 16), []byte{})
	f.Add(stdSeal(f, key, iv, []byte("hello")), []byte{})
	f.Add(stdSeal(f, key, iv, testBytes(1, 300)), []byte{})
	f.Add(stdGCM(f, key).Seal(nil, iv, testBytes(2, 300), commitAAD()), commitAAD())
	f.Add(stdGCM(f, key).Seal(nil, iv, testBytes(3, 70000), testBytes(4, 33)), testBytes(4, 33))
	f.Fuzz(func(t *testing.T, body, aad []byte) {
		want, werr := openGCMAAD(key, iv, body, aad)
		r, _ := newGCMDecryptReaderAAD(bytes.NewReader(body), key, iv, aad)
		got, err := io.ReadAll(r)
		if (err == nil) != (werr == nil) {
			t.Fatalf("stream %v, stdlib %v", err, werr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatal("plaintexts differ")
		}
	})
}

// FuzzCBCDecrypt: arbitrary bodies never panic, and the streaming reader and
// the range decryptor agree.
func FuzzCBCDecrypt(f *testing.F) {
	key, iv := testCBCKeyIV()
	f.Add([]byte{}, uint16(1))
	f.Add(make([]byte, 16), uint16(16))
	f.Add(cbcEncrypt(f, key, iv, []byte("hello")), uint16(3))
	f.Add(cbcEncrypt(f, key, iv, testBytes(2, 1000)), uint16(100))
	f.Fuzz(func(t *testing.T, body []byte, step uint16) {
		r, _ := newCBCDecryptReader(bytes.NewReader(body), key, iv)
		got, err := readInSteps(r, int(step)%5000+1)
		whole, werr := decryptCBCRange(key, iv, 0, int64(len(body)), body)
		if err == nil {
			if werr != nil || !bytes.Equal(got, whole) {
				t.Fatalf("reader ok, range: %v", werr)
			}
		} else if !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("error class: %v", err)
		}
		if len(body) >= 16 && len(body)%16 == 0 {
			prev := iv
			if len(body) > 16 {
				prev = body[len(body)-32 : len(body)-16]
			}
			n, serr := cbcPlainSizeFromTail(key, prev, body[len(body)-16:], int64(len(body)))
			if (serr == nil) != (err == nil) || (serr == nil && n != int64(len(got))) {
				t.Fatalf("size from tail %d, %v; reader %d, %v", n, serr, len(got), err)
			}
		}
	})
}

// FuzzUnwrapAES: the AES unwrappers never panic and only return keys of a
// valid length.
func FuzzUnwrapAES(f *testing.F) {
	kek := testBytes(50, 32)
	cek := testBytes(51, 32)
	g, _ := wrapKeyAESGCM(kek, cek, CEKAlgGCM, rand.Reader)
	w, _ := wrapKeyAESWrap(kek, cek)
	f.Add(g)
	f.Add(w)
	f.Add(v1AESWrap(f, kek, cek))
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, blob []byte) {
		for name, fn := range map[string]func() ([]byte, error){
			"aesgcm":  func() ([]byte, error) { return unwrapKeyAESGCM(kek, blob, CEKAlgGCM) },
			"aeswrap": func() ([]byte, error) { return unwrapKeyAESWrap(kek, blob) },
			"v1aes":   func() ([]byte, error) { return unwrapKeyV1AES(kek, blob) },
		} {
			k, err := fn()
			if err == nil && !validCEKLen(len(k)) && name != "aeswrap" {
				t.Fatalf("%s: %d-byte key", name, len(k))
			}
		}
	})
}

// FuzzUnwrapRSA: the RSA unwrappers never panic.
func FuzzUnwrapRSA(f *testing.F) {
	priv := testRSA(f)
	cek := testBytes(52, 32)
	b, _ := wrapKeyRSAOAEPSHA1(&priv.PublicKey, cek, CEKAlgGCM, rand.Reader)
	f.Add(b)
	f.Add([]byte{})
	f.Add(make([]byte, 256))
	f.Fuzz(func(t *testing.T, blob []byte) {
		for _, fn := range []func() ([]byte, error){
			func() ([]byte, error) { return unwrapKeyRSAOAEPSHA1(priv, blob, CEKAlgGCM) },
			func() ([]byte, error) { return unwrapKeyRSAOAEPSHA256(priv, blob) },
			func() ([]byte, error) { return unwrapKeyV1RSA(priv, blob) },
		} {
			if k, err := fn(); err == nil && !validCEKLen(len(k)) {
				t.Fatalf("%d-byte key", len(k))
			}
		}
	})
}

// FuzzGCMSealParts seals a message in arbitrary 16-multiple parts (in place
// or not, two-pass or fused path, with additional data of 0..255 bytes) and
// compares with one-shot Seal.
func FuzzGCMSealParts(f *testing.F) {
	f.Add(uint32(1000), uint64(7), false, true, uint8(0))
	f.Add(uint32(300000), uint64(12345), true, false, uint8(2))
	f.Add(uint32(65536+17), uint64(1), true, true, uint8(40))
	key, iv := testKeyIV(f)
	f.Fuzz(func(t *testing.T, size uint32, seed uint64, fusedEarly, inPlace bool, aadLen uint8) {
		size %= 400000
		if fusedEarly {
			old := fusedAfter
			fusedAfter = 0
			defer func() { fusedAfter = old }()
		}
		plain := testBytes(uint64(size), int(size))
		aad := testBytes(uint64(aadLen)+9, int(aadLen))
		want := stdGCM(t, key).Seal(nil, iv, plain, aad)
		s, _ := newGCMSealerAAD(key, iv, aad)
		out := make([]byte, size)
		if inPlace {
			copy(out, plain)
		}
		for off := 0; off < int(size); {
			seed = seed*6364136223846793005 + 1442695040888963407
			part := int(seed>>40) % 200000 &^ 15
			end := min(off+part, int(size))
			if part == 0 {
				end = off + min(16, int(size)-off)
				if end-off < 16 {
					end = int(size)
				}
			}
			if inPlace {
				_ = s.Seal(out[off:end], out[off:end])
			} else {
				_ = s.Seal(out[off:end], plain[off:end])
			}
			off = end
		}
		if !bytes.Equal(append(out, s.Tag()...), want) {
			t.Fatalf("size %d seed %d: differs", size, seed)
		}
	})
}
