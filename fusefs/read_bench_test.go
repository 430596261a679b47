package fusefs

import (
	"context"
	"crypto/rand"
	"testing"
)

// BenchmarkSequentialRead reads a 256 MiB GCM object through a read handle
// in 1 MiB requests, as the kernel's read-ahead does, without FUSE: the
// daemon's own cost of the read path (prefetch, decrypt, copy).
func BenchmarkSequentialRead(b *testing.B) {
	const size = 256 << 20
	f, _, _ := newTestFS(b, ObjectMetadata, true)
	body := make([]byte, size)
	rand.Read(body)
	writeObj(b, f, "big", body)
	ctx := context.Background()
	dest := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.putStat("big", nil)
		o, err := f.head(ctx, "big")
		if err != nil {
			b.Fatal(err)
		}
		r, err := f.newReader(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += int64(len(dest)) {
			if _, errno := r.Read(ctx, dest, off); errno != 0 {
				b.Fatal(errno)
			}
		}
		r.Release(ctx)
	}
}
