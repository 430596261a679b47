package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/csefs/csefs/objectstore"
)

// etagPin is the ETag an open handle's GETs are pinned to.
//
// A copy of an object onto itself that changes only its metadata (chmod,
// utimes, a deferred attribute store of this mount, lazyattr.go) gives it
// a new ETag but leaves the body as it was. A reader pinned to the old
// ETag would fail its next GET (412, ESTALE) though nothing it reads has
// changed: the diff after an rsync would fail, reading a file whose utimes
// landed a moment after the open. So a 412 makes the pin look once
// (renew): if the object now under the key has the same body (same
// envelope and size: a new write has a fresh data key and IV), the handle
// goes on with the new ETag; otherwise the read fails, as before.
type etagPin struct {
	mu    sync.Mutex
	etag  string
	renew func(ctx context.Context, old string) (string, error) // nil: never renewed
}

func fixedPin(etag string) *etagPin { return &etagPin{etag: etag} }

func (p *etagPin) get() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.etag
}

// do runs fn with the pinned ETag and, if it fails with a precondition
// failure, once more with the renewed one.
func (p *etagPin) do(ctx context.Context, fn func(etag string) error) error {
	old := p.get()
	err := fn(old)
	if !errors.Is(err, objectstore.ErrPreconditionFailed) || p.renew == nil {
		return err
	}
	cur, rerr := p.refresh(ctx, old)
	if rerr != nil {
		return rerr
	}
	return fn(cur)
}

// refresh renews the pin if it is still old (parallel ranges fail at
// once; one of them looks).
func (p *etagPin) refresh(ctx context.Context, old string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.etag != old {
		return p.etag, nil
	}
	cur, err := p.renew(ctx, old)
	if err != nil {
		return "", err
	}
	p.etag = cur
	return cur, nil
}

// pinFor returns the pin of a handle reading o.
func (f *FS) pinFor(o *object) *etagPin {
	return &etagPin{etag: o.info.ETag, renew: func(ctx context.Context, old string) (string, error) {
		f.putStat(o.key, nil)
		n, err := f.head(ctx, o.key)
		if err != nil {
			return "", err
		}
		if n.info.ETag == old || !sameBody(o, n) {
			return "", fmt.Errorf("object %s replaced since open: %w", o.key, objectstore.ErrPreconditionFailed)
		}
		f.log.Debug("object's metadata changed under an open handle; reading on", "object", f.uri(o.key))
		return n.info.ETag, nil
	}}
}

// sameBody tells whether n, a later version of o's key, has o's body: an
// encrypted object with the same size and envelope (data key, IV,
// algorithms). Plaintext objects are never taken as the same.
func sameBody(o, n *object) bool {
	a, b := o.env, n.env
	if a == nil || b == nil || o.kind != n.kind || o.info.Size != n.info.Size || o.plainSize != n.plainSize {
		return false
	}
	return a.Version == b.Version && bytes.Equal(a.IV, b.IV) && a.TagLenBits == b.TagLenBits && a.PlainLen == b.PlainLen &&
		bytes.Equal(a.Key.Blob, b.Key.Blob) && a.Key.WrapAlg == b.Key.WrapAlg && a.Key.CEKAlg == b.Key.CEKAlg &&
		maps.Equal(a.Key.MatDesc, b.Key.MatDesc) &&
		bytes.Equal(a.MessageID, b.MessageID) && bytes.Equal(a.Commitment, b.Commitment)
}
