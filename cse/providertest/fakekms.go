package providertest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/csefs/csefs/cse"
)

// FakeKMS is an in-memory cse.KMSClient for tests. Every key id names an
// enabled symmetric ENCRYPT_DECRYPT key, and its blobs really are
// ciphertexts: GenerateDataKey returns a random data key and a blob sealing
// it with AES-256-GCM (under a key of this FakeKMS) to the key id and the
// encryption context, so Decrypt needs no state, and concurrent use is safe.
//
// Decrypt fails as KMS does: InvalidCiphertextException for a blob this
// FakeKMS did not make, a damaged one, or an encryption context other than
// the one it was made with (absent and empty are the same, as in KMS);
// IncorrectKeyException when the request names a KeyId other than the
// blob's. Key ids are compared as given (the fake resolves no aliases), and
// Decrypt answers the KeyId the data key was generated with.
type FakeKMS struct {
	master []byte // seals every blob; never handed out
}

var _ cse.KMSClient = (*FakeKMS)(nil)

// NewFakeKMS returns a FakeKMS with a fresh random master key: its blobs
// decrypt only with it.
func NewFakeKMS() *FakeKMS {
	master := make([]byte, 32)
	_, _ = rand.Read(master) // never fails (crypto/rand)
	return &FakeKMS{master: master}
}

// blob layout: BE16(len(keyID)) || keyID || nonce (12) || GCM(data key) || tag.

func (f *FakeKMS) aead() cipher.AEAD {
	block, err := aes.NewCipher(f.master)
	if err != nil {
		panic("providertest: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("providertest: " + err.Error())
	}
	return aead
}

// fakeAAD binds a blob to its key id and encryption context (entries sorted,
// every string length-prefixed).
func fakeAAD(keyID string, ec map[string]string) []byte {
	b := []byte("providertest.FakeKMS v1")
	put := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	put(keyID)
	for _, k := range slices.Sorted(maps.Keys(ec)) {
		put(k)
		put(ec[k])
	}
	return b
}

// DescribeKey implements cse.KMSClient.
func (f *FakeKMS) DescribeKey(_ context.Context, in *kms.DescribeKeyInput, _ ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	if in.KeyId == nil || *in.KeyId == "" {
		return nil, &types.NotFoundException{Message: ptr("no key id")}
	}
	return &kms.DescribeKeyOutput{KeyMetadata: &types.KeyMetadata{
		KeyId: ptr(*in.KeyId), KeyState: types.KeyStateEnabled, Enabled: true,
		KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt,
	}}, nil
}

// GenerateDataKey implements cse.KMSClient: a key of NumberOfBytes, or of
// KeySpec (AES_256 when neither is set).
func (f *FakeKMS) GenerateDataKey(_ context.Context, in *kms.GenerateDataKeyInput, _ ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error) {
	if in.KeyId == nil || *in.KeyId == "" || len(*in.KeyId) > 0xffff {
		return nil, &types.NotFoundException{Message: ptr("no such key id")}
	}
	n := 32
	switch {
	case in.NumberOfBytes != nil:
		n = int(*in.NumberOfBytes)
	case in.KeySpec == types.DataKeySpecAes128:
		n = 16
	}
	if n < 1 || n > 1024 {
		return nil, &types.InvalidKeyUsageException{Message: ptr("bad data key size")}
	}
	keyID := *in.KeyId
	key := make([]byte, n)
	_, _ = rand.Read(key)
	aead := f.aead()
	blob := binary.BigEndian.AppendUint16(nil, uint16(len(keyID)))
	blob = append(blob, keyID...)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	blob = append(blob, nonce...)
	blob = aead.Seal(blob, nonce, key, fakeAAD(keyID, in.EncryptionContext))
	return &kms.GenerateDataKeyOutput{Plaintext: key, CiphertextBlob: blob, KeyId: &keyID}, nil
}

// Decrypt implements cse.KMSClient.
func (f *FakeKMS) Decrypt(_ context.Context, in *kms.DecryptInput, _ ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	invalid := &types.InvalidCiphertextException{Message: ptr("the ciphertext does not decrypt with this encryption context")}
	aead := f.aead()
	b := in.CiphertextBlob
	if len(b) < 2 {
		return nil, invalid
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n+aead.NonceSize()+aead.Overhead() {
		return nil, invalid
	}
	keyID := string(b[2 : 2+n])
	nonce := b[2+n : 2+n+aead.NonceSize()]
	if in.KeyId != nil && *in.KeyId != keyID {
		return nil, &types.IncorrectKeyException{Message: ptr("the ciphertext was not made under this key")}
	}
	key, err := aead.Open(nil, nonce, b[2+n+aead.NonceSize():], fakeAAD(keyID, in.EncryptionContext))
	if err != nil {
		return nil, invalid
	}
	return &kms.DecryptOutput{Plaintext: key, KeyId: &keyID, EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault}, nil
}

func ptr[T any](v T) *T { return &v }
