package fusefs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

func TestToErrno(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("object a/b: %w", fmt.Errorf("layer: %w", err)) }
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{syscall.ENOSPC, syscall.ENOSPC},
		{wrap(syscall.EROFS), syscall.EROFS},
		{wrap(context.Canceled), syscall.EINTR},
		{wrap(objectstore.ErrNotFound), syscall.ENOENT},
		{wrap(objectstore.ErrAccessDenied), syscall.EACCES},
		{wrap(objectstore.ErrSSECustomerKey), syscall.EACCES},
		{wrap(objectstore.ErrNoSuchBucket), syscall.EACCES},
		{wrap(objectstore.ErrPreconditionFailed), syscall.ESTALE},
		{wrap(cse.ErrKeyAccess), syscall.EACCES},
		{wrap(cse.ErrKeyUnusable), syscall.EACCES},
		{wrap(cse.ErrNoMasterKey), syscall.EACCES},
		{wrap(cse.ErrContextMismatch), syscall.EACCES},
		{wrap(errPlaintextDenied), syscall.EACCES},
		{wrap(errNoProvider), syscall.EACCES},
		{wrap(errCommitmentPolicy), syscall.EACCES},
		{wrap(cse.ErrCommitment), syscall.EIO},
		{wrap(cse.ErrAuthentication), syscall.EIO},
		{wrap(cse.ErrTruncated), syscall.EIO},
		{wrap(cse.ErrMalformed), syscall.EIO},
		{wrap(cse.ErrUnsupported), syscall.EIO},
		{wrap(metadata.ErrMalformed), syscall.EIO},
		{wrap(metadata.ErrKeyConflict), syscall.EIO},
		{wrap(metadata.ErrNoInstructionFile), syscall.EIO},
		{wrap(cse.ErrTooLarge), syscall.EFBIG},
		{wrap(objectstore.ErrTooLarge), syscall.EFBIG},
		{wrap(errNonSequential), syscall.EINVAL},
		{wrap(errReadOnly), syscall.EROFS},
		{wrap(errNotEmpty), syscall.ENOTEMPTY},
		{wrap(errUnsupported), syscall.ENOTSUP},
		{wrap(errExists), syscall.EEXIST},
		{wrap(errClosed), syscall.EBADF},
		{errors.New("some SDK error"), syscall.EIO},
		// Network errnos never reach a program: EIO (the log has them).
		{wrap(syscall.ECONNREFUSED), syscall.EIO},
		{wrap(syscall.ECONNRESET), syscall.EIO},
		{wrap(syscall.ECONNABORTED), syscall.EIO},
		{wrap(syscall.ETIMEDOUT), syscall.EIO},
		{wrap(syscall.EPIPE), syscall.EIO},
		{wrap(fmt.Errorf("%w: %w", objectstore.ErrUnavailable, syscall.ECONNRESET)), syscall.EIO},
		{wrap(fmt.Errorf("%w: %w", cse.ErrKeyService, context.DeadlineExceeded)), syscall.EIO},
		{wrap(context.DeadlineExceeded), syscall.EIO},
		{wrap(syscall.EDQUOT), syscall.EDQUOT},
		{wrap(errStagingFull), syscall.ENOSPC},
		{wrap(errNotAFile), syscall.ESTALE},
		{wrap(errCrossZone), syscall.EXDEV},
		// create, mkdir, mknod, symlink and rename refuse a name the store
		// cannot hold through logErr (checkName).
		{wrap(errNameTooLong), syscall.ENAMETOOLONG},
		{wrap(errFileTooBig), syscall.EFBIG},
	} {
		if got := toErrno(tc.err); got != tc.want {
			t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
