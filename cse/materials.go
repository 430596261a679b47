package cse

import (
	"context"
	"errors"
)

// Content-encryption algorithms, as stored in x-amz-cek-alg (V1, V2); the
// V3 suite CEKAlgGCMCommit ("115", x-amz-c) is in commit.go.
const (
	CEKAlgGCM = "AES/GCM/NoPadding"
	CEKAlgCBC = "AES/CBC/PKCS5Padding"
)

// Key-wrapping algorithms, as stored in x-amz-wrap-alg. WrapV1 (the empty
// string) stands for a V1 object: x-amz-key with no wrap algorithm, where the
// data key is encrypted with AES/ECB/PKCS5Padding or RSA PKCS#1 v1.5.
const (
	WrapKMSContext    = "kms+context"
	WrapKMS           = "kms"
	WrapAESGCM        = "AES/GCM"
	WrapRSAOAEPSHA1   = "RSA-OAEP-SHA1"
	WrapAESWrap       = "AESWrap"
	WrapRSAOAEPSHA256 = "RSA/ECB/OAEPWithSHA-256AndMGF1Padding"
	WrapV1            = ""
)

// Sizes fixed by the format.
const (
	KeySize   = 32 // AES-256 data keys
	GCMIVSize = 12
	CBCIVSize = 16
	TagSize   = 16
	BlockSize = 16
	// MaxGCMPlaintext is the largest plaintext one GCM message may carry
	// (2^36 - 32 bytes, JV1 ContentCryptoScheme.MAX_GCM_BYTES).
	MaxGCMPlaintext = 1<<36 - 32
)

// ReservedCEKAlgKey is the encryption-context key that binds the content
// algorithm into a kms+context wrapped key.
const ReservedCEKAlgKey = "aws:x-amz-cek-alg"

// LegacyKMSKeyIDKey is the materials-description key of the legacy "kms" wrap
// (EMRFS CSE-KMS): {"kms_cmk_id": <key id as configured>}.
const LegacyKMSKeyIDKey = "kms_cmk_id"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers classify with errors.Is and never by message.
var (
	// ErrAuthentication: a GCM tag, a key-wrap integrity check or padding did
	// not verify. The data was tampered with, or the key is wrong.
	ErrAuthentication = errors.New("cse: authentication failed")
	// ErrTruncated: the ciphertext is shorter than the format allows.
	ErrTruncated = errors.New("cse: ciphertext truncated")
	// ErrMalformed: a length, IV or wrapped key that cannot be valid.
	ErrMalformed = errors.New("cse: malformed input")
	// ErrUnsupported: an algorithm this package does not implement.
	ErrUnsupported = errors.New("cse: unsupported algorithm")
	// ErrContextMismatch: the stored materials description does not bind the
	// content algorithm as required, or the key service refused the context.
	ErrContextMismatch = errors.New("cse: encryption context mismatch")
	// ErrKeyAccess: the key service refused to unwrap (access denied, wrong
	// key, invalid ciphertext).
	ErrKeyAccess = errors.New("cse: key access denied")
	// ErrKeyService: the key service could not be reached or did not answer
	// (connection refused or reset, a timeout, throttling after the
	// retries): nothing is known about the key itself.
	ErrKeyService = errors.New("cse: key service unavailable")
	// ErrKeyUnusable: the master key is disabled, missing, asymmetric or not
	// for ENCRYPT_DECRYPT.
	ErrKeyUnusable = errors.New("cse: master key unusable")
	// ErrNoMasterKey: no configured master key matches the stored description.
	ErrNoMasterKey = errors.New("cse: no master key for materials description")
	// ErrCommitment: the key commitment stored with a V3 object does not
	// match the one derived from its data key and message ID (a substituted
	// or tampered data key, message ID or commitment).
	ErrCommitment = errors.New("cse: key commitment mismatch")
	// ErrTooLarge: the plaintext exceeds MaxGCMPlaintext.
	ErrTooLarge = errors.New("cse: plaintext too large for one GCM message")
)

// WrappedKey is a data key as stored with an object, plus everything the
// unwrapping is bound to.
type WrappedKey struct {
	WrapAlg string            // x-amz-wrap-alg; WrapV1 for x-amz-key objects
	CEKAlg  string            // x-amz-cek-alg (x-amz-c for V3); CEKAlgCBC for V1
	Blob    []byte            // the decoded x-amz-key-v2 / x-amz-key / x-amz-3
	MatDesc map[string]string // the parsed x-amz-matdesc (V3: x-amz-t or x-amz-m); never nil after parsing
	// Object names the object the key is stored with (s3://bucket/key),
	// for providers that decide per object (the exec protocol) and for
	// logs. The wrap does not bind it; it may be empty, and caches ignore it.
	Object string
}

// KeyRequest asks a Provider for a new data key.
type KeyRequest struct {
	// CEKAlg is the content algorithm the key will be used with: csefs
	// writes CEKAlgGCM or CEKAlgGCMCommit. Providers bind it into the wrap.
	CEKAlg string
	// MatDesc is the caller's materials description (for example EMRFS's Path
	// and JobflowId). It may be nil. Providers merge it into what they store.
	MatDesc map[string]string
	// Object names the object being written (s3://bucket/key), for providers
	// that choose keys per object and for logs. May be empty.
	Object string
	// Key is the object's key within its bucket (prefix included), for
	// providers that choose keys by key prefix. May be empty.
	Key string
}

// Provider creates and unwraps data keys. It is the Go shape of the EMRFS
// EncryptionMaterialsProvider and of the S3EC keyrings.
//
// Implementations must be safe for concurrent use. Returned key slices belong
// to the caller, who zeroes them when done (see Zero).
type Provider interface {
	// GenerateKey returns a fresh KeySize-byte data key and its wrapped form,
	// including the materials description to store with the object.
	GenerateKey(ctx context.Context, req KeyRequest) (key []byte, wrapped WrappedKey, err error)
	// DecryptKey unwraps a stored data key, checking every binding the wrap
	// algorithm has (encryption context, content algorithm).
	DecryptKey(ctx context.Context, w WrappedKey) (key []byte, err error)
}

// Zero overwrites b with zeros. Go may have copied the bytes elsewhere (GC
// moves, cipher key schedules); this is best effort, not a guarantee.
func Zero(b []byte) {
	clear(b)
}
