package cse

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"io"
	"testing"
)

const benchSize = 64 << 20

func benchKeyIV() ([]byte, []byte) {
	return bytes.Repeat([]byte{0x42}, KeySize), bytes.Repeat([]byte{0x24}, GCMIVSize)
}

func BenchmarkSealOneShot64MiB(b *testing.B) {
	key, iv := benchKeyIV()
	blk, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(blk)
	pt := make([]byte, benchSize)
	out := make([]byte, 0, benchSize+TagSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		out = g.Seal(out[:0], iv, pt, nil)
	}
}

// BenchmarkSealStream64MiB seals in place in 8 MiB parts, as a multipart
// uploader does.
func BenchmarkSealStream64MiB(b *testing.B) {
	key, iv := benchKeyIV()
	pt := make([]byte, benchSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		s, err := NewGCMSealer(key, iv)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < benchSize; off += 8 << 20 {
			part := pt[off : off+8<<20]
			if err := s.Seal(part, part); err != nil {
				b.Fatal(err)
			}
		}
		_ = s.Tag()
	}
}

// BenchmarkEncryptWriter64MiB goes through EncryptWriter with 1 MiB writes.
func BenchmarkEncryptWriter64MiB(b *testing.B) {
	key, iv := benchKeyIV()
	pt := make([]byte, benchSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		w, err := NewEncryptWriter(io.Discard, key, iv)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < benchSize; off += 1 << 20 {
			if _, err := w.Write(pt[off : off+1<<20]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchBody(b *testing.B) []byte {
	key, iv := benchKeyIV()
	blk, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(blk)
	return g.Seal(nil, iv, make([]byte, benchSize), nil)
}

func BenchmarkOpenOneShot64MiB(b *testing.B) {
	key, iv := benchKeyIV()
	body := benchBody(b)
	blk, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(blk)
	out := make([]byte, 0, benchSize)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		var err error
		out, err = g.Open(out[:0], iv, body, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenStream64MiB(b *testing.B) {
	key, iv := benchKeyIV()
	body := benchBody(b)
	buf := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for range b.N {
		r, err := NewGCMDecryptReader(bytes.NewReader(body), key, iv)
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := r.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
