package fusefs

import (
	"errors"

	"github.com/csefs/csefs/cse"
)

// Metrics receives counts of the mount's activity (package metrics
// implements it for Prometheus). Options.Metrics nil records nothing.
type Metrics interface {
	ReadBytes(n int)    // plaintext bytes returned to read(2)
	WrittenBytes(n int) // plaintext bytes accepted by write(2)
	// AuthFailure counts one operation refused because an object failed
	// authentication; reason is one of AuthFailureReasons.
	AuthFailure(reason string)
}

// AuthFailureReasons are the values AuthFailure reports.
var AuthFailureReasons = []string{"authentication", "truncated", "commitment", "context_mismatch"}

// authReason is err's AuthFailure reason, or "" if err is no
// authentication failure.
func authReason(err error) string {
	switch {
	case errors.Is(err, cse.ErrAuthentication):
		return "authentication"
	case errors.Is(err, cse.ErrTruncated):
		return "truncated"
	case errors.Is(err, cse.ErrCommitment):
		return "commitment"
	case errors.Is(err, cse.ErrContextMismatch):
		return "context_mismatch"
	}
	return ""
}

func (f *FS) countRead(n int) {
	if f.opt.Metrics != nil {
		f.opt.Metrics.ReadBytes(n)
	}
}

func (f *FS) countWritten(n int) {
	if f.opt.Metrics != nil {
		f.opt.Metrics.WrittenBytes(n)
	}
}

func (f *FS) countAuthFailure(err error) {
	if r := authReason(err); r != "" && f.opt.Metrics != nil {
		f.opt.Metrics.AuthFailure(r)
	}
}

// OpenWriters is the number of files open for writing or still uploading
// (what unmount waits for).
func (f *FS) OpenWriters() int {
	f.handlesMu.Lock()
	defer f.handlesMu.Unlock()
	return len(f.handles)
}

// StagingBytes is the space the staging files take now.
func (f *FS) StagingBytes() int64 {
	if f.stage == nil {
		return 0
	}
	f.stage.mu.Lock()
	defer f.stage.mu.Unlock()
	return f.stage.used
}
