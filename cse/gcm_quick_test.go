package cse

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"
)

func TestQuickGCM(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	iv := bytes.Repeat([]byte{9}, 12)
	for _, n := range []int{0, 1, 15, 16, 17, 1000, 65535, 65536, 65537, 200000} {
		pt := make([]byte, n)
		for i := range pt {
			pt[i] = byte(i * 31)
		}
		b, _ := aes.NewCipher(key)
		g, _ := cipher.NewGCM(b)
		want := g.Seal(nil, iv, pt, nil)
		s, _ := NewGCMSealer(key, iv)
		out := make([]byte, n)
		s.Seal(out, pt)
		got := append(out, s.Tag()...)
		if !bytes.Equal(got, want) {
			t.Fatalf("n=%d mismatch", n)
		}
	}
}
