// Package objectstore is the one interface csefs uses to reach object
// storage, with two implementations: S3 (aws-sdk-go-v2) and a local
// directory (the embedded default). It knows nothing of encryption: bodies are
// opaque bytes and metadata is an opaque map of user metadata.
//
// Keys are relative to the store's root (the bucket plus an optional prefix);
// a Store never returns keys outside it.
package objectstore

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Implementations wrap them with %w; callers classify with
// errors.Is.
var (
	ErrNotFound           = errors.New("objectstore: not found")
	ErrPreconditionFailed = errors.New("objectstore: object changed (ETag mismatch)")
	ErrAccessDenied       = errors.New("objectstore: access denied")
	ErrNoSuchBucket       = errors.New("objectstore: no such bucket")
	ErrInvalidRange       = errors.New("objectstore: invalid range")
	ErrAborted            = errors.New("objectstore: upload aborted")
	// ErrUnavailable: the store could not be reached or did not answer in
	// time (connection refused or reset, a reply lost, a timeout, 5xx and
	// throttling after the retries), so the operation's outcome is a
	// failure of transport, not a statement about the object. The cause
	// stays in the chain (for the log).
	ErrUnavailable = errors.New("objectstore: store unreachable")
)

// Info describes one object.
type Info struct {
	Key          string
	Size         int64 // stored (ciphertext) size
	ETag         string
	LastModified time.Time
	// Metadata is the user metadata, keys in lower case, without the
	// x-amz-meta- prefix. It is nil when the Info comes from a listing, which
	// does not return metadata.
	Metadata map[string]string
	// SSE is the server-side encryption S3 reports for the object (Head and
	// Get of an S3Store): "SSE-S3", "SSE-KMS KEY", "SSE-C", or "" (none, or
	// not known: listings, local directories).
	SSE string `json:",omitempty"`
}

// GetOptions selects part of an object.
type GetOptions struct {
	Offset int64
	// Length is the number of bytes wanted; -1 means to the end.
	Length int64
	// IfMatch, when set, makes the read fail with ErrPreconditionFailed if the
	// object's ETag is no longer this one.
	IfMatch string
}

// CopyOptions shapes a Copy.
type CopyOptions struct {
	// Metadata nil keeps src's metadata; otherwise it replaces it.
	Metadata map[string]string
	// IfMatch, when set, is the ETag src must still have when the copy is
	// made. Every copy whose metadata comes from an earlier read of src (a
	// self-copy that changes attributes) must set it to that read's ETag, or
	// it may pair an old envelope with a newer body.
	IfMatch string
	// Source, when set together with IfMatch (and its ETag equal to it),
	// is what the caller knows of src at that ETag: its size and metadata
	// (from its own HEAD or commit). A store may then copy without reading
	// src first, one round trip less; the copy is still pinned to IfMatch,
	// so a src changed since fails it with ErrPreconditionFailed. The
	// Info a Copy returns then reports Source's metadata where it keeps
	// src's.
	Source *Info
}

// ListPage is one page of a delimited listing.
type ListPage struct {
	Objects  []Info   // objects directly under the prefix (Metadata is nil)
	Prefixes []string // common prefixes, each ending in the delimiter
}

// Store is an object store rooted at a bucket (and prefix).
type Store interface {
	// Check verifies that the store is reachable and the bucket exists, with
	// working credentials.
	Check(ctx context.Context) error
	// Head returns an object's Info, metadata included.
	Head(ctx context.Context, key string) (*Info, error)
	// Get opens a range of an object. The returned Info has the whole
	// object's size and its metadata.
	Get(ctx context.Context, key string, opt GetOptions) (io.ReadCloser, *Info, error)
	// List calls fn for each page of the listing of prefix with delimiter
	// ("" lists recursively). A non-nil error from fn stops the listing and is
	// returned.
	List(ctx context.Context, prefix, delimiter string, fn func(ListPage) error) error
	// Put stores a small object in one request. It is atomic: readers see the
	// old object or the new one.
	Put(ctx context.Context, key string, body []byte, meta map[string]string) (*Info, error)
	// Create starts a streaming write. Nothing is visible until Commit
	// succeeds; Abort (or a failed Commit) leaves any previous object intact.
	Create(ctx context.Context, key string, meta map[string]string) (Writer, error)
	// Copy copies src to dst on the server (see CopyOptions). With
	// opt.IfMatch set it is conditional: it fails with
	// ErrPreconditionFailed, and dst is untouched, unless src's ETag is
	// opt.IfMatch at the moment the copy is made (S3's
	// x-amz-copy-source-if-match; atomic on both stores).
	Copy(ctx context.Context, src, dst string, opt CopyOptions) (*Info, error)
	// Delete removes an object. A missing object is not an error.
	Delete(ctx context.Context, key string) error
}

// Writer is a streaming upload. Writes are buffered into parts; finished
// parts may be sent in parallel while later bytes are still being written.
// Write returns the first background failure as soon as it is known, and
// the error is sticky.
type Writer interface {
	io.Writer
	// Commit sends what is buffered, completes the upload and makes the
	// object visible. It returns only when the object is durable.
	Commit(ctx context.Context) (*Info, error)
	// Abort discards the upload. It is safe to call after Commit (a no-op)
	// and more than once.
	Abort(ctx context.Context) error
}

type uniqueMetadataKey struct{}

// WithUniqueMetadata marks the writes made with ctx (Put, Create, Copy) as
// carrying metadata that no other write repeats: the caller knows it holds
// something fresh, such as a client-side envelope's IV and wrapped key.
// Only then may an ambiguous commit (a lost reply) on a store whose ETags
// are not MD5s (SSE-KMS, SSE-C) be proved landed by size and metadata
// alone; otherwise an older object of the same size and metadata would be
// taken for this write. The store itself never looks inside the metadata.
func WithUniqueMetadata(ctx context.Context) context.Context {
	return context.WithValue(ctx, uniqueMetadataKey{}, true)
}

// uniqueMetadata reports whether ctx was marked by WithUniqueMetadata.
func uniqueMetadata(ctx context.Context) bool {
	v, _ := ctx.Value(uniqueMetadataKey{}).(bool)
	return v
}

// Sentinel errors added for key validation (see LocalStore and S3Store).
var (
	// ErrInvalidKey is returned for a key the store cannot represent: empty,
	// or (LocalStore) with an empty, "." or ".." path segment, a NUL byte or
	// a reserved name.
	ErrInvalidKey = errors.New("objectstore: invalid key")
	// ErrKeyConflict is returned by LocalStore when a key would need a file
	// and a directory at the same path ("a" exists and "a/b" is written, or
	// the reverse). S3 has no such conflict.
	ErrKeyConflict = errors.New("objectstore: key conflicts with an existing object or directory")
	// ErrTooLarge is returned by an S3 Writer whose object would need more
	// than 10,000 parts of S3Options.PartSize.
	ErrTooLarge = errors.New("objectstore: object too large")
)
