package fleet

import (
	"context"
	"errors"
	"fmt"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// Verify unwraps the data key of every encrypted object and authenticates
// its whole body: the GCM tag, for V3 the key commitment, for CBC the
// padding and the recorded plaintext length. It never writes. Plaintext
// objects are skipped. Each failure is reported with its cause; the error is
// ErrFailed when any object failed.
func Verify(ctx, stop context.Context, o Options) (Summary, error) {
	return o.run(ctx, stop, func(ctx context.Context, key string, _ int64) Result {
		// An object replaced while it is read is read again (its new
		// version is the one to check), up to 3 times.
		for attempt := 1; ; attempt++ {
			obj, err := resolve(ctx, o.Store, key)
			if gone(err) {
				return Result{Status: StatusSkipped, Detail: "deleted since listed"}
			}
			if err != nil {
				return failed(err)
			}
			if obj.env == nil {
				return Result{Status: StatusSkipped, Detail: "plaintext", Bytes: obj.info.Size}
			}
			n, err := o.verifyObject(ctx, obj)
			if errors.Is(err, objectstore.ErrPreconditionFailed) && attempt < 3 {
				continue
			}
			if err != nil {
				return Result{Status: StatusFailed, Error: err.Error(), Bytes: obj.info.Size}
			}
			return Result{Status: StatusOK, Detail: fmt.Sprintf("%s, %d plaintext bytes", format(obj.env), n), Bytes: obj.info.Size}
		}
	})
}

// gone reports whether resolving failed because the object was deleted
// after it was listed.
func gone(err error) bool { return errors.Is(err, objectstore.ErrNotFound) }

// verifyObject authenticates obj and returns its plaintext size.
func (o *Options) verifyObject(ctx context.Context, obj *object) (int64, error) {
	dk, ck, _, err := o.contentKey(ctx, obj.env)
	if err != nil {
		return 0, err
	}
	defer cse.Zero(dk)
	defer cse.Zero(ck)
	r, err := o.decryptReader(ctx, obj, ck)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n, err := drain(r)
	if err != nil {
		return n, fmt.Errorf("content: %w", err)
	}
	return n, nil
}
