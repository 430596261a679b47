package objectstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// TestCreateIfMatch: a conditional write replaces the object only while it
// still has the ETag given, for single PUTs and multipart uploads, on both
// stores (MinIO honours If-Match on PutObject and CompleteMultipartUpload).
func TestCreateIfMatch(t *testing.T) {
	stores := map[string]func(t *testing.T) Store{
		"local": func(t *testing.T) Store {
			s, err := NewLocal(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"s3": func(t *testing.T) Store { return newMinIOStore(t, 0) },
	}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := mk(t)
			cc := s.(ConditionalCreator)
			for _, size := range []int{100, 12 << 20} { // one PUT; multipart (8 MiB parts)
				old := mustPut(t, s, "k", []byte("old"), nil)
				write := func(etag string) error {
					w, err := cc.CreateIfMatch(ctx, "k", map[string]string{"x": "1"}, etag)
					if err != nil {
						return err
					}
					if _, err := w.Write(randBytes(uint64(size), size)); err != nil {
						w.Abort(ctx)
						return err
					}
					_, err = w.Commit(ctx)
					return err
				}
				if err := write(`"0123456789abcdef0123456789abcdef"`); !errors.Is(err, ErrPreconditionFailed) {
					t.Fatalf("size %d: write with a stale ETag: %v, want ErrPreconditionFailed", size, err)
				}
				rc, _, err := s.Get(ctx, "k", GetOptions{Length: -1})
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(rc)
				rc.Close()
				if string(b) != "old" {
					t.Fatalf("size %d: a failed conditional write changed the object", size)
				}
				if err := write(old.ETag); err != nil {
					t.Fatalf("size %d: write with the current ETag: %v", size, err)
				}
				rc, _, err = s.Get(ctx, "k", GetOptions{Length: -1})
				if err != nil {
					t.Fatal(err)
				}
				b, _ = io.ReadAll(rc)
				rc.Close()
				if !bytes.Equal(b, randBytes(uint64(size), size)) {
					t.Fatalf("size %d: the conditional write did not land", size)
				}
			}
		})
	}
}
