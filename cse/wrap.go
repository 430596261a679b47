package cse

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha1"
	_ "crypto/sha256" // registers crypto.SHA256 for OAEP
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
)

// Key wrapping with local master keys (CSE-C). Pure functions: no I/O besides
// the caller's random source.

func validCEKLen(n int) bool { return n == 16 || n == 24 || n == 32 }

// wrapKeyAESGCM wraps cek under kek with the S3EC "AES/GCM" wrap (s3ec-format
// §4.3): IV(12 random bytes from rand) || AES-GCM(kek, IV, cek, AAD = cekAlg)
// || tag. A 32-byte cek gives 60 bytes. The AAD binds the content algorithm.
func wrapKeyAESGCM(kek, cek []byte, cekAlg string, rand io.Reader) ([]byte, error) {
	if !validCEKLen(len(cek)) {
		return nil, fmt.Errorf("cse: data key of %d bytes: %w", len(cek), ErrMalformed)
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	out := make([]byte, GCMIVSize, GCMIVSize+len(cek)+TagSize)
	if _, err := io.ReadFull(rand, out); err != nil {
		return nil, fmt.Errorf("cse: reading random IV: %w: %w", ErrMalformed, err)
	}
	return aead.Seal(out, out[:GCMIVSize], cek, []byte(cekAlg)), nil
}

// unwrapKeyAESGCM reverses wrapKeyAESGCM. A wrong kek, a tampered blob or a cekAlg
// other than the one wrapped with gives ErrAuthentication; a blob of the wrong
// size ErrMalformed.
func unwrapKeyAESGCM(kek, blob []byte, cekAlg string) ([]byte, error) {
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, err
	}
	if n := len(blob) - GCMIVSize - TagSize; !validCEKLen(n) {
		return nil, fmt.Errorf("cse: AES/GCM wrapped key of %d bytes: %w", len(blob), ErrMalformed)
	}
	cek, err := aead.Open(nil, blob[:GCMIVSize], blob[GCMIVSize:], []byte(cekAlg))
	if err != nil {
		return nil, fmt.Errorf("cse: AES/GCM key unwrap: %w", ErrAuthentication)
	}
	return cek, nil
}

func newAEAD(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("cse: master key: %w: %v", ErrMalformed, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	return aead, nil
}

// wrapKeyRSAOAEPSHA1 wraps cek under pub with the S3EC "RSA-OAEP-SHA1" wrap
// (§4.4): RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) of the pseudo key
// byte(len(cek)) || cek || cekAlg.
func wrapKeyRSAOAEPSHA1(pub *rsa.PublicKey, cek []byte, cekAlg string, rand io.Reader) ([]byte, error) {
	if !validCEKLen(len(cek)) {
		return nil, fmt.Errorf("cse: data key of %d bytes: %w", len(cek), ErrMalformed)
	}
	pseudo := make([]byte, 0, 1+len(cek)+len(cekAlg))
	pseudo = append(pseudo, byte(len(cek)))
	pseudo = append(pseudo, cek...)
	pseudo = append(pseudo, cekAlg...)
	defer Zero(pseudo)
	out, err := rsa.EncryptOAEP(sha1.New(), rand, pub, pseudo, nil)
	if err != nil {
		return nil, fmt.Errorf("cse: RSA-OAEP-SHA1 wrap: %w: %v", ErrMalformed, err)
	}
	return out, nil
}

// unwrapKeyRSAOAEPSHA1 reverses wrapKeyRSAOAEPSHA1. It checks that the length byte
// is 16, 24 or 32 and that the trailing algorithm name is the one cekAlg
// implies: CEKAlgGCMCommit ("115") for a V3 object, CEKAlgGCM otherwise (the
// name is fixed even for CTR (ranged) decryption, see J3 #288). A decryption
// failure or a bad pseudo key gives ErrAuthentication.
func unwrapKeyRSAOAEPSHA1(priv *rsa.PrivateKey, blob []byte, cekAlg string) ([]byte, error) {
	want := CEKAlgGCM
	if cekAlg == CEKAlgGCMCommit {
		want = CEKAlgGCMCommit
	}
	pseudo, err := rsa.DecryptOAEP(sha1.New(), nil, priv, blob, nil)
	if err != nil {
		return nil, fmt.Errorf("cse: RSA-OAEP-SHA1 unwrap: %w", ErrAuthentication)
	}
	defer Zero(pseudo)
	if len(pseudo) < 1 {
		return nil, fmt.Errorf("cse: RSA-OAEP-SHA1 pseudo key empty: %w", ErrAuthentication)
	}
	n := int(pseudo[0])
	if !validCEKLen(n) || len(pseudo) != 1+n+len(want) || string(pseudo[1+n:]) != want {
		return nil, fmt.Errorf("cse: RSA-OAEP-SHA1 pseudo key does not name %s: %w", want, ErrAuthentication)
	}
	return append([]byte(nil), pseudo[1:1+n]...), nil
}

// unwrapKeyRSAOAEPSHA256 unwraps the legacy "RSA/ECB/OAEPWithSHA-256AndMGF1Padding"
// wrap (§4.5): OAEP of the raw data key with SHA-256. SunJCE uses MGF1-SHA-1
// for this name and BouncyCastle MGF1-SHA-256, so both are tried, SunJCE's
// first. Failure of both gives ErrAuthentication.
func unwrapKeyRSAOAEPSHA256(priv *rsa.PrivateKey, blob []byte) ([]byte, error) {
	cek, err := priv.Decrypt(nil, blob, &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA1})
	if err != nil {
		cek, err = priv.Decrypt(nil, blob, &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256})
	}
	if err != nil {
		return nil, fmt.Errorf("cse: RSA-OAEP-SHA256 unwrap: %w", ErrAuthentication)
	}
	if !validCEKLen(len(cek)) {
		Zero(cek)
		return nil, fmt.Errorf("cse: RSA-OAEP-SHA256 data key of %d bytes: %w", len(cek), ErrMalformed)
	}
	return cek, nil
}

// unwrapKeyV1RSA unwraps a V1 (x-amz-key) data key encrypted with RSA PKCS#1
// v1.5 (JCE "RSA"). Failure gives ErrAuthentication.
func unwrapKeyV1RSA(priv *rsa.PrivateKey, blob []byte) ([]byte, error) {
	//lint:ignore SA1019 the V1 format wraps data keys with PKCS#1 v1.5; reading such objects needs it
	cek, err := rsa.DecryptPKCS1v15(nil, priv, blob)
	if err != nil {
		return nil, fmt.Errorf("cse: V1 RSA unwrap: %w", ErrAuthentication)
	}
	if !validCEKLen(len(cek)) {
		Zero(cek)
		return nil, fmt.Errorf("cse: V1 RSA data key of %d bytes: %w", len(cek), ErrMalformed)
	}
	return cek, nil
}

// unwrapKeyV1AES unwraps a V1 (x-amz-key) data key encrypted with
// AES/ECB/PKCS5Padding (JCE "AES"): 48 bytes for a 32-byte key. This wrap has
// no integrity: a wrong kek is caught only by the padding check (about 1 in
// 256 wrong keys passes it), so callers should not trial-decrypt with it.
// Bad padding gives ErrAuthentication.
func unwrapKeyV1AES(kek, blob []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("cse: master key: %w: %v", ErrMalformed, err)
	}
	if len(blob) == 0 || len(blob)%BlockSize != 0 || len(blob) > 48 {
		return nil, fmt.Errorf("cse: V1 AES wrapped key of %d bytes: %w", len(blob), ErrMalformed)
	}
	pt := make([]byte, len(blob))
	for i := 0; i < len(blob); i += BlockSize {
		block.Decrypt(pt[i:i+BlockSize], blob[i:i+BlockSize])
	}
	last, err := pkcs7Len(pt[len(pt)-BlockSize:])
	if err != nil {
		Zero(pt)
		return nil, fmt.Errorf("cse: V1 AES unwrap: %w", err)
	}
	cek := pt[:len(pt)-BlockSize+last]
	if !validCEKLen(len(cek)) {
		Zero(pt)
		return nil, fmt.Errorf("cse: V1 AES data key of %d bytes: %w", len(cek), ErrAuthentication)
	}
	return cek, nil
}

// aesWrapIV is RFC 3394's default initial value.
var aesWrapIV = [8]byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

// wrapKeyAESWrap wraps key (a multiple of 8 bytes, at least 16) under kek with RFC
// 3394 AES Key Wrap and the default IV: the JCE "AESWrap" transformation.
func wrapKeyAESWrap(kek, key []byte) ([]byte, error) {
	if len(key) < 16 || len(key)%8 != 0 {
		return nil, fmt.Errorf("cse: AESWrap of %d bytes: %w", len(key), ErrMalformed)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("cse: master key: %w: %v", ErrMalformed, err)
	}
	n := len(key) / 8
	out := make([]byte, 8+len(key))
	copy(out, aesWrapIV[:])
	copy(out[8:], key)
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], out[:8])
			copy(b[8:], out[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(out[8*i:], b[8:])
		}
	}
	clear(b[:])
	return out, nil
}

// unwrapKeyAESWrap reverses wrapKeyAESWrap. If the integrity check value is not the
// default IV (wrong kek or tampered blob) it returns ErrAuthentication.
func unwrapKeyAESWrap(kek, blob []byte) ([]byte, error) {
	if len(blob) < 24 || len(blob)%8 != 0 {
		return nil, fmt.Errorf("cse: AESWrap blob of %d bytes: %w", len(blob), ErrMalformed)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("cse: master key: %w: %v", ErrMalformed, err)
	}
	n := len(blob)/8 - 1
	a := binary.BigEndian.Uint64(blob[:8])
	r := make([]byte, len(blob)-8)
	copy(r, blob[8:])
	var b [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], a^t)
			copy(b[8:], r[8*(i-1):8*i])
			block.Decrypt(b[:], b[:])
			a = binary.BigEndian.Uint64(b[:8])
			copy(r[8*(i-1):], b[8:])
		}
	}
	clear(b[:])
	var got [8]byte
	binary.BigEndian.PutUint64(got[:], a)
	if subtle.ConstantTimeCompare(got[:], aesWrapIV[:]) != 1 {
		Zero(r)
		return nil, fmt.Errorf("cse: AESWrap integrity check failed: %w", ErrAuthentication)
	}
	return r, nil
}
