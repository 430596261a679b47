package fusefs

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// errExists: creating what already exists.
	errExists = errors.New("fusefs: file exists")
)

var errTruncatedObject = fmt.Errorf("object shorter than its size: %w", cse.ErrTruncated)

// localErrnos are the only errnos of the operating system that toErrno
// passes on: conditions of this machine's own disks (the staging directory, a
// file:// store), which mean the same to a program as on any file system.
// Every other errno in a chain (ECONNREFUSED, ECONNRESET, ETIMEDOUT from a
// network call, EBADF of an internal file...) is a cause for the log, not
// the program's business: it becomes EIO.
var localErrnos = []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EFBIG}

// toErrno is the one place where an error becomes an errno. Everything the
// kernel sees goes through it; go-fuse's own fs.ToErrno is never used, since it
// does not unwrap %w chains and would turn them into ENOSYS.
//
// It is closed: errnos are chosen by the sentinel errors of objectstore, cse,
// metadata and this package, and everything it does not name is EIO. A store
// or key service that cannot be reached (objectstore.ErrUnavailable,
// cse.ErrKeyService, a timeout) is EIO too: the data is there, this mount
// cannot get at it right now.
func toErrno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotAFile):
		return syscall.ESTALE
	case errors.Is(err, errCrossZone):
		return syscall.EXDEV
	case errors.Is(err, errStagingFull):
		return syscall.ENOSPC
	case errors.Is(err, errNameTooLong):
		return syscall.ENAMETOOLONG
	case errors.Is(err, objectstore.ErrUnavailable), errors.Is(err, cse.ErrKeyService),
		errors.Is(err, context.DeadlineExceeded):
		return syscall.EIO
	case isLocalErrno(err) != 0:
		return isLocalErrno(err)
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, objectstore.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, objectstore.ErrSSECustomerKey):
		// A wrong (or missing) SSE-C key: the data is there, this mount
		// may not read it.
		return syscall.EACCES
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
	default:
		// Authentication failures, truncation, malformed envelopes, missing
		// instruction files and every unclassified store error.
		return syscall.EIO
	}
}

// isLocalErrno returns the errno of localErrnos in err's chain, or 0.
func isLocalErrno(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) && slices.Contains(localErrnos, errno) {
		return errno
	}
	return 0
}

func isNotFound(err error) bool { return errors.Is(err, objectstore.ErrNotFound) }
