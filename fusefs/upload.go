package fusefs

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"syscall"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// upload writes one new version of an object: plaintext goes through the GCM
// encryptor (a fresh data key) straight into the store's streaming upload.
// Nothing is visible until commit.
type upload struct {
	fsys    *FS
	key     string
	attrs   metadata.Attrs
	env     *metadata.Envelope // nil without encryption
	instr   bool               // the envelope goes into an instruction file
	up      objectstore.Writer
	enc     io.WriteCloser // the encryptor, or up itself for plaintext
	written int64
}

// nopCloser turns an objectstore.Writer into the plaintext "encryptor".
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func (f *FS) beginUpload(ctx context.Context, key string, attrs metadata.Attrs) (*upload, error) {
	u := &upload{fsys: f, key: key, attrs: attrs}
	meta := map[string]string{}
	var dataKey []byte
	if f.opt.Provider != nil {
		md := maps.Clone(f.opt.MatDesc)
		if f.opt.MatDescFor != nil {
			if md == nil {
				md = map[string]string{}
			}
			maps.Copy(md, f.opt.MatDescFor(f.uri(key)))
		}
		k, wrapped, err := f.opt.Provider.GenerateKey(ctx, cse.KeyRequest{
			CEKAlg:  f.commitmentPolicy(key).WriteCEKAlg(),
			MatDesc: md,
			Object:  f.uri(key),
			Key:     f.opt.KeyPrefix + key,
		})
		if err != nil {
			return nil, fmt.Errorf("new data key: %w", err)
		}
		defer cse.Zero(k)
		if dataKey, err = newEnvelope(u, k, wrapped); err != nil {
			return nil, err
		}
		defer cse.Zero(dataKey)
		u.instr = f.opt.StorageMode == InstructionFile
		if !u.instr {
			maps.Copy(meta, u.env.Metadata())
			if metadata.CheckSize(meta) != nil {
				// Too big for S3's 2 KB of user metadata: this object's
				// envelope goes into an instruction file instead.
				clear(meta)
				u.instr = true
			}
		}
		if u.instr {
			// V3 keeps x-amz-c, x-amz-d and x-amz-i on the object.
			maps.Copy(meta, u.env.ObjectMetadata())
		}
		u.attrs.InstructionFile = u.instr
	}
	u.attrs.Apply(meta)
	if u.env != nil && (!u.instr || len(u.env.ObjectMetadata()) > 0) {
		// The object's metadata holds this write's fresh IV and wrapped
		// key (or V3 message ID): it can prove a commit whose reply was
		// lost. A plaintext object's attributes cannot.
		ctx = objectstore.WithUniqueMetadata(ctx)
	}
	up, err := f.store.Create(ctx, key, meta)
	if err != nil {
		return nil, err
	}
	u.up = up
	if dataKey != nil {
		enc, err := u.env.Params().NewEncryptWriter(up, dataKey)
		if err != nil {
			up.Abort(context.WithoutCancel(ctx))
			return nil, err
		}
		u.enc = enc
	} else {
		u.enc = nopCloser{up}
	}
	return u, nil
}

// newEnvelope sets u.env for the data key k and its wrapped form (V3 with
// a fresh message ID and the key commitment, else V2 with a fresh IV), and
// returns the content key (the caller zeroes it).
func newEnvelope(u *upload, k []byte, wrapped cse.WrappedKey) (contentKey []byte, err error) {
	p, ck, err := cse.NewParams(wrapped.CEKAlg, k, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new object %s: %w", u.key, err)
	}
	if u.env, err = metadata.NewEnvelopeFor(p, wrapped); err != nil {
		cse.Zero(ck)
		return nil, fmt.Errorf("new object %s: %w", u.key, err)
	}
	return ck, nil
}

func (u *upload) Write(p []byte) (int, error) {
	n, err := u.enc.Write(p)
	u.written += int64(n)
	return n, err
}

// commit finishes the upload and returns the new object as a reader would
// resolve it.
func (u *upload) commit(ctx context.Context) (*object, error) {
	f := u.fsys
	if err := u.enc.Close(); err != nil {
		return nil, err
	}
	info, err := u.up.Commit(ctx)
	if err != nil {
		return nil, err
	}
	if u.instr {
		// The object goes first and its instruction file second: a reader
		// that sees the object early finds the marker and fails with EIO
		// rather than reading ciphertext as plaintext.
		if _, err := f.store.Put(ctx, metadata.InstructionKey(u.key), u.env.Instruction(), metadata.InstructionMetadata()); err != nil {
			// Without its envelope the object is unreadable: take it away
			// rather than leave a broken object visible.
			if derr := f.store.Delete(context.WithoutCancel(ctx), u.key); derr != nil {
				f.log.Error("could not remove object after its instruction file failed", "object", f.uri(u.key), "cause", derr.Error())
			}
			return nil, fmt.Errorf("instruction file: %w", err)
		}
	}
	o := &object{key: u.key, info: *info, plainSize: u.written, env: u.env, instr: u.instr, attrs: u.attrs}
	if u.env != nil {
		o.kind = kindEncrypted
		if o.content, err = u.env.Content(info.Size); err != nil {
			// Cannot happen with a store that reports what it stored.
			return nil, fmt.Errorf("object %s stored, but as %d bytes: %w", u.key, info.Size, err)
		}
	}
	if o.info.LastModified.IsZero() {
		// The store did not say (S3's PUT and multipart completion do
		// not); its HEAD will give a whole second (HTTP dates have no
		// fraction), so stat shows the same mtime before and after the
		// cached result expires.
		o.info.LastModified = time.Now().Truncate(time.Second)
	}
	f.putStat(u.key, o)
	return o, nil
}

func (u *upload) abort(ctx context.Context) {
	if err := u.up.Abort(context.WithoutCancel(ctx)); err != nil {
		u.fsys.log.Warn("abort of failed upload failed", "object", u.fsys.uri(u.key), "cause", err.Error())
	}
}

// fileAttrs are the csefs attributes a new version of a file carries.
func fileAttrs(mode uint32) metadata.Attrs {
	return metadata.Attrs{Mode: syscall.S_IFREG | mode&0o7777, HasMode: true}
}
