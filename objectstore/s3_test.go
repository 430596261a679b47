package objectstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/csefs/csefs/e2e/testenv"
)

// newMinIOStore returns a store on a fresh MinIO bucket, under a prefix so
// that prefix handling is always exercised.
func newMinIOStore(t *testing.T, pageSize int) *S3Store {
	t.Helper()
	srv := testenv.MinIO(t)
	return NewS3(srv.Client(t), srv.NewBucket(t), "pre/fix", S3Options{
		PartSize: MinPartSize, Concurrency: 3, MaxKeys: int32(pageSize),
	})
}

// failUploadPart makes every UploadPart after the first `after` fail before
// it is sent.
func failUploadPart(after int32) func(*middleware.Stack) error {
	var calls atomic.Int32
	return func(stack *middleware.Stack) error {
		return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("csefsFailUploadPart",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if _, ok := in.Parameters.(*s3.UploadPartInput); ok && calls.Add(1) > after {
					return middleware.InitializeOutput{}, middleware.Metadata{}, errInjected
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	}
}

// withClient returns a copy of s using a client derived from s's.
func withClient(s *S3Store, fn func(*s3.Options)) *S3Store {
	opts := s.client.Options()
	opts.APIOptions = append([]func(*middleware.Stack) error(nil), opts.APIOptions...)
	c := *s
	c.client = s3.New(opts, fn)
	return &c
}

func TestS3Conformance(t *testing.T) {
	runConformance(t, harness{
		newStore: func(t *testing.T, pageSize int) Store { return newMinIOStore(t, pageSize) },
		partSize: MinPartSize,
		failing: func(t *testing.T, s Store) Store {
			return withClient(s.(*S3Store), func(o *s3.Options) {
				o.APIOptions = append(o.APIOptions, failUploadPart(1))
			})
		},
		incomplete: func(t *testing.T, s Store, key string) int {
			// By exact key: MinIO lists uploads of one key only.
			ups, err := s.(*S3Store).listUploads(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			return len(ups)
		},
		prefixed: func(t *testing.T, prefixes ...string) []Store {
			srv := testenv.MinIO(t)
			client, bucket := srv.Client(t), srv.NewBucket(t)
			var out []Store
			for _, p := range prefixes {
				out = append(out, NewS3(client, bucket, p, S3Options{}))
			}
			return out
		},
	})
}

func TestS3Check(t *testing.T) {
	srv := testenv.MinIO(t)
	ctx := context.Background()
	client := srv.Client(t)
	if err := NewS3(client, "csefs-no-such-bucket", "", S3Options{}).Check(ctx); !errors.Is(err, ErrNoSuchBucket) {
		t.Errorf("missing bucket: %v", err)
	}
	bucket := srv.NewBucket(t)
	bad := s3.NewFromConfig(aws.Config{
		Region:      srv.Region,
		Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey, "wrong-secret", ""),
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.Endpoint)
		o.UsePathStyle = true
		o.RetryMaxAttempts = 1
	})
	err := NewS3(bad, bucket, "", S3Options{}).Check(ctx)
	if !errors.Is(err, ErrAccessDenied) {
		t.Errorf("bad secret: %v", err)
	}
	s := NewS3(bad, bucket, "", S3Options{})
	if _, err := s.Head(ctx, "k"); !errors.Is(err, ErrAccessDenied) {
		t.Errorf("bad secret Head: %v", err)
	}
}

// Objects above the CopyObject limit are copied with UploadPartCopy; the
// limit is lowered so a small object takes that path.
func TestS3MultipartCopy(t *testing.T) {
	s := newMinIOStore(t, 0)
	s.copyThreshold, s.copyPartSize = MinPartSize, MinPartSize
	body := randBytes(9, 2*MinPartSize+100)
	mustPut(t, s, "src key+", body, map[string]string{"m": "1"})
	if _, err := s.Copy(context.Background(), "src key+", "keep", CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, "keep", body, map[string]string{"m": "1"})
	if _, err := s.Copy(context.Background(), "src key+", "replace", CopyOptions{Metadata: map[string]string{"n": "2"}}); err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, "replace", body, map[string]string{"n": "2"})
	if ups, err := s.ListUploads(context.Background()); err != nil || len(ups) != 0 {
		t.Errorf("uploads left: %v %v", ups, err)
	}
}

// A crashed writer leaves an upload that listUploads finds and AbortUpload
// removes. (MinIO lists uploads by exact key only, see ListUploads.)
func TestS3ListAbortUploads(t *testing.T) {
	s := newMinIOStore(t, 0)
	ctx := context.Background()
	other := withClient(s, func(*s3.Options) {})
	other.prefix = "elsewhere/"
	w, err := s.Create(ctx, "crashed", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(randBytes(1, MinPartSize+1)) // starts the multipart upload
	w2, _ := other.Create(ctx, "not-mine", nil)
	w2.Write(randBytes(1, MinPartSize+1))
	defer w2.Abort(ctx)
	if ups, err := s.listUploads(ctx, "not-mine"); err != nil || len(ups) != 0 {
		t.Errorf("upload under another prefix listed: %+v, %v", ups, err)
	}
	ups, err := s.listUploads(ctx, "crashed")
	if err != nil || len(ups) != 1 || ups[0].Key != "crashed" || ups[0].UploadID == "" || ups[0].Initiated.IsZero() {
		t.Fatalf("listUploads = %+v, %v", ups, err)
	}
	for range 2 { // the second time the upload is gone: still no error
		if err := s.AbortUpload(ctx, ups[0].Key, ups[0].UploadID); err != nil {
			t.Fatal(err)
		}
	}
	if ups, err := s.listUploads(ctx, "crashed"); err != nil || len(ups) != 0 {
		t.Errorf("after AbortUpload: %+v, %v", ups, err)
	}
	if _, err := w.Commit(ctx); err == nil {
		t.Errorf("Commit of an aborted upload succeeded")
	}
	if _, err := s.Head(ctx, "crashed"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head = %v", err)
	}
}

func TestS3WriterBuffersBounded(t *testing.T) {
	s := newMinIOStore(t, 0)
	ctx := context.Background()
	wr, err := s.Create(ctx, "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := wr.(*s3Writer)
	body := randBytes(3, 8*MinPartSize+3)
	writeIn(t, w, body, 1<<20)
	if max := s.opt.Concurrency + 1; w.nbufs > max {
		t.Errorf("%d part buffers, want at most %d", w.nbufs, max)
	}
	if _, err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, "big", body, nil)
}

type fakeAPIError struct{ code string }

func (e fakeAPIError) Error() string                 { return e.code }
func (e fakeAPIError) ErrorCode() string             { return e.code }
func (e fakeAPIError) ErrorMessage() string          { return e.code }
func (e fakeAPIError) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

func responseError(status int, err error) error {
	return &smithy.OperationError{ServiceID: "S3", OperationName: "Op", Err: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: err,
	}}
}

func TestClassify(t *testing.T) {
	plain := errors.New("network down")
	for _, tc := range []struct {
		err  error
		want error // nil: returned unchanged
	}{
		{responseError(404, fakeAPIError{"NoSuchKey"}), ErrNotFound},
		{responseError(404, fakeAPIError{"NotFound"}), ErrNotFound}, // HeadObject, aws-sdk-go-v2#2084
		{responseError(404, &smithy.GenericAPIError{Code: "NoSuchBucket"}), ErrNoSuchBucket},
		{responseError(404, plain), ErrNotFound},
		{responseError(403, fakeAPIError{"AccessDenied"}), ErrAccessDenied},
		{responseError(403, fakeAPIError{"InvalidAccessKeyId"}), ErrAccessDenied},
		{responseError(403, fakeAPIError{"SignatureDoesNotMatch"}), ErrAccessDenied},
		{responseError(403, plain), ErrAccessDenied},
		{responseError(412, fakeAPIError{"PreconditionFailed"}), ErrPreconditionFailed},
		{responseError(412, plain), ErrPreconditionFailed},
		{responseError(416, fakeAPIError{"InvalidRange"}), ErrInvalidRange},
		{responseError(404, fakeAPIError{"NoSuchUpload"}), ErrAborted},
		{responseError(500, fakeAPIError{"InternalError"}), ErrUnavailable},
		{responseError(503, fakeAPIError{"SlowDown"}), ErrUnavailable},
		{responseError(400, fakeAPIError{"InvalidArgument"}), nil},
		{responseError(0, plain), ErrUnavailable},   // nothing received
		{responseError(200, plain), ErrUnavailable}, // the reply was cut
		{fmt.Errorf("wrapped: %w", responseError(403, plain)), ErrAccessDenied},
		{plain, ErrUnavailable},
		{context.Canceled, nil},
	} {
		got := classify(tc.err)
		if tc.want == nil {
			if got != tc.err {
				t.Errorf("classify(%v) = %v, want unchanged", tc.err, got)
			}
			continue
		}
		if !errors.Is(got, tc.want) || !errors.Is(got, tc.err) {
			t.Errorf("classify(%v) = %v, want %v wrapping the original", tc.err, got, tc.want)
		}
	}
	if classify(nil) != nil {
		t.Errorf("classify(nil) != nil")
	}
}

func TestEscapeKey(t *testing.T) {
	for in, want := range map[string]string{
		"a/b.c":     "a/b.c",
		"sp ace+%":  "sp%20ace%2B%25",
		"é&?#":      "%C3%A9%26%3F%23",
		"x_y-z~1/2": "x_y-z~1/2",
	} {
		if got := escapeKey(in); got != want {
			t.Errorf("escapeKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// A Writer refuses part 10,001 rather than failing at Complete.
func TestS3WriterTooLarge(t *testing.T) {
	client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:1"), RetryMaxAttempts: 1})
	s := NewS3(client, "bucket", "", S3Options{})
	wr, err := s.Create(context.Background(), "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := wr.(*s3Writer)
	w.uploadID, w.partNo = "pretend", maxParts // as if 10,000 parts were sent
	w.buf = make([]byte, s.opt.PartSize)
	if _, err := w.Write([]byte("one byte too many")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write = %v, want ErrTooLarge", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrTooLarge) {
		t.Errorf("error not sticky: %v", err)
	}
}

// With a shared budget, a Writer takes part buffers beyond its first only
// from it, uploads fewer parts at once when it is spent, and gives them back
// when done.
func TestS3WriterBudget(t *testing.T) {
	for _, parts := range []int64{0, 2} {
		s := newMinIOStore(t, 0)
		s.opt.Budget = NewBudget(parts*s.opt.PartSize + 1)
		ctx := context.Background()
		wr, err := s.Create(ctx, "big", nil)
		if err != nil {
			t.Fatal(err)
		}
		w := wr.(*s3Writer)
		body := randBytes(4, 6*MinPartSize+3)
		writeIn(t, w, body, 1<<20)
		if want := int(1 + parts); w.nbufs > want {
			t.Errorf("budget of %d parts: %d part buffers, want at most %d", parts, w.nbufs, want)
		}
		if got := s.opt.Budget.Used(); got != int64(w.nbufs-1)*s.opt.PartSize {
			t.Errorf("budget used %d with %d buffers", got, w.nbufs)
		}
		if _, err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got := s.opt.Budget.Used(); got != 0 {
			t.Errorf("budget used %d after Commit", got)
		}
		checkObject(t, s, "big", body, nil)
	}
}

func TestBudget(t *testing.T) {
	var none *Budget
	if !none.TryAcquire(1<<40) || none.Used() != 0 || none.Limit() != 0 {
		t.Error("a nil budget limits")
	}
	none.Release(1 << 40)
	if NewBudget(0) != nil {
		t.Error("NewBudget(0) is not the unlimited nil budget")
	}
	b := NewBudget(10)
	if !b.TryAcquire(6) || b.TryAcquire(5) || !b.TryAcquire(4) || b.TryAcquire(1) {
		t.Error("TryAcquire does not respect the limit")
	}
	b.Release(6)
	if b.Used() != 4 || !b.TryAcquire(6) {
		t.Error("Release does not free")
	}
	defer func() {
		if recover() == nil {
			t.Error("releasing more than was taken did not panic")
		}
	}()
	b.Release(11)
}

// A multipart self-copy (chmod of an object above the CopyObject limit)
// overtaken by an overwrite after its parts were copied fails with
// ErrPreconditionFailed and leaves the newer version in place: its
// completion is pinned to the ETag the parts were copied from.
func TestS3MultipartSelfCopyRacesOverwrite(t *testing.T) {
	ctx := context.Background()
	base := newMinIOStore(t, 0)
	v1 := randBytes(9, 2*MinPartSize+100)
	mustPut(t, base, "f", v1, map[string]string{"m": "1"})
	v2 := randBytes(10, 100)
	var raced atomic.Bool
	s := withClient(base, func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("csefsOverwriteBeforeComplete",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if _, ok := in.Parameters.(*s3.CompleteMultipartUploadInput); ok && !raced.Swap(true) {
						if _, err := base.Put(ctx, "f", v2, map[string]string{"m": "2"}); err != nil {
							return middleware.InitializeOutput{}, middleware.Metadata{}, err
						}
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		})
	})
	s.copyThreshold, s.copyPartSize = MinPartSize, MinPartSize
	_, err := s.Copy(ctx, "f", "f", CopyOptions{Metadata: map[string]string{"m": "1", "mode": "600"}})
	if !raced.Load() {
		t.Fatal("the copy never reached its completion")
	}
	if !errors.Is(err, ErrPreconditionFailed) {
		t.Errorf("self-copy overtaken before its completion: %v, want ErrPreconditionFailed", err)
	}
	checkObject(t, base, "f", v2, map[string]string{"m": "2"})
	if ups, err := base.ListUploads(ctx); err != nil || len(ups) != 0 {
		t.Errorf("uploads left: %v %v", ups, err)
	}
}
