package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// RewrapOptions say what Rewrap wraps the data keys under.
type RewrapOptions struct {
	// Wrapper returns what wraps the data key of an object of the given
	// envelope version, now wrapped as old, under the target key (the
	// target may keep an object's own wrapping: EMRFS's legacy kms).
	Wrapper func(old cse.WrappedKey, version int) cse.KeyWrapper
	// IsTarget reports whether a stored key is already under the target:
	// its wrapping and materials description, and kmsKeyARN, the KMS key
	// that unwrapped it ("" for local keys).
	IsTarget func(w cse.WrappedKey, kmsKeyARN string) bool
	// Target names the target key for reports.
	Target string
	// DryRun reports what would change and writes nothing.
	DryRun bool
}

// errChanged: the object was replaced while a tool worked on it; it is left
// as the other writer made it.
var errChanged = errors.New("the object changed while this ran: left alone (run again to include it)")

// Rewrap wraps the data key of every encrypted object again under the
// target key, leaving the body untouched (key rotation). In object-metadata
// mode it writes the new envelope with a metadata-replacing self-copy pinned
// to the ETag it read (CopySourceIfMatch), keeping csefs's attributes and
// all other metadata; in instruction-file mode it rewrites the instruction
// file, pinned to the instruction file's ETag, after checking the object's
// ETag. The body's stored bytes are checked unchanged afterwards: by ETag
// where it is an MD5 (single-part uploads), else by authenticating the new
// copy with the data key (GCM). Objects already under the target are
// skipped, so a second run (after an interruption) does only the rest.
func Rewrap(ctx, stop context.Context, o Options, ro RewrapOptions) (Summary, error) {
	return o.run(ctx, stop, func(ctx context.Context, key string, _ int64) Result {
		obj, err := resolve(ctx, o.Store, key)
		if gone(err) {
			return Result{Status: StatusSkipped, Detail: "deleted since listed"}
		}
		if err != nil {
			return failed(err)
		}
		r := Result{Bytes: obj.info.Size}
		if obj.env == nil {
			r.Status, r.Detail = StatusSkipped, "plaintext (csefs encrypt encrypts it)"
			return r
		}
		detail, changed, err := o.rewrapObject(ctx, obj, ro)
		r.Detail = detail
		switch {
		case err != nil:
			r.Status, r.Error = StatusFailed, err.Error()
		case changed:
			r.Status = StatusChanged
		default:
			r.Status = StatusSkipped
		}
		return r
	})
}

// callerMatDesc is a materials description without the entries the
// providers add themselves (the bound content algorithm, the legacy key id,
// the keyring key name): what a new wrap should carry over, such as EMRFS's
// Path and JobflowId.
func callerMatDesc(md map[string]string) map[string]string {
	out := maps.Clone(md)
	if out == nil {
		out = map[string]string{}
	}
	delete(out, cse.ReservedCEKAlgKey)
	delete(out, cse.LegacyKMSKeyIDKey)
	delete(out, cse.KeyNameKey)
	return out
}

func (o *Options) rewrapObject(ctx context.Context, obj *object, ro RewrapOptions) (detail string, changed bool, err error) {
	env := obj.env
	dk, ck, arn, err := o.contentKey(ctx, env)
	if err != nil {
		return "", false, err
	}
	defer cse.Zero(dk)
	defer cse.Zero(ck)
	if ro.IsTarget(env.Key, arn) {
		return "already under " + ro.Target, false, nil
	}
	from := env.Key.WrapAlg
	if arn != "" {
		from += " " + arn
	} else if n := env.Key.MatDesc[cse.KeyNameKey]; n != "" {
		from += " " + n
	}
	w, err := ro.Wrapper(env.Key, env.Version).WrapKey(ctx, dk, cse.KeyRequest{
		CEKAlg: env.Key.CEKAlg, MatDesc: callerMatDesc(env.Key.MatDesc),
		Object: o.URI + obj.info.Key, Key: obj.info.Key,
	})
	if err != nil {
		return "", false, fmt.Errorf("wrap under %s: %w", ro.Target, err)
	}
	ne := *env
	ne.Key = w
	if ne.Version == 1 {
		ne.Version = 2 // V1 stores no wrap algorithm
	}
	if ne.Version == 3 {
		if _, err := metadata.NewEnvelopeV3(ne.MessageID, ne.Commitment, w); err != nil {
			return "", false, fmt.Errorf("wrap under %s: %w", ro.Target, err)
		}
	}
	detail = fmt.Sprintf("%s -> %s %s", from, w.WrapAlg, ro.Target)
	if ro.DryRun {
		return "would rewrap: " + detail, true, nil
	}
	if obj.instr {
		err = o.rewriteInstruction(ctx, obj, &ne)
	} else {
		err = o.rewriteMetadata(ctx, obj, &ne, ck)
	}
	if err != nil {
		return detail, false, err
	}
	return detail, true, nil
}

// rewriteMetadata replaces obj's envelope by ne with a self-copy pinned to
// the ETag read, and checks the body kept its bytes.
func (o *Options) rewriteMetadata(ctx context.Context, obj *object, ne *metadata.Envelope, ck []byte) error {
	meta := withoutEnvelope(obj.info.Metadata)
	maps.Copy(meta, ne.Metadata())
	if err := metadata.CheckSize(meta); err != nil {
		return fmt.Errorf("new envelope does not fit in the object's metadata: %w", err)
	}
	info, err := o.Store.Copy(ctx, obj.info.Key, obj.info.Key, objectstore.CopyOptions{Metadata: meta, IfMatch: obj.info.ETag})
	if errors.Is(err, objectstore.ErrPreconditionFailed) {
		return errChanged
	}
	if err != nil {
		return fmt.Errorf("self-copy with the new envelope: %w", err)
	}
	if info.Size != obj.info.Size {
		return fmt.Errorf("the copy has %d bytes, the original %d: %w", info.Size, obj.info.Size, cse.ErrAuthentication)
	}
	old := obj.info.ETag
	if singlePartETag(old) {
		if !strings.EqualFold(strings.Trim(info.ETag, `"`), strings.Trim(old, `"`)) {
			return fmt.Errorf("the copy's ETag %s differs from the original's %s: body bytes changed", info.ETag, old)
		}
		return nil
	}
	// A multipart ETag is not the body's MD5 and a copy gets a new one:
	// authenticate the copy instead (GCM; CBC has no tag to check).
	if ne.Key.CEKAlg == cse.CEKAlgCBC {
		return nil
	}
	copied := &object{info: info, env: ne}
	copied.info.Metadata = meta
	r, err := o.decryptReader(ctx, copied, ck)
	if err != nil {
		if errors.Is(err, objectstore.ErrPreconditionFailed) {
			return nil // replaced since: not ours to check
		}
		return fmt.Errorf("checking the copy: %w", err)
	}
	defer r.Close()
	if _, err := drain(r); err != nil {
		return fmt.Errorf("the copy does not authenticate: %w", err)
	}
	return nil
}

// singlePartETag reports whether an ETag is a plain MD5 (32 hex digits),
// which a body keeps across copies.
func singlePartETag(etag string) bool {
	e := strings.Trim(etag, `"`)
	if len(e) != 32 {
		return false
	}
	for _, c := range e {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// rewriteInstruction replaces obj's instruction file by ne's, pinned to the
// instruction file's ETag, if the object itself is still the version read.
func (o *Options) rewriteInstruction(ctx context.Context, obj *object, ne *metadata.Envelope) error {
	if err := o.unchanged(ctx, obj); err != nil {
		return err
	}
	cc, ok := o.Store.(objectstore.ConditionalCreator)
	if !ok {
		return errors.New("the store cannot write conditionally")
	}
	w, err := cc.CreateIfMatch(ctx, metadata.InstructionKey(obj.info.Key), metadata.InstructionMetadata(), obj.instrETag)
	if err != nil {
		return err
	}
	if _, err := w.Write(ne.Instruction()); err != nil {
		w.Abort(ctx)
		return err
	}
	if _, err := w.Commit(ctx); err != nil {
		if errors.Is(err, objectstore.ErrPreconditionFailed) {
			return errChanged
		}
		return fmt.Errorf("instruction file: %w", err)
	}
	// A writer that replaced the object meanwhile writes its own
	// instruction file after it (as csefs and the S3EC clients do).
	return o.unchanged(ctx, obj)
}

// unchanged checks that obj still has the ETag it was read with.
func (o *Options) unchanged(ctx context.Context, obj *object) error {
	now, err := o.Store.Head(ctx, obj.info.Key)
	if errors.Is(err, objectstore.ErrNotFound) {
		return errChanged
	}
	if err != nil {
		return err
	}
	if !strings.EqualFold(strings.Trim(now.ETag, `"`), strings.Trim(obj.info.ETag, `"`)) {
		return errChanged
	}
	return nil
}
