package fusefs

import (
	"bytes"
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
	var dataKey, aad []byte
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
		if dataKey, aad, err = newEnvelope(u, k, wrapped); err != nil {
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
		enc, err := cse.NewEncryptWriterAAD(up, dataKey, u.env.IV, aad)
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

// newEnvelope sets u.env for the data key k and its wrapped form, and
// returns the content key (a copy of k for V2, the HKDF-derived key for V3;
// the caller zeroes it) and the content cipher's additional data. A V3
// envelope gets a fresh message ID and the key commitment.
func newEnvelope(u *upload, k []byte, wrapped cse.WrappedKey) (contentKey, aad []byte, err error) {
	if wrapped.CEKAlg != cse.CEKAlgGCMCommit {
		iv := make([]byte, cse.GCMIVSize)
		if _, err := rand.Read(iv); err != nil {
			return nil, nil, err
		}
		u.env = metadata.NewEnvelope(iv, wrapped, -1)
		return bytes.Clone(k), nil, nil
	}
	id, err := cse.NewMessageID(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ck, commit, err := cse.CommitKeys(k, id)
	if err != nil {
		return nil, nil, err
	}
	if u.env, err = metadata.NewEnvelopeV3(id, commit, wrapped); err != nil {
		cse.Zero(ck)
		return nil, nil, fmt.Errorf("new object %s: %w", u.key, err)
	}
	return ck, cse.CommitAAD(), nil
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
		o.kind = kindGCM
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
