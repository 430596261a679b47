package fusefs

import (
	"context"
	"errors"
	"syscall"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// Errors of this package's own.
var (
	// errPlaintextDenied: an object without an envelope under --plaintext=deny.
	errPlaintextDenied = errors.New("fusefs: object is not encrypted and plaintext reads are denied")
	// errNoProvider: an encrypted object on a mount without keys (--cse off).
	errNoProvider = errors.New("fusefs: object is encrypted but the mount has no key provider")
	// errNonSequential: a write that is not at the end of what was written.
	errNonSequential = errors.New("fusefs: non-sequential write to a streaming upload")
	// errReadOnly: a write on a read-only mount.
	errReadOnly = errors.New("fusefs: read-only mount")
	// errNotEmpty: rmdir of a directory that still has entries.
	errNotEmpty = errors.New("fusefs: directory not empty")
	// errUnsupported: an operation csefs does not (yet) implement.
	errUnsupported = errors.New("fusefs: operation not supported")
	// errClosed: a write after the upload was committed.
	errClosed = errors.New("fusefs: file already committed")
	// errExists: creating what already exists.
	errExists = errors.New("fusefs: file exists")
)

// toErrno is the one place where an error becomes an errno. Everything the
// kernel sees goes through it; go-fuse's own fs.ToErrno is never used, since it
// does not unwrap %w chains and would turn them into ENOSYS.
func toErrno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, objectstore.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, objectstore.ErrAccessDenied),
		errors.Is(err, objectstore.ErrNoSuchBucket),
		errors.Is(err, cse.ErrKeyAccess),
		errors.Is(err, cse.ErrKeyUnusable),
		errors.Is(err, cse.ErrNoMasterKey),
		errors.Is(err, cse.ErrContextMismatch),
		errors.Is(err, errPlaintextDenied),
		errors.Is(err, errCommitmentPolicy),
		errors.Is(err, errNoProvider):
		return syscall.EACCES
	case errors.Is(err, objectstore.ErrPreconditionFailed):
		return syscall.ESTALE
	case errors.Is(err, errNonSequential):
		return syscall.EINVAL
	case errors.Is(err, errReadOnly):
		return syscall.EROFS
	case errors.Is(err, errNotEmpty):
		return syscall.ENOTEMPTY
	case errors.Is(err, errUnsupported), errors.Is(err, cse.ErrUnsupported):
		// Unknown algorithms cannot be read: an I/O error, not "operation
		// not supported" on the syscall.
		if errors.Is(err, errUnsupported) {
			return syscall.ENOTSUP
		}
		return syscall.EIO
	case errors.Is(err, errExists):
		return syscall.EEXIST
	case errors.Is(err, cse.ErrTooLarge), errors.Is(err, objectstore.ErrTooLarge):
		return syscall.EFBIG
	case errors.Is(err, errClosed):
		return syscall.EBADF
	default:
		// Authentication failures, truncation, malformed envelopes, missing
		// instruction files and every unclassified store error.
		return syscall.EIO
	}
}
