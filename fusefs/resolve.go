package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// kind is how an object's body is stored.
type kind int

const (
	kindPlain     kind = iota // no envelope: passed through
	kindEncrypted             // an envelope: object.content says how
)

// object is what a HEAD (plus, where needed, the instruction file) tells
// about one object.
type object struct {
	key       string
	info      objectstore.Info
	kind      kind
	env       *metadata.Envelope // nil for plaintext
	content   cse.Content        // the encrypted body (kindEncrypted)
	plainSize int64
	attrs     metadata.Attrs
	instr     bool   // the envelope came from an instruction file
	instrETag string // that instruction file's ETag, which rename's copy of it is pinned to
	// listed: made from a LIST entry (AttrsFromList), for attributes only;
	// kind, env and attrs are unknown.
	listed bool
}

// resolve finds an object's envelope (metadata, else instruction file) and
// plaintext size.
func (f *FS) resolve(ctx context.Context, info *objectstore.Info) (*object, error) {
	o := &object{key: info.Key, info: *info, attrs: metadata.ParseAttrs(info.Metadata)}
	env, err := metadata.Detect(info.Metadata)
	switch {
	case err == nil:
	case errors.Is(err, metadata.ErrNoEnvelope):
		env, o.instrETag, err = f.instruction(ctx, info)
		if err != nil {
			return nil, err
		}
		o.instr = env != nil
	default:
		return nil, fmt.Errorf("envelope of %s: %w", info.Key, err)
	}
	if env == nil {
		if f.opt.DenyPlaintext {
			return nil, errPlaintextDenied
		}
		o.kind = kindPlain
		o.plainSize = info.Size
		return o, nil
	}
	o.env, o.kind = env, kindEncrypted
	if o.content, err = env.Content(info.Size); err != nil {
		return nil, fmt.Errorf("object %s: %w", info.Key, err)
	}
	if n, ok := o.content.PlainSize(); ok {
		o.plainSize = n
	} else if o.plainSize, err = f.sizeFromTail(ctx, o); err != nil {
		return nil, err
	}
	return o, nil
}

// authenticated reports whether reading o's whole body authenticates it.
func (o *object) authenticated() bool {
	return o.kind == kindEncrypted && o.content.Authenticated()
}

// instruction loads key's instruction file and its ETag. It returns nil
// when there is none and the object does not claim one: the object is
// plaintext.
func (f *FS) instruction(ctx context.Context, info *objectstore.Info) (*metadata.Envelope, string, error) {
	if metadata.IsInstructionKey(info.Key) {
		return nil, "", nil
	}
	claims := info.Metadata[metadata.AttrEnvelope] == metadata.EnvelopeInstructionFile ||
		metadata.ClaimsInstruction(info.Metadata)
	rc, iinfo, err := f.store.Get(ctx, metadata.InstructionKey(info.Key), objectstore.GetOptions{Length: -1})
	if errors.Is(err, objectstore.ErrNotFound) {
		if claims {
			return nil, "", fmt.Errorf("object %s: %w", info.Key, metadata.ErrNoInstructionFile)
		}
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	if err != nil {
		return nil, "", err
	}
	env, err := metadata.ParseInstructionWith(body, info.Metadata)
	if err != nil {
		return nil, "", fmt.Errorf("instruction file of %s: %w", info.Key, err)
	}
	return env, iinfo.ETag, nil
}

// commitmentPolicy is the commitment policy for the object key: its zone's
// (Options.CommitmentPolicyFor), else the mount's.
func (f *FS) commitmentPolicy(key string) cse.CommitmentPolicy {
	if f.opt.CommitmentPolicyFor != nil {
		return f.opt.CommitmentPolicyFor(f.opt.KeyPrefix + key)
	}
	return f.opt.CommitmentPolicy
}

// errCommitmentPolicy: the object has no key commitment and the mount's
// commitment policy requires it for reading (EACCES).
var errCommitmentPolicy = errors.New("fusefs: the commitment policy refuses objects without key commitment")

// dataKey returns the key that decrypts an object's content: the unwrapped
// data key, or for a V3 object the content key derived from it once the
// stored key commitment has verified (cse.Params.ContentKey), so that no byte
// is decrypted under an uncommitted key. An object the commitment policy
// refuses gets errCommitmentPolicy, with a log line, before any key is
// unwrapped. The caller zeroes the key.
func (f *FS) dataKey(ctx context.Context, o *object) ([]byte, error) {
	if f.opt.Provider == nil {
		return nil, errNoProvider
	}
	if p := f.commitmentPolicy(o.key); !p.AllowsRead(o.env.Key.CEKAlg) {
		f.log.Warn("object refused: it has no key commitment", "object", f.uri(o.key), "content", o.env.Key.CEKAlg, "policy", p.String())
		return nil, fmt.Errorf("object %s (%s) under %s: %w", o.key, o.env.Key.CEKAlg, p, errCommitmentPolicy)
	}
	// Providers that decide per object (the exec protocol) learn which.
	w := o.env.Key
	w.Object = f.uri(o.key)
	k, err := f.opt.Provider.DecryptKey(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("data key of %s (wrap %q): %w", o.key, o.env.Key.WrapAlg, err)
	}
	defer cse.Zero(k)
	ck, err := o.content.Params().ContentKey(k)
	if err != nil {
		return nil, fmt.Errorf("key commitment of %s: %w", o.key, err)
	}
	return ck, nil
}

// sizeFromTail derives the plaintext size of an object whose stored size
// does not fix it (CBC without a recorded length) from the end of its body.
func (f *FS) sizeFromTail(ctx context.Context, o *object) (int64, error) {
	key, err := f.dataKey(ctx, o)
	if err != nil {
		return 0, err
	}
	defer cse.Zero(key)
	off, n := o.content.SizeTail()
	rc, _, err := f.store.Get(ctx, o.key, objectstore.GetOptions{Offset: off, Length: n, IfMatch: o.info.ETag})
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	tail, err := io.ReadAll(rc)
	if err != nil {
		return 0, err
	}
	size, err := o.content.PlainSizeFromTail(key, tail)
	if err != nil {
		return 0, fmt.Errorf("object %s: %w", o.key, err)
	}
	return size, nil
}
