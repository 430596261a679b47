package objectstore

import (
	"context"
)

// ConditionalCreator is a Store that can replace an object only if it is
// still the version the caller read.
type ConditionalCreator interface {
	// CreateIfMatch is Create, except that Commit replaces key only if its
	// ETag is still ifMatch at that moment; otherwise Commit fails with
	// ErrPreconditionFailed and the object is left as it is. S3 sends
	// If-Match with the PutObject or CompleteMultipartUpload that makes the
	// object visible (AWS S3 since 2024, MinIO); the local store checks
	// under the writers' lock of the key.
	CreateIfMatch(ctx context.Context, key string, meta map[string]string, ifMatch string) (Writer, error)
}

var (
	_ ConditionalCreator = (*S3Store)(nil)
	_ ConditionalCreator = (*LocalStore)(nil)
)

// CreateIfMatch implements ConditionalCreator.
func (s *S3Store) CreateIfMatch(ctx context.Context, key string, meta map[string]string, ifMatch string) (Writer, error) {
	w, err := s.Create(ctx, key, meta)
	if err != nil {
		return nil, err
	}
	w.(*s3Writer).ifMatch = ifMatch
	return w, nil
}

// CreateIfMatch implements ConditionalCreator: the install checks, with the
// key's writers' lock held, that the object still has ifMatch (as Copy
// checks its source).
func (s *LocalStore) CreateIfMatch(ctx context.Context, key string, meta map[string]string, ifMatch string) (Writer, error) {
	w, err := s.Create(ctx, key, meta)
	if err != nil {
		return nil, err
	}
	lw := w.(*localWriter)
	lw.srcKey, lw.srcP, lw.srcETag = key, lw.p, ifMatch
	return w, nil
}

// ifMatch is an optional If-Match header value.
func ifMatch(etag string) *string {
	if etag == "" {
		return nil
	}
	return &etag
}
