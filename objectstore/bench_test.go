package objectstore

import (
	"context"
	"fmt"
	"testing"

	"github.com/csefs/csefs/e2e/testenv"
)

// BenchmarkS3Writer streams 64 MiB through Create/Commit to MinIO in 8 MiB
// parts; concurrency=1 is the serial baseline (one part in flight while the
// next fills).
func BenchmarkS3Writer(b *testing.B) {
	const size = 64 << 20
	body := randBytes(1, size)
	srv := testenv.MinIO(b)
	client, bucket := srv.Client(b), srv.NewBucket(b)
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			s := NewS3(client, bucket, "bench", S3Options{PartSize: DefaultPartSize, Concurrency: conc})
			ctx := context.Background()
			b.SetBytes(size)
			for b.Loop() {
				w, err := s.Create(ctx, "obj", nil)
				if err != nil {
					b.Fatal(err)
				}
				for off := 0; off < size; off += 1 << 20 {
					if _, err := w.Write(body[off : off+1<<20]); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := w.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
