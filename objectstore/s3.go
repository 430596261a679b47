package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3 limits that shape the multipart code.
const (
	MinPartSize      = 5 << 20 // smallest non-final part S3 accepts
	DefaultPartSize  = 8 << 20 // default S3Options.PartSize
	maxParts         = 10000   // most parts in one multipart upload
	maxCopyObject    = 5 << 30 // largest object CopyObject can copy
	defaultCopyPart  = 512 << 20
	defaultListPage  = 1000
	defaultPartConcy = 8
)

// S3Options tunes an S3Store. The zero value gives the defaults.
type S3Options struct {
	// PartSize is the size of each multipart part a Writer sends. Default
	// 8 MiB; values below 5 MiB are raised to 5 MiB. A Writer holds at most
	// Concurrency+1 buffers of this size.
	PartSize int64
	// Concurrency is the number of parts a Writer uploads in parallel
	// (default 8). When all are busy, Write blocks (backpressure).
	Concurrency int
	// MaxKeys is the ListObjectsV2 page size (default 1000; tests use small
	// values to exercise pagination).
	MaxKeys int32
	// OnUpload, if set, is called synchronously after a Writer's
	// CreateMultipartUpload succeeds (Done false) and after its multipart
	// upload is completed or aborted (Done true), so that a caller can keep
	// a journal of uploads a crash would leave open (see UploadEvent). It is
	// not called for objects sent with a single PutObject. It must be safe
	// for concurrent use and should be quick: it delays the Write or Commit
	// that triggered it.
	OnUpload func(UploadEvent)
	// UnsignedPayload sends object bodies (PutObject, UploadPart) with
	// x-amz-content-sha256: UNSIGNED-PAYLOAD instead of hashing them for the
	// signature. SHA-256 of every body was a third of the CPU of a large
	// upload; the body's integrity is still checked by TLS in transit and,
	// for encrypted objects, end to end by the GCM tag.
	UnsignedPayload bool
	// Budget, if set, is where a Writer takes its part buffers beyond the
	// first: when it is spent, Write waits for part uploads (of any Writer
	// sharing it) to finish.
	Budget *Budget
	// SSE is the server-side encryption asked for on every write (and, for
	// SSE-C, every read); see SSE.
	SSE SSE
}

// bodyOpts are the per-request options of requests that carry an object
// body.
func (s *S3Store) bodyOpts() []func(*s3.Options) {
	if !s.opt.UnsignedPayload {
		return nil
	}
	return []func(*s3.Options){func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	}}
}

// S3Store is a Store on an S3 bucket (and optional prefix) through
// aws-sdk-go-v2. Retries are the SDK client's: every request body is a
// bytes.Reader so the standard retryer can resend it.
type S3Store struct {
	client *s3.Client
	bucket string
	prefix string // "" or ends in "/"
	opt    S3Options
	ssec   sseHeaders // SSE-C headers, empty unless opt.SSE.Mode is SSEC

	// copyThreshold and copyPartSize choose multipart copy; variables so
	// tests can exercise UploadPartCopy on small objects.
	copyThreshold int64
	copyPartSize  int64
}

var _ Store = (*S3Store)(nil)

// NewS3 returns a store on bucket. Keys given to and returned by the store
// are relative to prefix, which is normalised to end in "/" unless empty.
func NewS3(client *s3.Client, bucket, prefix string, opt S3Options) *S3Store {
	if opt.PartSize == 0 {
		opt.PartSize = DefaultPartSize
	}
	if opt.PartSize < MinPartSize {
		opt.PartSize = MinPartSize
	}
	if opt.Concurrency <= 0 {
		opt.Concurrency = defaultPartConcy
	}
	if opt.MaxKeys <= 0 {
		opt.MaxKeys = defaultListPage
	}
	prefix = strings.TrimLeft(prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	opt.SSE.CustomerKey = append([]byte(nil), opt.SSE.CustomerKey...)
	return &S3Store{
		client: client, bucket: bucket, prefix: prefix, opt: opt, ssec: newSSEHeaders(opt.SSE),
		copyThreshold: maxCopyObject, copyPartSize: defaultCopyPart,
	}
}

func (s *S3Store) full(key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("objectstore: s3: empty key: %w", ErrInvalidKey)
	}
	return s.prefix + key, nil
}

// classify maps an SDK error to the package sentinels, keeping the SDK
// error in the chain (for its message and for errors.As). Errors it does not
// recognise are returned unchanged.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			sentinel = ErrNotFound
		case "NoSuchBucket":
			sentinel = ErrNoSuchBucket
		case "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
			"AllAccessDisabled", "ExpiredToken", "InvalidToken":
			sentinel = ErrAccessDenied
		case "PreconditionFailed":
			sentinel = ErrPreconditionFailed
		case "InvalidRange":
			sentinel = ErrInvalidRange
		case "NoSuchUpload":
			sentinel = ErrAborted
		}
	}
	if sentinel == nil {
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) {
			switch re.HTTPStatusCode() {
			case http.StatusNotFound:
				sentinel = ErrNotFound
			case http.StatusForbidden:
				sentinel = ErrAccessDenied
			case http.StatusPreconditionFailed:
				sentinel = ErrPreconditionFailed
			case http.StatusRequestedRangeNotSatisfiable:
				sentinel = ErrInvalidRange
			}
		}
	}
	if sentinel == nil && unavailable(err) {
		sentinel = ErrUnavailable
	}
	if sentinel == nil {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// unavailable reports whether err (after the SDK's retries) is a failure to
// reach the store rather than an answer from it: no HTTP response at all
// (refused, reset, lost reply, timeout) or a 5xx / throttling status. A
// cancelled context is the caller's, not the store's.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		// No answer decoded: the SDK reports a transport failure as a
		// ResponseError of status 0 (nothing received) or 200 (the reply
		// was cut), or as a bare error.
		return true
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && (re.HTTPStatusCode() >= 500 || re.HTTPStatusCode() == http.StatusTooManyRequests)
}

// Check implements Store with HeadBucket: a missing bucket is
// ErrNoSuchBucket, bad credentials or policy ErrAccessDenied.
func (s *S3Store) Check(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		return nil
	}
	err = classify(err)
	if errors.Is(err, ErrNotFound) {
		// HeadBucket has no body, so a missing bucket is a bare 404.
		return fmt.Errorf("objectstore: s3 bucket %q: %w: %w", s.bucket, ErrNoSuchBucket, err)
	}
	return fmt.Errorf("objectstore: s3 bucket %q: %w", s.bucket, err)
}

func lowerMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// Head implements Store.
func (s *S3Store) Head(ctx context.Context, key string) (*Info, error) {
	full, err := s.full(key)
	if err != nil {
		return nil, err
	}
	in := &s3.HeadObjectInput{Bucket: &s.bucket, Key: &full}
	s.sseHead(in)
	out, err := s.client.HeadObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("objectstore: head %q: %w", key, s.classifyRead(err))
	}
	return &Info{
		Key: key, Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified), Metadata: lowerMeta(out.Metadata),
		SSE: sseOf(out.ServerSideEncryption, out.SSEKMSKeyId, out.SSECustomerAlgorithm),
	}, nil
}

// Get implements Store. Offset 0 with Length -1 reads the whole object (so
// a zero-length object reads as empty); Length 0 checks the object (and
// IfMatch) with a HEAD and returns an empty body.
func (s *S3Store) Get(ctx context.Context, key string, opt GetOptions) (io.ReadCloser, *Info, error) {
	full, err := s.full(key)
	if err != nil {
		return nil, nil, err
	}
	if opt.Offset < 0 || opt.Length < -1 {
		return nil, nil, fmt.Errorf("objectstore: get %q: offset %d length %d: %w", key, opt.Offset, opt.Length, ErrInvalidRange)
	}
	if opt.Length == 0 {
		info, err := s.Head(ctx, key)
		if err != nil {
			return nil, nil, err
		}
		if opt.IfMatch != "" && !etagEqual(opt.IfMatch, info.ETag) {
			return nil, nil, fmt.Errorf("objectstore: get %q: %w", key, ErrPreconditionFailed)
		}
		if opt.Offset > info.Size || (opt.Offset == info.Size && info.Size > 0) {
			return nil, nil, fmt.Errorf("objectstore: get %q: offset %d of %d: %w", key, opt.Offset, info.Size, ErrInvalidRange)
		}
		return io.NopCloser(bytes.NewReader(nil)), info, nil
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &full}
	s.sseGet(in)
	if opt.IfMatch != "" {
		in.IfMatch = aws.String(opt.IfMatch)
	}
	switch {
	case opt.Offset == 0 && opt.Length == -1:
	case opt.Length == -1:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", opt.Offset))
	default:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", opt.Offset, opt.Offset+opt.Length-1))
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		err = s.classifyRead(err)
		if opt.Offset == 0 && in.Range != nil && errors.Is(err, ErrInvalidRange) {
			// S3 refuses any range on an empty object; read it whole.
			return s.Get(ctx, key, GetOptions{Offset: 0, Length: -1, IfMatch: opt.IfMatch})
		}
		return nil, nil, fmt.Errorf("objectstore: get %q: %w", key, err)
	}
	info := &Info{
		Key: key, Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified), Metadata: lowerMeta(out.Metadata),
		SSE: sseOf(out.ServerSideEncryption, out.SSEKMSKeyId, out.SSECustomerAlgorithm),
	}
	if cr := aws.ToString(out.ContentRange); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			if n, err := strconv.ParseInt(cr[i+1:], 10, 64); err == nil {
				info.Size = n
			}
		}
	}
	body := &resumeBody{s: s, ctx: ctx, key: key, in: in, rc: out.Body, etag: info.ETag,
		off: opt.Offset, end: opt.Offset + aws.ToInt64(out.ContentLength)}
	return body, info, nil
}

// resumeBodyAttempts bounds the re-requests of one body that make no
// progress in between.
const resumeBodyAttempts = 5

// resumeBody is the body of a Get that survives a cut connection: when a
// read fails (reset, or the body ends before its Content-Length), the rest
// is requested again from the last byte delivered, pinned to the ETag of
// the first response (If-Match), so the bytes always come from one version.
// After resumeBodyAttempts failures in a row without a byte of progress it
// fails with ErrUnavailable (and ErrPreconditionFailed if the object changed
// meanwhile). It never reports io.ErrUnexpectedEOF: a cut body is a fault of
// transport, not a short object.
type resumeBody struct {
	s        *S3Store
	ctx      context.Context
	key      string
	in       *s3.GetObjectInput
	rc       io.ReadCloser
	etag     string
	off, end int64 // next byte to deliver, end of the range (exclusive)
	fails    int   // failures since the last progress
	err      error
}

func (b *resumeBody) Read(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if b.rc == nil {
			if err := b.reopen(); err != nil {
				b.err = err
				return 0, err
			}
		}
		n, err := b.rc.Read(p)
		b.off += int64(n)
		if n > 0 {
			b.fails = 0
		}
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && b.off >= b.end:
			return n, io.EOF
		case b.ctx.Err() != nil:
			b.err = err
			return n, err
		}
		// Cut short: drop this connection, resume on the next Read.
		b.rc.Close()
		b.rc = nil
		b.fails++
		if b.fails > resumeBodyAttempts {
			b.err = fmt.Errorf("objectstore: get %q: body cut at byte %d of %d, %d attempts to resume failed: %w (%v)",
				b.key, b.off, b.end, resumeBodyAttempts, ErrUnavailable, err)
			return n, b.err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// reopen requests the rest of the body, from b.off, of the same version.
func (b *resumeBody) reopen() error {
	in := *b.in
	in.IfMatch = aws.String(b.etag)
	in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", b.off, b.end-1))
	out, err := b.s.client.GetObject(b.ctx, &in)
	if err != nil {
		b.fails++
		err = b.s.classifyRead(err)
		if !errors.Is(err, ErrUnavailable) || b.fails > resumeBodyAttempts || b.ctx.Err() != nil {
			return fmt.Errorf("objectstore: get %q: resuming at byte %d: %w", b.key, b.off, err)
		}
		return nil // counted; the next Read tries again
	}
	b.rc = out.Body
	return nil
}

func (b *resumeBody) Close() error {
	if b.err == nil {
		b.err = errors.New("objectstore: read after Close")
	}
	if b.rc == nil {
		return nil
	}
	rc := b.rc
	b.rc = nil
	return rc.Close()
}

// List implements Store with ListObjectsV2, one fn call per non-empty page
// (an empty listing calls fn never).
func (s *S3Store) List(ctx context.Context, prefix, delimiter string, fn func(ListPage) error) error {
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.prefix + prefix), MaxKeys: aws.Int32(s.opt.MaxKeys)}
	if delimiter != "" {
		in.Delimiter = aws.String(delimiter)
	}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("objectstore: list %q: %w", prefix, classify(err))
		}
		var page ListPage
		for _, o := range out.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if k == "" {
				continue // the prefix's own "dir/" marker
			}
			page.Objects = append(page.Objects, Info{
				Key: k, Size: aws.ToInt64(o.Size), ETag: aws.ToString(o.ETag), LastModified: aws.ToTime(o.LastModified),
			})
		}
		for _, cp := range out.CommonPrefixes {
			page.Prefixes = append(page.Prefixes, strings.TrimPrefix(aws.ToString(cp.Prefix), s.prefix))
		}
		if len(page.Objects) == 0 && len(page.Prefixes) == 0 {
			continue
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

// Put implements Store with one PutObject.
func (s *S3Store) Put(ctx context.Context, key string, body []byte, meta map[string]string) (*Info, error) {
	full, err := s.full(key)
	if err != nil {
		return nil, err
	}
	in := &s3.PutObjectInput{
		Bucket: &s.bucket, Key: &full, Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), Metadata: meta,
	}
	s.ssePut(in)
	out, err := s.client.PutObject(ctx, in, s.bodyOpts()...)
	if err != nil {
		err = classify(err)
		if info := s.landed(ctx, err, key, int64(len(body)), quote(md5hex(body)), meta, uniqueMetadata(ctx)); info != nil {
			return info, nil
		}
		return nil, fmt.Errorf("objectstore: put %q: %w", key, err)
	}
	return &Info{Key: key, Size: int64(len(body)), ETag: aws.ToString(out.ETag), LastModified: time.Now(), Metadata: lowerMeta(meta)}, nil
}

// Copy implements Store: CopyObject up to 5 GiB, multipart UploadPartCopy
// above. Metadata nil keeps the source's metadata (MetadataDirective COPY).
// Every request carries x-amz-copy-source-if-match: opt.IfMatch if set,
// else the ETag of the HEAD that gave the size and metadata.
func (s *S3Store) Copy(ctx context.Context, src, dst string, opt CopyOptions) (*Info, error) {
	meta := opt.Metadata
	fullSrc, err := s.full(src)
	if err != nil {
		return nil, err
	}
	fullDst, err := s.full(dst)
	if err != nil {
		return nil, err
	}
	var srcInfo *Info
	if known := opt.Source; known != nil && opt.IfMatch != "" && etagEqual(opt.IfMatch, known.ETag) && known.Size <= s.copyThreshold {
		// The caller knows the version it pins: no HEAD. CopySourceIfMatch
		// below refuses any other.
		srcInfo = known
	} else {
		if srcInfo, err = s.Head(ctx, src); err != nil {
			return nil, err
		}
		if opt.IfMatch != "" && !etagEqual(opt.IfMatch, srcInfo.ETag) {
			return nil, fmt.Errorf("objectstore: copy %q to %q: %w", src, dst, ErrPreconditionFailed)
		}
	}
	source := s.bucket + "/" + escapeKey(fullSrc)
	if srcInfo.Size > s.copyThreshold {
		if meta == nil {
			meta = srcInfo.Metadata
		}
		return s.copyMultipart(ctx, srcInfo, source, dst, fullDst, meta)
	}
	in := &s3.CopyObjectInput{
		Bucket: &s.bucket, Key: &fullDst, CopySource: &source,
		// The Head above gave the size and metadata we report; make sure
		// the copy is of that same version.
		CopySourceIfMatch: aws.String(srcInfo.ETag),
		MetadataDirective: types.MetadataDirectiveCopy,
	}
	if src == dst {
		// Asking for a checksum makes the server copy the body it checked
		// the precondition on. Without it MinIO turns a self-copy into a
		// metadata-only update of whatever version is current by then
		// (its if-match is checked outside the object lock), which pairs
		// this copy's metadata with a newer body. AWS S3 copies the body
		// either way; the checksum is only stored.
		in.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	s.sseCopy(in)
	if meta != nil {
		in.MetadataDirective, in.Metadata = types.MetadataDirectiveReplace, meta
	} else {
		meta = srcInfo.Metadata
	}
	out, err := s.client.CopyObject(ctx, in)
	if err != nil {
		err = classify(err)
		// A copy keeps the body, so a single-part source's ETag is the
		// copy's too; a multipart one's is not, and the metadata decides.
		want := srcInfo.ETag
		if !md5Style(want) || strings.Contains(want, "-") {
			want = ""
		}
		if info := s.landed(ctx, err, dst, srcInfo.Size, want, meta, uniqueMetadata(ctx)); info != nil {
			return info, nil
		}
		return nil, fmt.Errorf("objectstore: copy %q to %q: %w", src, dst, err)
	}
	info := &Info{Key: dst, Size: srcInfo.Size, Metadata: lowerMeta(meta), LastModified: time.Now()}
	if r := out.CopyObjectResult; r != nil {
		info.ETag = aws.ToString(r.ETag)
		if r.LastModified != nil {
			info.LastModified = *r.LastModified
		}
	}
	return info, nil
}

func (s *S3Store) copyMultipart(ctx context.Context, srcInfo *Info, source, dst, fullDst string, meta map[string]string) (*Info, error) {
	partSize := s.copyPartSize
	if min := (srcInfo.Size + maxParts - 1) / maxParts; partSize < min {
		partSize = min
	}
	cin := &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &fullDst, Metadata: meta}
	s.sseCreate(cin)
	create, err := s.client.CreateMultipartUpload(ctx, cin)
	if err != nil {
		return nil, fmt.Errorf("objectstore: copy %q to %q: %w", srcInfo.Key, dst, classify(err))
	}
	fail := func(err error) (*Info, error) {
		s.abortMPU(ctx, fullDst, aws.ToString(create.UploadId))
		return nil, fmt.Errorf("objectstore: copy %q to %q: %w", srcInfo.Key, dst, classify(err))
	}
	var parts []types.CompletedPart
	for off, partNo := int64(0), int32(1); off < srcInfo.Size; off, partNo = off+partSize, partNo+1 {
		end := min(off+partSize, srcInfo.Size) - 1
		pin := &s3.UploadPartCopyInput{
			Bucket: &s.bucket, Key: &fullDst, UploadId: create.UploadId, PartNumber: aws.Int32(partNo),
			CopySource: &source, CopySourceIfMatch: aws.String(srcInfo.ETag),
			CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
		}
		s.sseUploadPartCopy(pin)
		out, err := s.client.UploadPartCopy(ctx, pin)
		if err != nil {
			return fail(err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.CopyPartResult.ETag, PartNumber: aws.Int32(partNo)})
	}
	complete := &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &fullDst, UploadId: create.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	if srcInfo.Key == dst {
		// A self-copy (new metadata on the same body) must not replace a
		// newer version written after the parts were copied: the parts
		// are pinned to srcInfo.ETag, and so is the completion.
		complete.IfMatch = aws.String(srcInfo.ETag)
	}
	out, err := s.client.CompleteMultipartUpload(ctx, complete)
	if err != nil {
		// A lost reply, or NoSuchUpload on the SDK's retry, may hide a
		// completion that was applied: read dst back (the parts' ETags
		// give the multipart ETag where they are MD5s).
		// A self-copy's retry may get 412 instead, dst's ETag being its
		// own by then; a racing overwrite fails the comparison.
		cerr := classify(err)
		if srcInfo.Key == dst && errors.Is(cerr, ErrPreconditionFailed) {
			cerr = fmt.Errorf("%w: a conditional completion's 412 (%w)", ErrUnavailable, cerr)
		}
		if info := s.landed(ctx, cerr, dst, srcInfo.Size, multipartETag(parts), meta, uniqueMetadata(ctx)); info != nil {
			return info, nil
		}
		return fail(err)
	}
	return &Info{Key: dst, Size: srcInfo.Size, ETag: aws.ToString(out.ETag), LastModified: time.Now(), Metadata: lowerMeta(meta)}, nil
}

// abortMPU aborts an upload even if ctx is cancelled; the error is dropped
// because the caller is already returning a more useful one.
func (s *S3Store) abortMPU(ctx context.Context, fullKey, uploadID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	_, _ = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &fullKey, UploadId: &uploadID})
}

// escapeKey URL-escapes a key for x-amz-copy-source, keeping "/".
func escapeKey(key string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || c == '/' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	full, err := s.full(key)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &full}); err != nil {
		err = classify(err)
		if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNoSuchBucket) {
			return nil
		}
		if ambiguous(err) {
			// The reply may be what was lost: an absent object is a
			// delete done.
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if _, herr := s.Head(hctx, key); errors.Is(herr, ErrNotFound) {
				return nil
			}
		}
		return fmt.Errorf("objectstore: delete %q: %w", key, err)
	}
	return nil
}

// Upload is an incomplete multipart upload under the store's prefix.
type Upload struct {
	Key       string // relative to the prefix
	UploadID  string
	Initiated time.Time
}

// ListUploads returns the incomplete multipart uploads under the store's
// prefix (left behind by crashed writers), for cleanup with AbortUpload.
//
// MinIO's ListMultipartUploads only finds uploads of one exact key, so
// against MinIO this returns none unless the prefix is a whole key; AWS S3
// lists them all.
func (s *S3Store) ListUploads(ctx context.Context) ([]Upload, error) {
	return s.listUploads(ctx, "")
}

// listUploads lists the uploads of keys beginning with prefix.
func (s *S3Store) listUploads(ctx context.Context, prefix string) ([]Upload, error) {
	in := &s3.ListMultipartUploadsInput{Bucket: &s.bucket, Prefix: aws.String(s.prefix + prefix)}
	var ups []Upload
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("objectstore: list uploads: %w", classify(err))
		}
		for _, u := range out.Uploads {
			ups = append(ups, Upload{
				Key: strings.TrimPrefix(aws.ToString(u.Key), s.prefix), UploadID: aws.ToString(u.UploadId),
				Initiated: aws.ToTime(u.Initiated),
			})
		}
		if !aws.ToBool(out.IsTruncated) {
			return ups, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// AbortUpload aborts one incomplete multipart upload (key relative to the
// prefix). An upload that no longer exists is not an error.
func (s *S3Store) AbortUpload(ctx context.Context, key, uploadID string) error {
	full := s.prefix + key
	_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &full, UploadId: &uploadID})
	if err != nil {
		err = classify(err)
		if errors.Is(err, ErrAborted) {
			return nil
		}
		return fmt.Errorf("objectstore: abort upload %q: %w", key, err)
	}
	return nil
}

func etagEqual(a, b string) bool {
	return strings.Trim(a, `"`) == strings.Trim(b, `"`)
}
