package cse

import (
	"context"
	"fmt"
	"maps"

	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// KeyWrapper wraps a data key that already exists (key rotation: the
// content stays, only the wrapped key changes). WrapKey binds req.CEKAlg and
// req.MatDesc exactly as the implementation's GenerateKey binds those of a
// new key, so the result reads back with DecryptKey like any key it
// generated. key is not retained.
type KeyWrapper interface {
	WrapKey(ctx context.Context, key []byte, req KeyRequest) (WrappedKey, error)
}

// kmsEncrypter is the KMS Encrypt call WrapKey needs beyond KMSClient
// (*kms.Client has it; KMSClient fakes need not).
type kmsEncrypter interface {
	Encrypt(ctx context.Context, params *kms.EncryptInput, optFns ...func(*kms.Options)) (*kms.EncryptOutput, error)
}

// WrapKey implements KeyWrapper with KMS Encrypt under p's key, with the
// encryption context (and stored materials description) GenerateKey would
// use. The client must also implement Encrypt (ErrUnsupported otherwise).
func (p *KMSProvider) WrapKey(ctx context.Context, key []byte, req KeyRequest) (WrappedKey, error) {
	enc, ok := p.client.(kmsEncrypter)
	if !ok {
		return WrappedKey{}, fmt.Errorf("cse: KMS client cannot Encrypt: %w", ErrUnsupported)
	}
	if !validCEKLen(len(key)) {
		return WrappedKey{}, fmt.Errorf("cse: data key of %d bytes: %w", len(key), ErrMalformed)
	}
	ec, err := p.context(req)
	if err != nil {
		return WrappedKey{}, err
	}
	keyID := p.keyID
	out, err := enc.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: key, EncryptionContext: ec})
	if err != nil {
		return WrappedKey{}, fmt.Errorf("cse: KMS Encrypt with key %q: %w", p.keyID, mapKMSError(err))
	}
	if len(out.CiphertextBlob) == 0 {
		return WrappedKey{}, fmt.Errorf("cse: KMS Encrypt returned an empty blob: %w", ErrMalformed)
	}
	return WrappedKey{WrapAlg: p.opt.Wrap, CEKAlg: req.CEKAlg, Blob: append([]byte(nil), out.CiphertextBlob...), MatDesc: ec}, nil
}

// context is the encryption context of a key for req (see KMSProvider).
func (p *KMSProvider) context(req KeyRequest) (map[string]string, error) {
	if req.CEKAlg == "" {
		req.CEKAlg = CEKAlgGCM
	}
	ec := make(map[string]string, len(req.MatDesc)+1)
	switch p.opt.Wrap {
	case WrapKMSContext:
		if _, ok := req.MatDesc[ReservedCEKAlgKey]; ok {
			return nil, fmt.Errorf("cse: caller materials description sets reserved key %q: %w", ReservedCEKAlgKey, ErrContextMismatch)
		}
		maps.Copy(ec, req.MatDesc)
		ec[ReservedCEKAlgKey] = req.CEKAlg
	default: // WrapKMS
		ec[LegacyKMSKeyIDKey] = p.keyID
		maps.Copy(ec, req.MatDesc)
	}
	return ec, nil
}

// WrapKey implements KeyWrapper with the keyring's encrypt-with key, as
// GenerateKey wraps a new key (AES/GCM or RSA-OAEP-SHA1, binding req.CEKAlg;
// "keyname" recorded in the materials description).
func (p *KeyringProvider) WrapKey(_ context.Context, key []byte, req KeyRequest) (WrappedKey, error) {
	if p.encryptWith < 0 {
		return WrappedKey{}, fmt.Errorf("cse: keyring has no encrypt-with key: %w", ErrNoMasterKey)
	}
	if req.CEKAlg == "" {
		req.CEKAlg = CEKAlgGCM
	}
	if !validCEKLen(len(key)) {
		return WrappedKey{}, fmt.Errorf("cse: data key of %d bytes: %w", len(key), ErrMalformed)
	}
	mk := p.keys[p.encryptWith]
	w, err := mk.wrap(key, req)
	if err != nil {
		return WrappedKey{}, err
	}
	return w, nil
}

// WrapKey implements KeyWrapper with the writer's key.
func (w *keyringWriter) WrapKey(ctx context.Context, key []byte, req KeyRequest) (WrappedKey, error) {
	kw, ok := w.gen.(KeyWrapper)
	if !ok {
		return WrappedKey{}, fmt.Errorf("cse: keyring key cannot wrap an existing key: %w", ErrUnsupported)
	}
	return kw.WrapKey(ctx, key, req)
}

// WrapKey implements KeyWrapper, recording the keyring's name of the KMS key
// as GenerateKey does.
func (n *kmsKeyNamer) WrapKey(ctx context.Context, key []byte, req KeyRequest) (WrappedKey, error) {
	kw, ok := n.p.(KeyWrapper)
	if !ok {
		return WrappedKey{}, fmt.Errorf("cse: KMS key %q cannot wrap an existing key: %w", n.name, ErrUnsupported)
	}
	md := make(map[string]string, len(req.MatDesc)+1)
	maps.Copy(md, req.MatDesc)
	md[KeyNameKey] = n.name
	req.MatDesc = md
	return kw.WrapKey(ctx, key, req)
}
