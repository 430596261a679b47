package cse

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// KeyNameKey is the materials-description entry with which KeyringProvider
// records which master key wrapped a data key.
const KeyNameKey = "keyname"

// MasterKey is one local master key of a KeyringProvider: exactly one of AES
// (16, 24 or 32 bytes) and RSA is set.
type MasterKey struct {
	Name string
	AES  []byte
	RSA  *rsa.PrivateKey
}

// KeyringProvider is a Provider for CSE-C with local master keys (the S3EC
// raw AES and RSA keyrings, and EMRFS custom providers built on them).
//
// GenerateKey draws a random 32-byte data key (crypto/rand) and wraps it with
// the encrypt-with key: "AES/GCM" for an AES master key, "RSA-OAEP-SHA1" for
// an RSA one, binding req.CEKAlg: CEKAlgGCM (the default) or
// CEKAlgGCMCommit; any other gives ErrUnsupported. The stored materials
// description is req.MatDesc plus {"keyname": <master key name>}; the
// keyring's entry replaces a caller's "keyname".
//
// DecryptKey reads AES/GCM, AESWrap, V1 AES/ECB (AES master keys) and
// RSA-OAEP-SHA1, RSA/ECB/OAEPWithSHA-256AndMGF1Padding, V1 RSA PKCS#1 v1.5
// (RSA master keys). If the materials description has "keyname", only that
// key is used (unknown name → ErrNoMasterKey; that key failing →
// ErrAuthentication). Otherwise, as for objects written by other clients,
// every master key of the right kind is tried in order; this is safe for the
// integrity-checked wraps, but V1 AES/ECB has only a padding check, so it is
// tried only when the keyring has exactly one AES key. When no key works the
// error wraps ErrNoMasterKey. kms and kms+context give ErrUnsupported.
//
// Safe for concurrent use (immutable after construction).
type KeyringProvider struct {
	keys        []MasterKey
	encryptWith int // index into keys, -1 for a decrypt-only keyring
}

var _ Provider = (*KeyringProvider)(nil)

// NewKeyringProvider builds a provider from keys (copied). encryptWith names
// the key GenerateKey uses; "" makes a decrypt-only keyring, whose
// GenerateKey fails with ErrNoMasterKey. Names must be unique and non-empty.
func NewKeyringProvider(keys []MasterKey, encryptWith string) (*KeyringProvider, error) {
	p := &KeyringProvider{encryptWith: -1}
	seen := map[string]bool{}
	for i, k := range keys {
		if k.Name == "" {
			return nil, fmt.Errorf("cse: master key %d has no name: %w", i, ErrMalformed)
		}
		if seen[k.Name] {
			return nil, fmt.Errorf("cse: master key name %q used twice: %w", k.Name, ErrMalformed)
		}
		seen[k.Name] = true
		if (k.AES == nil) == (k.RSA == nil) {
			return nil, fmt.Errorf("cse: master key %q must have exactly one of an AES and an RSA key: %w", k.Name, ErrMalformed)
		}
		if k.AES != nil && !validCEKLen(len(k.AES)) {
			return nil, fmt.Errorf("cse: master key %q: AES key of %d bytes: %w", k.Name, len(k.AES), ErrMalformed)
		}
		if k.RSA != nil {
			if err := k.RSA.Validate(); err != nil {
				return nil, fmt.Errorf("cse: master key %q: %w: %v", k.Name, ErrMalformed, err)
			}
		}
		p.keys = append(p.keys, MasterKey{Name: k.Name, AES: bytes.Clone(k.AES), RSA: k.RSA})
		if k.Name == encryptWith {
			p.encryptWith = i
		}
	}
	if encryptWith != "" && p.encryptWith < 0 {
		return nil, fmt.Errorf("cse: encrypt-with key %q is not in the keyring: %w", encryptWith, ErrNoMasterKey)
	}
	return p, nil
}

// GenerateKey implements Provider.
func (p *KeyringProvider) GenerateKey(_ context.Context, req KeyRequest) ([]byte, WrappedKey, error) {
	if p.encryptWith < 0 {
		return nil, WrappedKey{}, fmt.Errorf("cse: keyring has no encrypt-with key: %w", ErrNoMasterKey)
	}
	if req.CEKAlg == "" {
		req.CEKAlg = CEKAlgGCM
	}
	if req.CEKAlg != CEKAlgGCM && req.CEKAlg != CEKAlgGCMCommit {
		return nil, WrappedKey{}, fmt.Errorf("cse: keyring writes only %s or %s, not %q: %w", CEKAlgGCM, CEKAlgGCMCommit, req.CEKAlg, ErrUnsupported)
	}
	mk := p.keys[p.encryptWith]
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, WrappedKey{}, fmt.Errorf("cse: random data key: %w: %w", ErrMalformed, err)
	}
	w, err := mk.wrap(key, req)
	if err != nil {
		Zero(key)
		return nil, WrappedKey{}, err
	}
	return key, w, nil
}

// DecryptKey implements Provider.
func (p *KeyringProvider) DecryptKey(_ context.Context, w WrappedKey) ([]byte, error) {
	var wantRSA bool
	var unwrap func(mk MasterKey) ([]byte, error)
	switch w.WrapAlg {
	case WrapAESGCM:
		unwrap = func(mk MasterKey) ([]byte, error) { return unwrapKeyAESGCM(mk.AES, w.Blob, w.CEKAlg) }
	case WrapAESWrap:
		unwrap = func(mk MasterKey) ([]byte, error) { return unwrapKeyAESWrap(mk.AES, w.Blob) }
	case WrapRSAOAEPSHA1:
		wantRSA = true
		unwrap = func(mk MasterKey) ([]byte, error) { return unwrapKeyRSAOAEPSHA1(mk.RSA, w.Blob, w.CEKAlg) }
	case WrapRSAOAEPSHA256:
		wantRSA = true
		unwrap = func(mk MasterKey) ([]byte, error) { return unwrapKeyRSAOAEPSHA256(mk.RSA, w.Blob) }
	case WrapV1:
		// J3 tells V1 wraps apart by size: AES/ECB of a 32-byte key is 48 bytes.
		if len(w.Blob) > 48 {
			wantRSA = true
			unwrap = func(mk MasterKey) ([]byte, error) { return unwrapKeyV1RSA(mk.RSA, w.Blob) }
		} else {
			unwrap = func(mk MasterKey) ([]byte, error) { return unwrapKeyV1AES(mk.AES, w.Blob) }
		}
	case WrapKMS, WrapKMSContext:
		return nil, fmt.Errorf("cse: a local keyring cannot unwrap %q: %w", w.WrapAlg, ErrUnsupported)
	default:
		return nil, fmt.Errorf("cse: wrap algorithm %q: %w", w.WrapAlg, ErrUnsupported)
	}
	kind := "AES"
	if wantRSA {
		kind = "RSA"
	}
	if name, ok := w.MatDesc[KeyNameKey]; ok {
		for _, mk := range p.keys {
			if mk.Name != name {
				continue
			}
			if (mk.RSA != nil) != wantRSA {
				return nil, fmt.Errorf("cse: master key %q is not an %s key, as %q needs (materials description %s): %w", name, kind, w.WrapAlg, describe(w.MatDesc), ErrNoMasterKey)
			}
			return unwrap(mk)
		}
		return nil, fmt.Errorf("cse: no master key for materials description %s: %w", describe(w.MatDesc), ErrNoMasterKey)
	}
	var cands []MasterKey
	for _, mk := range p.keys {
		if (mk.RSA != nil) == wantRSA {
			cands = append(cands, mk)
		}
	}
	if w.WrapAlg == WrapV1 && !wantRSA && len(cands) > 1 {
		return nil, fmt.Errorf("cse: V1 AES/ECB key with materials description %s and %d AES master keys: trial decryption is unsafe without integrity: %w", describe(w.MatDesc), len(cands), ErrNoMasterKey)
	}
	for _, mk := range cands {
		if key, err := unwrap(mk); err == nil {
			return key, nil
		}
	}
	return nil, fmt.Errorf("cse: none of %d %s master keys unwraps the %q key with materials description %s: %w", len(cands), kind, w.WrapAlg, describe(w.MatDesc), ErrNoMasterKey)
}

// describe renders a materials description for error messages (it is not
// secret; S3 stores it in clear).
func describe(md map[string]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(md)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%q", k, md[k])
	}
	b.WriteByte('}')
	return b.String()
}

// wrap wraps key with mk for req's content algorithm (AES/GCM for an AES
// key, RSA-OAEP-SHA1 for an RSA one), recording req's materials
// description and mk's name ("keyname").
func (mk *MasterKey) wrap(key []byte, req KeyRequest) (WrappedKey, error) {
	w := WrappedKey{CEKAlg: req.CEKAlg, MatDesc: make(map[string]string, len(req.MatDesc)+1)}
	maps.Copy(w.MatDesc, req.MatDesc)
	w.MatDesc[KeyNameKey] = mk.Name
	var err error
	if mk.AES != nil {
		w.WrapAlg = WrapAESGCM
		w.Blob, err = wrapKeyAESGCM(mk.AES, key, req.CEKAlg, rand.Reader)
	} else {
		w.WrapAlg = WrapRSAOAEPSHA1
		w.Blob, err = wrapKeyRSAOAEPSHA1(&mk.RSA.PublicKey, key, req.CEKAlg, rand.Reader)
	}
	if err != nil {
		return WrappedKey{}, err
	}
	return w, nil
}
