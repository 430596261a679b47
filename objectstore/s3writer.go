package objectstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// errWriterClosed is returned by Write or Commit after a successful Commit.
var errWriterClosed = errors.New("objectstore: writer already committed")

type writerState int

const (
	writerOpen writerState = iota
	writerCommitted
	writerAborted
)

// s3Writer is the S3 Writer: its own multipart upload.
//
// Writes fill a part buffer; a full buffer is handed to a goroutine that
// uploads it (UploadPart) as soon as one more byte arrives, so an object that
// fits in one part is sent by Commit as a single PutObject and never starts a
// multipart upload. At most Concurrency parts are in flight; Write blocks
// for a free slot (backpressure), so a Writer holds at most Concurrency+1
// part buffers. The first failure is sticky: it cancels the other part
// uploads, and every later Write and Commit returns it. A failed Commit and
// Abort abort the multipart upload, so nothing becomes visible and an older
// object under the key is left intact.
//
// The methods of a Writer must not be called concurrently.
type s3Writer struct {
	s    *S3Store
	key  string // relative
	full string // with prefix
	meta map[string]string
	// ifMatch, when set (CreateIfMatch), is sent as If-Match with the
	// PutObject or CompleteMultipartUpload that makes the object visible.
	ifMatch string
	// unique: Create's ctx was marked WithUniqueMetadata.
	unique bool

	// bg carries the part uploads. It keeps Create's values but not its
	// cancellation (a FUSE request context ends long before the file is
	// closed); Abort, a failure or Commit's ctx cancel it.
	bg     context.Context
	cancel context.CancelFunc

	buf      []byte        // the part being filled
	free     chan []byte   // idle part buffers
	nbufs    int           // part buffers allocated so far
	budgeted int64         // bytes of those taken from S3Options.Budget
	joined   bool          // Budget.Join called, Leave due
	sem      chan struct{} // one token per part upload in flight
	uploadID string        // "" until the first part is started
	partNo   int32         // last part number started
	size     int64
	state    writerState
	info     *Info
	wg       sync.WaitGroup

	mu    sync.Mutex // guards parts and err, written by part goroutines
	parts []types.CompletedPart
	err   error
}

var _ Writer = (*s3Writer)(nil)

// Create implements Store. See s3Writer for the upload strategy. ctx's
// values are kept for the background part uploads but its cancellation is
// not: end an unwanted upload with Abort.
func (s *S3Store) Create(ctx context.Context, key string, meta map[string]string) (Writer, error) {
	full, err := s.full(key)
	if err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &s3Writer{
		s: s, key: key, full: full, meta: meta, bg: bg, cancel: cancel, unique: uniqueMetadata(ctx),
		free: make(chan []byte, s.opt.Concurrency+1),
		sem:  make(chan struct{}, s.opt.Concurrency),
	}, nil
}

func (w *s3Writer) loadErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// fail records err if it is the first failure and stops the other uploads.
func (w *s3Writer) fail(err error) error {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	err = w.err
	w.mu.Unlock()
	w.cancel()
	return err
}

func (w *s3Writer) usable() error {
	switch w.state {
	case writerCommitted:
		return errWriterClosed
	case writerAborted:
		return fmt.Errorf("objectstore: write %q: %w", w.key, ErrAborted)
	}
	return w.loadErr()
}

// Write implements io.Writer. It returns the first background failure as
// soon as it is known.
func (w *s3Writer) Write(p []byte) (int, error) {
	if err := w.usable(); err != nil {
		return 0, err
	}
	partSize := int(w.s.opt.PartSize)
	n := 0
	for len(p) > 0 {
		if len(w.buf) == partSize {
			if err := w.startPart(); err != nil {
				return n, err
			}
		}
		if w.buf == nil {
			b, err := w.getBuf()
			if err != nil {
				return n, w.fail(fmt.Errorf("objectstore: create %q: waiting for memory: %w", w.key, err))
			}
			w.buf = b
		}
		c := min(partSize-len(w.buf), len(p))
		if len(w.buf)+c > cap(w.buf) {
			// The first buffer grows, so small objects stay small.
			nb := make([]byte, len(w.buf), min(partSize, max(2*cap(w.buf), len(w.buf)+c, 64<<10)))
			copy(nb, w.buf)
			w.buf = nb
		}
		w.buf = append(w.buf, p[:c]...)
		p = p[c:]
		n += c
		w.size += int64(c)
	}
	return n, nil
}

// getBuf returns an empty part buffer, waiting for an upload to finish when
// all Concurrency+1 buffers are taken. Buffers beyond the first come from
// the budget; when it is spent, getBuf waits for one of this Writer's
// uploads to hand its buffer back (every buffer not being filled is being
// uploaded, so one always will): the Writer uploads fewer parts at once.
func (w *s3Writer) getBuf() ([]byte, error) {
	select {
	case b := <-w.free:
		return b[:0], nil
	default:
	}
	if w.nbufs < cap(w.free) {
		if w.nbufs == 0 {
			w.nbufs++
			return nil, nil // grown on demand by Write
		}
		if !w.joined {
			// A Writer of more than one part shares the budget fairly
			// with the others (and the readers) from now on.
			w.s.opt.Budget.Join()
			w.joined = true
		}
		if w.s.opt.Budget.TryAcquireShare(w.s.opt.PartSize, w.budgeted) {
			w.nbufs++
			w.budgeted += w.s.opt.PartSize
			return make([]byte, 0, w.s.opt.PartSize), nil
		}
	}
	select {
	case b := <-w.free:
		return b[:0], nil
	case <-w.bg.Done():
		return nil, context.Cause(w.bg)
	}
}

// releaseBudget gives back the budgeted buffers once the Writer is done.
func (w *s3Writer) releaseBudget() {
	w.s.opt.Budget.Release(w.budgeted)
	w.budgeted = 0
	if w.joined {
		w.s.opt.Budget.Leave()
		w.joined = false
	}
}

// startPart hands w.buf to a part upload goroutine, starting the multipart
// upload first if needed. It blocks while Concurrency parts are in flight.
func (w *s3Writer) startPart() error {
	if w.uploadID == "" {
		in := &s3.CreateMultipartUploadInput{Bucket: &w.s.bucket, Key: &w.full, Metadata: w.meta}
		w.s.sseCreate(in)
		out, err := w.s.client.CreateMultipartUpload(w.bg, in)
		if err != nil {
			return w.fail(fmt.Errorf("objectstore: create %q: %w", w.key, classify(err)))
		}
		w.uploadID = aws.ToString(out.UploadId)
		w.s.uploadEvent(w.key, w.uploadID, false)
	}
	if w.partNo == maxParts {
		return w.fail(fmt.Errorf("objectstore: create %q: more than %d parts of %d bytes: %w",
			w.key, maxParts, w.s.opt.PartSize, ErrTooLarge))
	}
	select {
	case w.sem <- struct{}{}:
	case <-w.bg.Done():
		if err := w.loadErr(); err != nil {
			return err
		}
		return w.fail(fmt.Errorf("objectstore: create %q: %w", w.key, w.bg.Err()))
	}
	w.partNo++
	partNo, body := w.partNo, w.buf
	w.buf = nil
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		in := &s3.UploadPartInput{
			Bucket: &w.s.bucket, Key: &w.full, UploadId: &w.uploadID, PartNumber: aws.Int32(partNo),
			Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
		}
		w.s.sseUploadPart(in)
		out, err := w.s.client.UploadPart(w.bg, in, w.s.bodyOpts()...)
		w.free <- body
		<-w.sem
		if err != nil {
			w.fail(fmt.Errorf("objectstore: upload part %d of %q: %w", partNo, w.key, classify(err)))
			return
		}
		w.mu.Lock()
		w.parts = append(w.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(partNo)})
		w.mu.Unlock()
	}()
	return nil
}

// Commit implements Writer. Cancelling ctx cancels the part uploads too.
func (w *s3Writer) Commit(ctx context.Context) (*Info, error) {
	if w.state == writerCommitted {
		return nil, errWriterClosed
	}
	if w.state == writerAborted {
		return nil, fmt.Errorf("objectstore: commit %q: %w", w.key, ErrAborted)
	}
	if err := w.loadErr(); err != nil {
		w.abort(ctx)
		return nil, err
	}
	stop := context.AfterFunc(ctx, w.cancel)
	defer stop()
	if w.uploadID == "" {
		body := w.buf
		in := &s3.PutObjectInput{
			Bucket: &w.s.bucket, Key: &w.full, Body: bytes.NewReader(body),
			ContentLength: aws.Int64(int64(len(body))), Metadata: w.meta,
			IfMatch: ifMatch(w.ifMatch),
		}
		w.s.ssePut(in)
		out, err := w.s.client.PutObject(ctx, in, w.s.bodyOpts()...)
		if err != nil {
			err = classify(err)
			if info := w.s.landed(ctx, w.mayHaveLanded(err), w.key, w.size, quote(md5hex(body)), w.meta, w.unique); info != nil {
				return w.committed(info.ETag), nil
			}
			err = w.fail(fmt.Errorf("objectstore: put %q: %w", w.key, err))
			w.abort(ctx)
			return nil, err
		}
		return w.committed(aws.ToString(out.ETag)), nil
	}
	err := w.startPart()
	w.wg.Wait()
	if err == nil {
		err = w.loadErr()
	}
	if err != nil {
		w.abort(ctx)
		return nil, err
	}
	slices.SortFunc(w.parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	out, err := w.s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &w.s.bucket, Key: &w.full, UploadId: &w.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
		IfMatch:         ifMatch(w.ifMatch),
	})
	if err != nil {
		// A lost reply: the SDK's retry of a Complete that did land gets
		// NoSuchUpload, or the retries run out. Read the key back.
		err = classify(err)
		if info := w.s.landed(ctx, w.mayHaveLanded(err), w.key, w.size, multipartETag(w.parts), w.meta, w.unique); info != nil {
			w.s.uploadEvent(w.key, w.uploadID, true)
			return w.committed(info.ETag), nil
		}
		err = w.fail(fmt.Errorf("objectstore: complete %q: %w", w.key, err))
		w.abort(ctx)
		return nil, err
	}
	w.s.uploadEvent(w.key, w.uploadID, true)
	return w.committed(aws.ToString(out.ETag)), nil
}

func (w *s3Writer) committed(etag string) *Info {
	w.state = writerCommitted
	w.cancel()
	w.buf, w.free = nil, nil
	w.releaseBudget()
	w.info = &Info{Key: w.key, Size: w.size, ETag: etag, LastModified: time.Now(), Metadata: lowerMeta(w.meta)}
	return w.info
}

// abort stops the part uploads, waits for them and aborts the multipart
// upload, if any.
func (w *s3Writer) abort(ctx context.Context) error {
	w.state = writerAborted
	w.cancel()
	w.wg.Wait()
	w.buf, w.free = nil, nil
	w.releaseBudget()
	if w.uploadID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	_, err := w.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: &w.s.bucket, Key: &w.full, UploadId: &w.uploadID,
	})
	if err != nil && !errors.Is(classify(err), ErrAborted) {
		return fmt.Errorf("objectstore: abort %q: %w", w.key, classify(err))
	}
	w.s.uploadEvent(w.key, w.uploadID, true)
	return nil
}

// Abort implements Writer.
func (w *s3Writer) Abort(ctx context.Context) error {
	if w.state != writerOpen {
		return nil
	}
	return w.abort(ctx)
}

// Ambiguous commits.
//
// A commit request (PutObject, CompleteMultipartUpload, CopyObject) whose
// reply is lost may have been applied: the connection broke after the
// server acted, or the SDK's retry of a Complete that did land found
// NoSuchUpload. Reporting that as a failure would make a program believe the
// old object is still there. So after such an error the key is read back
// (HEAD) and the write counts as done if the object there is the one this
// request sent: same size, same user metadata, and the ETag S3 computes for
// those bytes (the MD5 of a single-part body; the MD5 of the parts' MD5s
// with "-N" for a multipart upload). Where the server's ETags are not MD5s
// (SSE-KMS), non-empty metadata that matches in full is taken as the proof,
// but only if the caller marked the write WithUniqueMetadata (for an
// encrypted object it holds the per-object IV and wrapped data key, which no
// other write repeats; a plaintext object's attributes prove nothing: an
// older object of the same size may carry the same ones). Otherwise the
// original error is returned.
// The store knows nothing of encryption: it only compares what it sent.

// ambiguous reports whether a failed request may nevertheless have been
// applied: no answer (ErrUnavailable: reset, lost reply, timeout, 5xx), a
// NoSuchUpload (ErrAborted) from a retried Complete, or a cancelled wait.
func ambiguous(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrAborted) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// mayHaveLanded is ambiguous for w's commit error, and also counts a 412 of
// a conditional commit (CreateIfMatch): the SDK retries a commit whose reply
// was lost, and if the first attempt landed, the object's ETag is now this
// commit's own, so the retry's If-Match fails. landed then tells the two
// apart by the object itself.
func (w *s3Writer) mayHaveLanded(err error) error {
	if w.ifMatch != "" && errors.Is(err, ErrPreconditionFailed) {
		return fmt.Errorf("%w: a conditional commit's 412 (%w)", ErrUnavailable, err)
	}
	return err
}

// landed resolves an ambiguous commit of key (see above): it returns the
// Info of the object now under key if that is the one written (size,
// wantETag, meta), else nil. err is the commit's error; unambiguous errors
// return nil at once. unique says meta is unique to this write (see
// WithUniqueMetadata); without it only the ETag proves a write.
func (s *S3Store) landed(ctx context.Context, err error, key string, size int64, wantETag string, meta map[string]string, unique bool) *Info {
	if !ambiguous(err) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	info, herr := s.Head(ctx, key)
	if herr != nil || info.Size != size || !maps.Equal(info.Metadata, lowerMeta(meta)) {
		return nil
	}
	if etagEqual(info.ETag, wantETag) || unique && (wantETag == "" || !md5Style(info.ETag)) && len(meta) > 0 {
		return info
	}
	return nil
}

func md5hex(b []byte) string {
	h := md5.Sum(b)
	return hex.EncodeToString(h[:])
}

// multipartETag is the ETag S3 gives a multipart upload of parts (sorted):
// the MD5 of the concatenated binary part MD5s, "-" and the part count; ""
// if a part's ETag is not an MD5.
func multipartETag(parts []types.CompletedPart) string {
	var cat []byte
	for _, p := range parts {
		b, err := hex.DecodeString(strings.Trim(aws.ToString(p.ETag), `"`))
		if err != nil || len(b) != md5.Size {
			return ""
		}
		cat = append(cat, b...)
	}
	return quote(md5hex(cat) + "-" + strconv.Itoa(len(parts)))
}

// md5Style reports whether etag looks like an S3 MD5 ETag (32 hex digits,
// optionally "-N").
func md5Style(etag string) bool {
	e := strings.Trim(etag, `"`)
	if i := strings.IndexByte(e, '-'); i >= 0 {
		e = e[:i]
	}
	_, err := hex.DecodeString(e)
	return err == nil && len(e) == 2*md5.Size
}
