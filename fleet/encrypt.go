package fleet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// EncryptOptions say how Encrypt encrypts.
type EncryptOptions struct {
	// Provider makes the data keys (the mount's provider graph: zones,
	// keyring rules, the default key).
	Provider cse.Provider
	// MatDesc and MatDescFor give the caller materials description, as for
	// a mount (fusefs.Options).
	MatDesc    map[string]string
	MatDescFor func(uri string) map[string]string
	// UpgradeLegacy also re-encrypts CBC and V1 objects as GCM.
	UpgradeLegacy bool
	DryRun        bool
}

// Encrypt encrypts in place every object that has no envelope (and, with
// UpgradeLegacy, every CBC or V1 object) as a GCM object in object-metadata
// mode, V2 or V3 as Options.Policy says. It streams each body through the
// cipher into a new upload whose completion is conditional on the object's
// ETag being the one read (If-Match on PutObject or
// CompleteMultipartUpload), so an object another client replaces meanwhile
// is left as that client wrote it (and reported). User metadata and csefs's
// attributes are kept. Objects already encrypted are skipped, so a second
// run does only the rest.
func Encrypt(ctx, stop context.Context, o Options, eo EncryptOptions) (Summary, error) {
	cc, ok := o.Store.(objectstore.ConditionalCreator)
	if !ok {
		return Summary{}, errors.New("fleet: encrypt needs a store with conditional writes")
	}
	return o.run(ctx, stop, func(ctx context.Context, key string, _ int64) Result {
		obj, err := resolve(ctx, o.Store, key)
		if gone(err) {
			return Result{Status: StatusSkipped, Detail: "deleted since listed"}
		}
		if err != nil {
			return failed(err)
		}
		r := Result{Bytes: obj.info.Size}
		if obj.env != nil {
			legacy := obj.env.Key.CEKAlg == cse.CEKAlgCBC || obj.env.Version == 1
			if !eo.UpgradeLegacy || !legacy {
				r.Status, r.Detail = StatusSkipped, "already encrypted ("+format(obj.env)+")"
				return r
			}
		}
		if obj.attrs.HasMode {
			switch obj.attrs.Mode & 0o170000 {
			case 0, 0o100000, 0o120000: // regular files and symlinks
			default:
				r.Status, r.Detail = StatusSkipped, "special file (no content)"
				return r
			}
		}
		to := format(&metadata.Envelope{Version: 2, Key: cse.WrappedKey{CEKAlg: cse.CEKAlgGCM}})
		if o.Policy.WriteCEKAlg() == cse.CEKAlgGCMCommit {
			to = format(&metadata.Envelope{Version: 3, Key: cse.WrappedKey{CEKAlg: cse.CEKAlgGCMCommit}})
		}
		r.Detail = format(obj.env) + " -> " + to
		if eo.DryRun {
			r.Status, r.Detail = StatusChanged, "would encrypt: "+r.Detail
			return r
		}
		if err := o.encryptObject(ctx, cc, obj, eo); err != nil {
			r.Status, r.Error = StatusFailed, err.Error()
			return r
		}
		r.Status = StatusChanged
		return r
	})
}

func (o *Options) encryptObject(ctx context.Context, cc objectstore.ConditionalCreator, obj *object, eo EncryptOptions) error {
	key := obj.info.Key
	uri := o.URI + key
	md := maps.Clone(eo.MatDesc)
	if eo.MatDescFor != nil {
		if md == nil {
			md = map[string]string{}
		}
		maps.Copy(md, eo.MatDescFor(uri))
	}
	dk, wrapped, err := eo.Provider.GenerateKey(ctx, cse.KeyRequest{
		CEKAlg: o.Policy.WriteCEKAlg(), MatDesc: md, Object: uri, Key: key,
	})
	if err != nil {
		return fmt.Errorf("new data key: %w", err)
	}
	defer cse.Zero(dk)
	env, ck, err := newEnvelope(dk, wrapped)
	if err != nil {
		return err
	}
	defer cse.Zero(ck)

	// The source: the plaintext body, or the legacy object decrypted.
	var src io.ReadCloser
	if obj.env == nil {
		env.PlainLen = obj.info.Size
		src, _, err = o.Store.Get(ctx, key, objectstore.GetOptions{Length: -1, IfMatch: obj.info.ETag})
	} else {
		if n, ok := obj.env.PlainSize(obj.info.Size); ok {
			env.PlainLen = n
		}
		odk, ock, _, kerr := o.contentKey(ctx, obj.env)
		if kerr != nil {
			return kerr
		}
		cse.Zero(odk)
		src, err = o.decryptReader(ctx, obj, ock)
		cse.Zero(ock)
	}
	if errors.Is(err, objectstore.ErrPreconditionFailed) {
		return errChanged
	}
	if err != nil {
		return err
	}
	defer src.Close()
	if env.Version == 3 {
		env.PlainLen = -1 // as csefs and the S3EC clients write V3
	}

	meta := withoutEnvelope(obj.info.Metadata)
	for k := range meta {
		if k == metadata.AttrEnvelope {
			delete(meta, k) // the envelope now lives in the metadata
		}
	}
	maps.Copy(meta, env.Metadata())
	if err := metadata.CheckSize(meta); err != nil {
		return fmt.Errorf("the envelope does not fit in the object's metadata: %w", err)
	}
	up, err := cc.CreateIfMatch(ctx, key, meta, obj.info.ETag)
	if err != nil {
		return err
	}
	enc, err := env.Params().NewEncryptWriter(up, ck)
	if err != nil {
		up.Abort(context.WithoutCancel(ctx))
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(enc, struct{ io.Reader }{src}, *bp)
	copyBufs.Put(bp)
	if err == nil {
		err = enc.Close()
	}
	if err == nil {
		_, err = up.Commit(ctx)
	} else {
		up.Abort(context.WithoutCancel(ctx))
	}
	if errors.Is(err, objectstore.ErrPreconditionFailed) {
		return errChanged
	}
	if err != nil {
		return err
	}
	if obj.instr {
		// The envelope is in the metadata now; the old instruction file
		// described the legacy body.
		if err := o.Store.Delete(ctx, metadata.InstructionKey(key)); err != nil {
			return fmt.Errorf("encrypted, but the old instruction file stays: %w", err)
		}
	}
	return nil
}

// newEnvelope makes the envelope of a new object for data key dk, as a
// mount's upload does (V3: a fresh message ID and the key commitment; V2 a
// fresh IV), and returns it with the content key (the caller zeroes it).
func newEnvelope(dk []byte, wrapped cse.WrappedKey) (*metadata.Envelope, []byte, error) {
	p, ck, err := cse.NewParams(wrapped.CEKAlg, dk, rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	env, err := metadata.NewEnvelopeFor(p, wrapped)
	if err != nil {
		cse.Zero(ck)
		return nil, nil, err
	}
	return env, ck, nil
}
