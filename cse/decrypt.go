package cse

import (
	"fmt"
	"io"
)

// NewDecryptReader returns a plaintext reader for a body encrypted with
// cekAlg (CEKAlgGCM, CEKAlgGCMCommit or CEKAlgCBC), as NewGCMDecryptReader
// or NewCBCDecryptReader. For CEKAlgGCMCommit, key is the content key that
// OpenCommitment returned and iv is CommitIV(); the additional data is
// CommitAAD(). Another algorithm gives ErrUnsupported; an IV of the wrong
// length for the algorithm gives ErrMalformed.
func NewDecryptReader(src io.Reader, key []byte, cekAlg string, iv []byte) (io.Reader, error) {
	switch cekAlg {
	case CEKAlgGCM:
		return NewGCMDecryptReader(src, key, iv)
	case CEKAlgGCMCommit:
		return NewGCMDecryptReaderAAD(src, key, iv, CommitAAD())
	case CEKAlgCBC:
		return NewCBCDecryptReader(src, key, iv)
	default:
		return nil, fmt.Errorf("cse: content algorithm %q: %w", cekAlg, ErrUnsupported)
	}
}
