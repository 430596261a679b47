package cse

import (
	"bytes"
	"strings"
	"testing"
)

func TestKeyringAESByName(t *testing.T) {
	a, b := MasterKey{Name: "a", AES: testBytes(40, 32)}, MasterKey{Name: "b", AES: testBytes(41, 32)}
	pa, err := NewKeyringProvider([]MasterKey{a, b}, "a")
	if err != nil {
		t.Fatal(err)
	}
	key, w, err := pa.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM, MatDesc: map[string]string{"Path": "s3://b/k"}})
	if err != nil {
		t.Fatal(err)
	}
	if w.WrapAlg != WrapAESGCM || w.MatDesc[KeyNameKey] != "a" || w.MatDesc["Path"] != "s3://b/k" || len(w.Blob) != 60 {
		t.Fatalf("wrapped %+v", w)
	}
	// A reader whose encrypt-with key is another one still finds "a" by name.
	pb, _ := NewKeyringProvider([]MasterKey{b, a}, "b")
	got, err := pb.DecryptKey(t.Context(), w)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("by name: %v", err)
	}
	// The named key failing is an authentication error, not a fallback.
	pSwapped, _ := NewKeyringProvider([]MasterKey{{Name: "a", AES: b.AES}}, "")
	_, err = pSwapped.DecryptKey(t.Context(), w)
	mustFail(t, err, ErrAuthentication)
}

func TestKeyringUnknownName(t *testing.T) {
	p, _ := NewKeyringProvider([]MasterKey{{Name: "a", AES: testBytes(42, 32)}}, "a")
	_, w, _ := p.GenerateKey(t.Context(), KeyRequest{})
	w.MatDesc[KeyNameKey] = "gone"
	_, err := p.DecryptKey(t.Context(), w)
	mustFail(t, err, ErrNoMasterKey)
	if !strings.Contains(err.Error(), `"keyname":"gone"`) {
		t.Fatalf("message does not name the description: %v", err)
	}
}

func TestKeyringTrialDecryption(t *testing.T) {
	a, b := MasterKey{Name: "a", AES: testBytes(43, 32)}, MasterKey{Name: "b", AES: testBytes(44, 32)}
	pb, _ := NewKeyringProvider([]MasterKey{b}, "b")
	key, w, _ := pb.GenerateKey(t.Context(), KeyRequest{})
	delete(w.MatDesc, KeyNameKey) // as written by a client that records no name
	p, _ := NewKeyringProvider([]MasterKey{a, b}, "")
	got, err := p.DecryptKey(t.Context(), w)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("trial: %v", err)
	}
	// AESWrap too.
	blob, _ := wrapKeyAESWrap(b.AES, key)
	got, err = p.DecryptKey(t.Context(), WrappedKey{WrapAlg: WrapAESWrap, CEKAlg: CEKAlgGCM, Blob: blob, MatDesc: map[string]string{}})
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("AESWrap trial: %v", err)
	}
	// No key fits.
	pa, _ := NewKeyringProvider([]MasterKey{a}, "")
	_, err = pa.DecryptKey(t.Context(), w)
	mustFail(t, err, ErrNoMasterKey)
	// V1 AES/ECB is not trial-decrypted across several AES keys...
	v1 := WrappedKey{WrapAlg: WrapV1, CEKAlg: CEKAlgCBC, Blob: v1AESWrap(t, b.AES, key), MatDesc: map[string]string{}}
	_, err = p.DecryptKey(t.Context(), v1)
	mustFail(t, err, ErrNoMasterKey)
	// ...but works with exactly one.
	got, err = pb.DecryptKey(t.Context(), v1)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("V1 single key: %v", err)
	}
	// KMS wraps are not for a keyring.
	_, err = p.DecryptKey(t.Context(), WrappedKey{WrapAlg: WrapKMSContext})
	mustFail(t, err, ErrUnsupported)
	_, err = p.DecryptKey(t.Context(), WrappedKey{WrapAlg: "ROT13"})
	mustFail(t, err, ErrUnsupported)
	// Decrypt-only keyrings cannot generate.
	_, _, err = p.GenerateKey(t.Context(), KeyRequest{})
	mustFail(t, err, ErrNoMasterKey)
}

func TestKeyringRSA(t *testing.T) {
	priv := testRSA(t)
	r := MasterKey{Name: "r", RSA: priv}
	a := MasterKey{Name: "a", AES: testBytes(45, 32)}
	p, err := NewKeyringProvider([]MasterKey{a, r}, "r")
	if err != nil {
		t.Fatal(err)
	}
	key, w, err := p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM})
	if err != nil {
		t.Fatal(err)
	}
	if w.WrapAlg != WrapRSAOAEPSHA1 || w.MatDesc[KeyNameKey] != "r" {
		t.Fatalf("wrapped %+v", w)
	}
	got, err := p.DecryptKey(t.Context(), w)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("by name: %v", err)
	}
	delete(w.MatDesc, KeyNameKey)
	if got, err = p.DecryptKey(t.Context(), w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("trial: %v", err)
	}
	// Name pointing at a key of the wrong kind.
	w.MatDesc[KeyNameKey] = "a"
	_, err = p.DecryptKey(t.Context(), w)
	mustFail(t, err, ErrNoMasterKey)
	_, _, err = p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgCBC})
	mustFail(t, err, ErrUnsupported)
}

func TestNewKeyringProviderErrors(t *testing.T) {
	k := testBytes(46, 32)
	for name, c := range map[string]struct {
		keys []MasterKey
		with string
		want error
	}{
		"no name":   {[]MasterKey{{AES: k}}, "", ErrMalformed},
		"dup":       {[]MasterKey{{Name: "a", AES: k}, {Name: "a", AES: k}}, "", ErrMalformed},
		"both":      {[]MasterKey{{Name: "a", AES: k, RSA: testRSA(t)}}, "", ErrMalformed},
		"neither":   {[]MasterKey{{Name: "a"}}, "", ErrMalformed},
		"short aes": {[]MasterKey{{Name: "a", AES: k[:20]}}, "", ErrMalformed},
		"bad with":  {[]MasterKey{{Name: "a", AES: k}}, "b", ErrNoMasterKey},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewKeyringProvider(c.keys, c.with)
			mustFail(t, err, c.want)
		})
	}
}
