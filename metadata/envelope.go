// Package metadata reads and writes what csefs stores about an object besides
// its body: the S3 Encryption Client envelope (object metadata or an
// instruction file). It does no I/O and holds no keys.
package metadata

import (
	"errors"

	"github.com/csefs/csefs/cse"
)

// Logical metadata keys (without the x-amz-meta- prefix S3 adds on the wire).
const (
	KeyV2          = "x-amz-key-v2"
	KeyV1          = "x-amz-key"
	KeyIV          = "x-amz-iv"
	KeyCEKAlg      = "x-amz-cek-alg"
	KeyWrapAlg     = "x-amz-wrap-alg"
	KeyMatDesc     = "x-amz-matdesc"
	KeyTagLen      = "x-amz-tag-len"
	KeyPlainLen    = "x-amz-unencrypted-content-length"
	KeyInstrMarker = "x-amz-crypto-instr-file"

	// InstructionSuffix names an object's instruction file: key + suffix.
	InstructionSuffix = ".instruction"
	// MaxUserMetadata is S3's limit on user metadata (keys plus values).
	MaxUserMetadata = 2048
)

// Sentinel errors.
var (
	// ErrNoEnvelope: the metadata holds no V1/V2/V3 envelope. The caller
	// should look for an instruction file; without one the object is plaintext.
	ErrNoEnvelope = errors.New("metadata: no encryption envelope")
	// ErrMalformed: an envelope is present but cannot be parsed (bad base64,
	// bad JSON, a missing or invalid field).
	ErrMalformed = errors.New("metadata: malformed envelope")
	// ErrKeyConflict: both x-amz-key and x-amz-key-v2 are present.
	ErrKeyConflict = errors.New("metadata: both x-amz-key and x-amz-key-v2 present")
	// ErrV3Unsupported: a V3 (key-committing) envelope, which csefs refuses.
	ErrV3Unsupported = errors.New("metadata: S3EC V3 envelope not supported")
	// ErrTooLarge: the metadata exceeds MaxUserMetadata; use an instruction file.
	ErrTooLarge = errors.New("metadata: user metadata exceeds 2 KB")
	// ErrNoInstructionFile: an instruction file was expected and is missing.
	ErrNoInstructionFile = errors.New("metadata: instruction file missing")
)

// Envelope is the decoded S3EC envelope of one object.
type Envelope struct {
	Version int // 1 (x-amz-key) or 2 (x-amz-key-v2)
	IV      []byte
	// Key is the wrapped data key with its algorithms and description.
	// Key.CEKAlg is cse.CEKAlgCBC for V1 objects, which have no x-amz-cek-alg.
	Key cse.WrappedKey
	// TagLenBits is x-amz-tag-len, 0 when absent.
	TagLenBits int
	// PlainLen is x-amz-unencrypted-content-length, -1 when absent.
	PlainLen int64
}
