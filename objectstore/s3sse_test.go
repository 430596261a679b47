package objectstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/e2e/testenv"
)

// TestSSECStore: with SSE-C every request kind works on SSE-C objects (a
// one-PUT object, a multipart upload, a self-copy, a multipart copy
// (UploadPartCopy), ranged reads); the objects cannot be read without the
// key; another key's store gets ErrSSECustomerKey (and
// ErrAccessDenied) from Head and Get; a plain store reading them gets
// ErrSSECustomerKey too.
func TestSSECStore(t *testing.T) {
	srv := testenv.SecureMinIO(t)
	bucket := srv.NewBucket(t)
	key := make([]byte, 32)
	rand.Read(key)
	st := NewS3(srv.Client(t), bucket, "p", S3Options{PartSize: MinPartSize, SSE: SSE{Mode: SSEC, CustomerKey: key}})
	st.copyThreshold, st.copyPartSize = 6<<20, MinPartSize
	ctx := context.Background()
	small := []byte("small sse-c object")
	if _, err := st.Put(ctx, "small", small, map[string]string{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 7<<20)
	rand.Read(big)
	w, err := st.Create(ctx, "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(big)
	info, err := w.Commit(ctx)
	if err != nil {
		t.Fatalf("multipart commit: %v", err)
	}
	if _, err := st.Copy(ctx, "small", "small", CopyOptions{Metadata: map[string]string{"a": "2"}}); err != nil {
		t.Fatalf("self-copy: %v", err)
	}
	if _, err := st.Copy(ctx, "big", "big-copy", CopyOptions{IfMatch: info.ETag}); err != nil {
		t.Fatalf("multipart copy: %v", err)
	}
	read := func(s *S3Store, key string, off, n int64) ([]byte, error) {
		rc, _, err := s.Get(ctx, key, GetOptions{Offset: off, Length: n})
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	if got, err := read(st, "small", 0, -1); err != nil || !bytes.Equal(got, small) {
		t.Errorf("small: %v", err)
	}
	if got, err := read(st, "big-copy", 5<<20, 100); err != nil || !bytes.Equal(got, big[5<<20:5<<20+100]) {
		t.Errorf("ranged read of the multipart copy: %v", err)
	}
	if hi, err := st.Head(ctx, "small"); err != nil || hi.Metadata["a"] != "2" {
		t.Errorf("head after self-copy: %+v %v", hi, err)
	}
	if _, err := srv.Client(t).HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String("p/big")}); err == nil {
		t.Error("HEAD without the key succeeded")
	}
	other := make([]byte, 32)
	rand.Read(other)
	wrong := NewS3(srv.Client(t), bucket, "p", S3Options{SSE: SSE{Mode: SSEC, CustomerKey: other}})
	plain := NewS3(srv.Client(t), bucket, "p", S3Options{})
	for name, s := range map[string]*S3Store{"wrong key": wrong, "no key": plain} {
		if _, err := s.Head(ctx, "big"); !errors.Is(err, ErrSSECustomerKey) || !errors.Is(err, ErrAccessDenied) {
			t.Errorf("%s: Head: %v", name, err)
		}
		if _, err := read(s, "big", 0, 10); !errors.Is(err, ErrSSECustomerKey) {
			t.Errorf("%s: Get: %v", name, err)
		}
	}
}

func TestSSEValidate(t *testing.T) {
	for _, tc := range []struct {
		sse SSE
		ok  bool
	}{
		{SSE{}, true}, {SSE{Mode: SSES3}, true}, {SSE{Mode: SSEKMS, KMSKeyID: "k"}, true},
		{SSE{Mode: SSEC, CustomerKey: make([]byte, 32)}, true},
		{SSE{Mode: SSEC, CustomerKey: make([]byte, 16)}, false},
		{SSE{Mode: "x"}, false}, {SSE{Mode: SSES3, KMSKeyID: "k"}, false},
	} {
		if err := tc.sse.Validate(); (err == nil) != tc.ok {
			t.Errorf("%v: %v", tc.sse, err)
		}
	}
	if s := (SSE{Mode: SSEC, CustomerKey: bytes.Repeat([]byte{'K'}, 32)}).String(); s != "SSE-C" {
		t.Errorf("String = %q", s)
	}
}
