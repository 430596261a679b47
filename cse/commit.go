package cse

import (
	"crypto/hkdf"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"
	"io"
	"strings"
)

// The S3EC V3 content suite ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY
// (s3ec-format.md §13; spec s3-encryption/key-derivation.md). The data key a
// provider makes or unwraps is not used on the content directly: HKDF-SHA512
// with the object's random message ID as salt derives from it a 28-byte key
// commitment, stored with the object (x-amz-d), and the 32-byte content key.
// A reader re-derives the commitment and refuses the object unless it
// matches, before decrypting anything. The content is AES-256-GCM under the
// derived key with a fixed IV (twelve 0x01 bytes; the key is unique per
// message ID) and the suite id's two bytes as additional data.
const (
	// CEKAlgGCMCommit is the suite as stored in x-amz-c, and the content
	// algorithm the wraps bind ("aws:x-amz-cek-alg" of kms+context, the
	// AES/GCM wrap's AAD, the RSA-OAEP pseudo key's suffix).
	CEKAlgGCMCommit = "115"
	// suiteGCMCommit is the suite id, 0x0073.
	suiteGCMCommit uint16 = 0x0073
	// MessageIDSize is the size of x-amz-i: 224 bits.
	MessageIDSize = 28
	// CommitmentSize is the size of x-amz-d: 224 bits.
	CommitmentSize = 28
)

// HKDF info labels, after the suite id's two big-endian bytes.
const (
	commitKeyLabel = "COMMITKEY"
	deriveKeyLabel = "DERIVEKEY"
)

// CommitIV returns the V3 content IV: twelve 0x01 bytes.
func CommitIV() []byte {
	return []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
}

// commitAAD returns the V3 content cipher's additional authenticated data:
// the suite id as two big-endian bytes, 00 73.
func commitAAD() []byte {
	return []byte{byte(suiteGCMCommit >> 8), byte(suiteGCMCommit)}
}

// newMessageID reads a fresh MessageIDSize-byte message ID from rand.
func newMessageID(rand io.Reader) ([]byte, error) {
	id := make([]byte, MessageIDSize)
	if _, err := io.ReadFull(rand, id); err != nil {
		return nil, fmt.Errorf("cse: reading random message ID: %w: %w", ErrMalformed, err)
	}
	return id, nil
}

// deriveCommit runs HKDF-SHA512 extract (salt = messageID, IKM = dataKey)
// and the COMMITKEY expand.
func deriveCommit(dataKey, messageID []byte) (prk, commitment []byte, err error) {
	if len(dataKey) != KeySize {
		return nil, nil, fmt.Errorf("cse: committing suite needs a %d-byte data key, not %d: %w", KeySize, len(dataKey), ErrMalformed)
	}
	if len(messageID) != MessageIDSize {
		return nil, nil, fmt.Errorf("cse: message ID of %d bytes, want %d: %w", len(messageID), MessageIDSize, ErrMalformed)
	}
	prk, err = hkdf.Extract(sha512.New, dataKey, messageID)
	if err != nil {
		return nil, nil, fmt.Errorf("cse: HKDF extract: %w: %v", ErrMalformed, err)
	}
	commitment, err = hkdf.Expand(sha512.New, prk, suiteInfo(commitKeyLabel), CommitmentSize)
	if err != nil {
		Zero(prk)
		return nil, nil, fmt.Errorf("cse: HKDF expand: %w: %v", ErrMalformed, err)
	}
	return prk, commitment, nil
}

func suiteInfo(label string) string {
	var sb strings.Builder
	sb.WriteByte(byte(suiteGCMCommit >> 8))
	sb.WriteByte(byte(suiteGCMCommit))
	sb.WriteString(label)
	return sb.String()
}

func deriveContent(prk []byte) ([]byte, error) {
	k, err := hkdf.Expand(sha512.New, prk, suiteInfo(deriveKeyLabel), KeySize)
	if err != nil {
		return nil, fmt.Errorf("cse: HKDF expand: %w: %v", ErrMalformed, err)
	}
	return k, nil
}

// commitKeys derives, for a writer, the content key and the key commitment
// of a new V3 object from its data key and message ID. The caller zeroes
// contentKey; the commitment is not secret.
func commitKeys(dataKey, messageID []byte) (contentKey, commitment []byte, err error) {
	prk, commitment, err := deriveCommit(dataKey, messageID)
	if err != nil {
		return nil, nil, err
	}
	defer Zero(prk)
	contentKey, err = deriveContent(prk)
	if err != nil {
		return nil, nil, err
	}
	return contentKey, commitment, nil
}

// openCommitment checks, for a reader, the stored commitment of a V3 object
// against the one derived from dataKey and messageID, in constant time, and
// only then derives the content key. A mismatch (a substituted data key, a
// changed message ID or commitment) gives ErrCommitment; a commitment of the
// wrong size (truncated, say) ErrMalformed. The caller zeroes contentKey.
func openCommitment(dataKey, messageID, commitment []byte) (contentKey []byte, err error) {
	if len(commitment) != CommitmentSize {
		return nil, fmt.Errorf("cse: key commitment of %d bytes, want %d: %w", len(commitment), CommitmentSize, ErrMalformed)
	}
	prk, want, err := deriveCommit(dataKey, messageID)
	if err != nil {
		return nil, err
	}
	defer Zero(prk)
	if subtle.ConstantTimeCompare(want, commitment) != 1 {
		return nil, fmt.Errorf("cse: derived key commitment differs from the stored one: %w", ErrCommitment)
	}
	return deriveContent(prk)
}

// CommitmentPolicy is the S3 Encryption Clients' commitment policy: whether
// new objects are written with key commitment (V3, suite 115) and whether
// objects without it may be read.
type CommitmentPolicy int

const (
	// ForbidEncryptAllowDecrypt writes V2 (AES/GCM/NoPadding) and reads
	// both. The default: every older client and EMRFS read what is written.
	ForbidEncryptAllowDecrypt CommitmentPolicy = iota
	// RequireEncryptAllowDecrypt writes V3 and reads both.
	RequireEncryptAllowDecrypt
	// RequireEncryptRequireDecrypt writes V3 and refuses to read objects
	// without key commitment (the v4 clients' default).
	RequireEncryptRequireDecrypt
)

var policyNames = [...]string{
	ForbidEncryptAllowDecrypt:    "forbid-encrypt-allow-decrypt",
	RequireEncryptAllowDecrypt:   "require-encrypt-allow-decrypt",
	RequireEncryptRequireDecrypt: "require-encrypt-require-decrypt",
}

// String returns the policy's flag spelling, e.g. "forbid-encrypt-allow-decrypt".
func (p CommitmentPolicy) String() string {
	if p < 0 || int(p) >= len(policyNames) {
		return fmt.Sprintf("CommitmentPolicy(%d)", int(p))
	}
	return policyNames[p]
}

// ParseCommitmentPolicy accepts the flag spelling and the clients' enum
// spelling (FORBID_ENCRYPT_ALLOW_DECRYPT), case-insensitively. An unknown
// name gives ErrUnsupported.
func ParseCommitmentPolicy(s string) (CommitmentPolicy, error) {
	n := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "_", "-"))
	for p, name := range policyNames {
		if n == name {
			return CommitmentPolicy(p), nil
		}
	}
	return 0, fmt.Errorf("cse: commitment policy %q (want %s, %s or %s): %w", s,
		policyNames[0], policyNames[1], policyNames[2], ErrUnsupported)
}

// WriteCEKAlg is the content algorithm new objects get under p:
// CEKAlgGCMCommit when p requires encryption with commitment, else CEKAlgGCM.
func (p CommitmentPolicy) WriteCEKAlg() string {
	if p == ForbidEncryptAllowDecrypt {
		return CEKAlgGCM
	}
	return CEKAlgGCMCommit
}

// AllowsRead reports whether p lets an object with content algorithm cekAlg
// be read: RequireEncryptRequireDecrypt admits only CEKAlgGCMCommit.
func (p CommitmentPolicy) AllowsRead(cekAlg string) bool {
	return p != RequireEncryptRequireDecrypt || cekAlg == CEKAlgGCMCommit
}
