// Package fleet holds csefs's bucket-wide tools: inspect, verify, rewrap
// (key rotation) and encrypt (plaintext and legacy objects to GCM in
// place). They work on the object store directly, with the key providers a
// mount would use, never through FUSE.
//
// Every tool walks one object or a prefix (Options.Path), works on objects
// in parallel (Options.Concurrency) in bounded memory (bodies are streamed),
// reports each object it changes or fails on (Report), shows progress
// (Progress) and ends with a Summary. Stopping the context given as stop
// makes a run take no new objects and return once those in flight are done.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// Options are what every tool needs.
type Options struct {
	Store objectstore.Store
	// URI is the URI of the store's root, "s3://bucket/" or "file:///dir/";
	// an object's URI is URI + key.
	URI string
	// Path is the key or prefix given: an object's key selects just it,
	// anything else is a prefix ("" for all). Keys are relative to Store.
	Path string
	// Unwrap unwraps a data key and, for KMS wraps, names the KMS key that
	// did it (its ARN). nil: no key access (inspect without --unwrap).
	Unwrap func(ctx context.Context, w cse.WrappedKey) (key []byte, kmsKeyARN string, err error)
	// Policy is the commitment policy (reads: whether V2 is accepted;
	// encrypt: V2 or V3).
	Policy cse.CommitmentPolicy
	// Concurrency is how many objects are worked on at once (default 8).
	Concurrency int
	// Report receives one line (text or JSON) per object of note; Progress
	// the progress display and the summary (see Progress).
	Report   *Reporter
	Progress *Progress
}

// Status is what a tool did with one object.
type Status string

const (
	StatusOK      Status = "ok"      // checked, nothing to do
	StatusChanged Status = "changed" // rewritten (or, with --dry-run, would be)
	StatusSkipped Status = "skipped" // not the tool's business (plaintext for verify, already done)
	StatusFailed  Status = "failed"
)

// Result is the outcome for one object.
type Result struct {
	Key    string `json:"key"`
	URI    string `json:"uri"`
	Status Status `json:"status"`
	// Detail says what was done or why it was skipped.
	Detail string `json:"detail,omitempty"`
	// Error is the cause of a failure.
	Error string `json:"error,omitempty"`
	// Bytes is the object's stored size.
	Bytes int64 `json:"bytes"`
}

// Summary totals a run.
type Summary struct {
	Checked, Changed, Skipped, Failed int64
	Bytes                             int64
	Elapsed                           time.Duration
	// Interrupted: the run stopped before it had taken every object.
	Interrupted bool
}

// ErrFailed is returned by a tool when at least one object failed.
var ErrFailed = errors.New("fleet: some objects failed")

// ErrNothing: the target names no object and no prefix with objects (a
// typo, most likely); the whole bucket or directory may be empty.
var ErrNothing = errors.New("no such object, and no objects under that prefix")

// ErrInterrupted is returned when a run was stopped before the end.
var ErrInterrupted = errors.New("fleet: interrupted")

// object is one object with its envelope resolved.
type object struct {
	info  *objectstore.Info
	env   *metadata.Envelope // nil: plaintext
	instr bool               // the envelope is in the instruction file
	// instrETag is the instruction file's ETag (instr only).
	instrETag string
	attrs     metadata.Attrs
}

// skipKey reports whether a listed key is not an object the tools work on:
// instruction files (they go with their object), directory markers and
// csefs's own bookkeeping.
func skipKey(key string) bool {
	return metadata.IsInstructionKey(key) || strings.HasSuffix(key, "/") ||
		strings.HasPrefix(key, ".csefs-") || strings.Contains(key, "/.csefs-")
}

// resolve reads an object's metadata and finds its envelope: in the
// metadata, else in an instruction file.
func resolve(ctx context.Context, store objectstore.Store, key string) (*object, error) {
	info, err := store.Head(ctx, key)
	if err != nil {
		return nil, err
	}
	return resolveInfo(ctx, store, info)
}

func resolveInfo(ctx context.Context, store objectstore.Store, info *objectstore.Info) (*object, error) {
	o := &object{info: info, attrs: metadata.ParseAttrs(info.Metadata)}
	env, err := metadata.Detect(info.Metadata)
	switch {
	case err == nil:
		o.env = env
		return o, nil
	case !errors.Is(err, metadata.ErrNoEnvelope):
		return o, fmt.Errorf("envelope: %w", err)
	}
	claims := o.attrs.InstructionFile || metadata.ClaimsInstruction(info.Metadata)
	rc, iinfo, err := store.Get(ctx, metadata.InstructionKey(info.Key), objectstore.GetOptions{Length: -1})
	if errors.Is(err, objectstore.ErrNotFound) {
		if claims {
			return o, metadata.ErrNoInstructionFile
		}
		return o, nil // plaintext
	}
	if err != nil {
		return o, fmt.Errorf("instruction file: %w", err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	if err != nil {
		return o, fmt.Errorf("instruction file: %w", err)
	}
	if o.env, err = metadata.ParseInstructionWith(body, info.Metadata); err != nil {
		return o, fmt.Errorf("instruction file: %w", err)
	}
	o.instr, o.instrETag = true, iinfo.ETag
	return o, nil
}

// format names an envelope's format: "V2 AES-GCM", "V3 AES-GCM committing",
// "V1 AES-CBC" ...
func format(env *metadata.Envelope) string {
	if env == nil {
		return "plaintext"
	}
	s := fmt.Sprintf("V%d ", env.Version)
	switch env.Key.CEKAlg {
	case cse.CEKAlgGCM:
		s += "AES-GCM"
	case cse.CEKAlgGCMCommit:
		s += "AES-GCM key-committing (suite 115)"
	case cse.CEKAlgCBC:
		s += "AES-CBC (unauthenticated)"
	default:
		s += env.Key.CEKAlg
	}
	return s
}

// contentKey unwraps env's data key and returns the key that decrypts the
// content (for V3, after checking the key commitment), plus the KMS key ARN
// Unwrap named. The caller zeroes the key.
func (o *Options) contentKey(ctx context.Context, env *metadata.Envelope) (dataKey, contentKey []byte, arn string, err error) {
	if o.Unwrap == nil {
		return nil, nil, "", errors.New("fleet: no key provider configured")
	}
	if !o.Policy.AllowsRead(env.Key.CEKAlg) {
		return nil, nil, "", fmt.Errorf("the commitment policy %s refuses objects without key commitment", o.Policy)
	}
	dataKey, arn, err = o.Unwrap(ctx, env.Key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("unwrap data key: %w", err)
	}
	ck, err := env.Params().ContentKey(dataKey)
	if err != nil {
		cse.Zero(dataKey)
		return nil, nil, "", fmt.Errorf("key commitment: %w", err)
	}
	return dataKey, ck, arn, nil
}

// decryptReader opens o's plaintext, pinned to the ETag resolved: a
// reader that reaches EOF without error has authenticated the whole object
// (GCM tag, or CBC padding and recorded length).
func (o *Options) decryptReader(ctx context.Context, obj *object, contentKey []byte) (io.ReadCloser, error) {
	rc, _, err := o.Store.Get(ctx, obj.info.Key, objectstore.GetOptions{Length: -1, IfMatch: obj.info.ETag})
	if err != nil {
		return nil, err
	}
	c, err := obj.env.Content(obj.info.Size)
	if err != nil {
		rc.Close()
		return nil, err
	}
	r, err := c.NewReader(rc, contentKey)
	if err != nil {
		rc.Close()
		return nil, err
	}
	if obj.env.Key.CEKAlg == cse.CEKAlgCBC && obj.env.PlainLen >= 0 {
		r = &lengthCheck{r: r, want: obj.env.PlainLen}
	}
	return struct {
		io.Reader
		io.Closer
	}{r, rc}, nil
}

// lengthCheck fails at EOF unless exactly want bytes were read.
type lengthCheck struct {
	r    io.Reader
	n    int64
	want int64
}

func (l *lengthCheck) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if err == io.EOF && l.n != l.want {
		return n, fmt.Errorf("plaintext is %d bytes but x-amz-unencrypted-content-length says %d: %w", l.n, l.want, cse.ErrAuthentication)
	}
	return n, err
}

// copyBufs bounds the memory of body streaming: one buffer per worker.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// drain reads r to the end in a pooled buffer and returns the byte count.
func drain(r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, *bp)
}

// work is one tool's job on one key.
type work func(ctx context.Context, key string, size int64) Result

// run lists the target and applies fn to every object, Concurrency at a
// time. Stopping stop ends the dispatch of new objects; ctx carries the
// objects in flight (cancelling it abandons them: each one's write is
// conditional and atomic, so an object is left old or new).
func (o *Options) run(ctx, stop context.Context, fn work) (Summary, error) {
	start := time.Now()
	n := o.Concurrency
	if n <= 0 {
		n = 8
	}
	type job struct {
		key  string
		size int64
	}
	jobs := make(chan job)
	results := make(chan Result, n)
	var listErr error
	interrupted := false
	go func() {
		defer close(jobs)
		listErr = o.walk(ctx, func(key string, size int64) error {
			if err := stop.Err(); err != nil {
				interrupted = true // checked first: select chooses at random
				return err
			}
			select {
			case jobs <- job{key, size}:
				return nil
			case <-stop.Done():
				interrupted = true
				return stop.Err()
			}
		})
	}()
	if o.Report != nil {
		o.Report.progress = o.Progress
	}
	if o.Progress != nil {
		o.Progress.begin()
		go o.Progress.count(ctx, o)
	}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r := fn(ctx, j.key, j.size)
				r.Key, r.URI = j.key, o.URI+j.key
				if r.Bytes == 0 {
					r.Bytes = j.size
				}
				results <- r
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()
	var sum Summary
	for r := range results {
		sum.Checked++
		sum.Bytes += r.Bytes
		switch r.Status {
		case StatusChanged:
			sum.Changed++
		case StatusSkipped:
			sum.Skipped++
		case StatusFailed:
			sum.Failed++
		}
		o.Report.Result(r)
		o.Progress.Add(r)
	}
	sum.Elapsed = time.Since(start)
	sum.Interrupted = interrupted
	o.Progress.Finish(sum)
	switch {
	case interrupted:
		return sum, ErrInterrupted
	case listErr != nil:
		return sum, fmt.Errorf("listing %s%s: %w", o.URI, o.Path, listErr)
	case sum.Checked == 0 && o.Path != "":
		return sum, fmt.Errorf("%s%s: %w", o.URI, o.Path, ErrNothing)
	case sum.Failed > 0:
		return sum, ErrFailed
	}
	return sum, nil
}

// walk calls fn for the object Path names, or for every object under the
// prefix Path.
func (o *Options) walk(ctx context.Context, fn func(key string, size int64) error) error {
	if o.Path != "" && !strings.HasSuffix(o.Path, "/") {
		info, err := o.Store.Head(ctx, o.Path)
		if err == nil {
			return fn(info.Key, info.Size)
		}
		if !errors.Is(err, objectstore.ErrNotFound) {
			return err
		}
	}
	prefix := o.Path
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return o.Store.List(ctx, prefix, "", func(p objectstore.ListPage) error {
		for _, obj := range p.Objects {
			if skipKey(obj.Key) {
				continue
			}
			if err := fn(obj.Key, obj.Size); err != nil {
				return err
			}
		}
		return nil
	})
}

// failed is a failed Result.
func failed(err error) Result { return Result{Status: StatusFailed, Error: err.Error()} }
