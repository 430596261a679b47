package cse_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/cse/providertest"
)

// The contract suite (providertest) on every provider of this package. The
// tables say what each provider's DecryptKey answers each tamper with, and
// why.

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, cse.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// contractRSA returns the committed test key testdata/rsa2048-test-key.pem
// and its PEM text.
func contractRSA(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "rsa2048-test-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("testdata/rsa2048-test-key.pem: no PEM block")
	}
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k, string(data)
}

func mustProvider[P cse.Provider](t *testing.T, p P, err error) cse.Provider {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Shorthands for the tables.
type tamper = providertest.Tamper

const (
	cekAlg        = providertest.CEKAlg
	matDescAdd    = providertest.MatDescAdd
	matDescChange = providertest.MatDescChange
	matDescRemove = providertest.MatDescRemove
	wrapAlg       = providertest.WrapAlg
	blobBit       = providertest.BlobBit
	blobTruncate  = providertest.BlobTruncate
)

var accepted = providertest.Accepted

// with returns base with the entries of over replacing or adding to its own.
func with(base, over map[tamper][]error) map[tamper][]error {
	m := maps.Clone(base)
	maps.Copy(m, over)
	return m
}

// keyringAESErrors is KeyringProvider with an AES master key: the AES/GCM
// wrap.
var keyringAESErrors = map[tamper][]error{
	// The wrap's additional data is the content algorithm.
	cekAlg: {cse.ErrAuthentication},
	// The wrap does not bind the materials description (s3ec-format §4.3).
	// "keyname" only selects the master key: a name the keyring does not
	// hold is no key, and without a name every AES key is tried, which
	// finds the right one.
	matDescAdd:                       {accepted},
	matDescChange:                    {accepted},
	matDescChange.Of(cse.KeyNameKey): {cse.ErrNoMasterKey},
	matDescRemove:                    {accepted},
	// kms, kms+context and unknown wraps are not a local keyring's; the RSA
	// wraps need an RSA key and "keyname" names an AES one; an AESWrap
	// blob is a multiple of 8 bytes and AES/GCM's 60 are not.
	wrapAlg:                           {cse.ErrUnsupported},
	wrapAlg.Of(cse.WrapRSAOAEPSHA1):   {cse.ErrNoMasterKey},
	wrapAlg.Of(cse.WrapRSAOAEPSHA256): {cse.ErrNoMasterKey},
	wrapAlg.Of(cse.WrapAESWrap):       {cse.ErrMalformed},
	blobBit:                           {cse.ErrAuthentication},
	// The blob's size is checked before the tag.
	blobTruncate: {cse.ErrMalformed},
}

// keyringRSAErrors is KeyringProvider with an RSA master key: the
// RSA-OAEP-SHA1 wrap.
var keyringRSAErrors = with(keyringAESErrors, map[tamper][]error{
	// The pseudo key names the content algorithm, but only as "115" (V3)
	// or AES/GCM/NoPadding (everything else, as the Java client binds it
	// for ranged CTR reads too, J3 #288; UnwrapKeyRSAOAEPSHA1): a V2 key
	// read as CBC unwraps, a V3 key read as anything else does not.
	cekAlg.Of(cse.CEKAlgCBC).For(cse.CEKAlgGCM): {accepted},
	// The AES wraps need an AES key and "keyname" names an RSA one; OAEP
	// with SHA-256 does not open an OAEP-SHA1 blob.
	wrapAlg.Of(cse.WrapAESGCM):        {cse.ErrNoMasterKey},
	wrapAlg.Of(cse.WrapAESWrap):       {cse.ErrNoMasterKey},
	wrapAlg.Of(cse.WrapRSAOAEPSHA256): {cse.ErrAuthentication},
	// RSA decryption of a changed or shorter ciphertext fails.
	blobTruncate: {cse.ErrAuthentication},
})

// kmsContextErrors is KMSProvider with the kms+context wrap on a FakeKMS.
// KMS answers InvalidCiphertextException for a context other than the
// blob's and for a damaged blob alike, which KMSProvider reports as
// ErrContextMismatch (the likely cause when there is a context).
var kmsContextErrors = map[tamper][]error{
	// The tamper changes "aws:x-amz-cek-alg" with the CEKAlg: KMS refuses
	// the context.
	cekAlg: {cse.ErrContextMismatch},
	// The materials description is the encryption context. A changed or
	// missing "aws:x-amz-cek-alg" is refused before KMS is asked.
	matDescAdd:    {cse.ErrContextMismatch},
	matDescChange: {cse.ErrContextMismatch},
	matDescRemove: {cse.ErrContextMismatch},
	// Local wraps are not KMS's; the legacy kms wrap needs "kms_cmk_id".
	wrapAlg:                 {cse.ErrUnsupported},
	wrapAlg.Of(cse.WrapKMS): {cse.ErrContextMismatch},
	blobBit:                 {cse.ErrContextMismatch},
	blobTruncate:            {cse.ErrContextMismatch},
}

// kmsLegacyErrors is KMSProvider with the legacy kms wrap: its context is
// {"kms_cmk_id": key} and the caller's entries, without the content
// algorithm, so a changed CEKAlg unwraps (EMRFS CSE-KMS binds nothing
// more).
var kmsLegacyErrors = with(kmsContextErrors, map[tamper][]error{
	cekAlg:                         {accepted},
	wrapAlg.Of(cse.WrapKMSContext): {cse.ErrContextMismatch}, // no "aws:x-amz-cek-alg"
})

// execErrors is the example exec provider (AES/GCM, as keyringAESErrors):
// every refusal of the program is ErrKeyAccess, whatever its reason.
var execErrors = map[tamper][]error{
	cekAlg:                           {cse.ErrKeyAccess},
	matDescAdd:                       {accepted},
	matDescChange:                    {accepted},
	matDescChange.Of(cse.KeyNameKey): {cse.ErrKeyAccess}, // "wrapped with key X, this provider holds Y"
	matDescRemove:                    {accepted},         // the program checks the name only when there is one
	wrapAlg:                          {cse.ErrKeyAccess},
	blobBit:                          {cse.ErrKeyAccess},
	blobTruncate:                     {cse.ErrKeyAccess},
}

// keyringFileLocal is what Keyring.Writer of a local key changes from
// KeyringProvider: its reader sends kms wraps to the KMS key "keyname"
// names, and a local key's name is none (the keyring holds a KMS key).
var keyringFileLocal = map[tamper][]error{
	wrapAlg.Of(cse.WrapKMSContext): {cse.ErrNoMasterKey},
	wrapAlg.Of(cse.WrapKMS):        {cse.ErrNoMasterKey},
}

// keyringFileKMSErrors is Keyring.Writer of a KMS key: kms+context with
// "keyname" in the context.
var keyringFileKMSErrors = with(kmsContextErrors, map[tamper][]error{
	// Another name is no key of the keyring; without a name the first KMS
	// key is asked, and KMS refuses the context, which lost "keyname".
	matDescChange.Of(cse.KeyNameKey): {cse.ErrNoMasterKey},
	// "keyname" names a KMS key, and the wrap is not KMS's.
	wrapAlg: {cse.ErrNoMasterKey},
})

func TestContractKeyringAES(t *testing.T) {
	keys := []cse.MasterKey{{Name: "other", AES: randomKey(t)}, {Name: "aes", AES: randomKey(t)}}
	providertest.Run(t, func(t *testing.T) cse.Provider {
		p, err := cse.NewKeyringProvider(keys, "aes")
		return mustProvider(t, p, err)
	}, providertest.Options{Errors: keyringAESErrors})
}

func TestContractKeyringRSA(t *testing.T) {
	priv, _ := contractRSA(t)
	keys := []cse.MasterKey{{Name: "rsa", RSA: priv}, {Name: "aes", AES: randomKey(t)}}
	providertest.Run(t, func(t *testing.T) cse.Provider {
		p, err := cse.NewKeyringProvider(keys, "rsa")
		return mustProvider(t, p, err)
	}, providertest.Options{Errors: keyringRSAErrors})
}

// contractKeyringFile is a version 2 keyring file with an AES key, an RSA key
// and a KMS key (on fake).
func contractKeyringFile(t *testing.T, fake *providertest.FakeKMS) func(t *testing.T) *cse.Keyring {
	t.Helper()
	_, pemText := contractRSA(t)
	data, err := json.Marshal(map[string]any{"version": 2, "keys": []map[string]string{
		{"name": "aes", "aes256": base64.StdEncoding.EncodeToString(randomKey(t))},
		{"name": "rsa", "rsa_private_key_pem": pemText},
		{"name": "kms", "kms_key_id": "alias/providertest"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	opt := cse.KeyringOptions{KMS: func(keyID string) (cse.Provider, error) {
		return cse.NewKMSProvider(context.Background(), fake, keyID, cse.KMSOptions{})
	}}
	return func(t *testing.T) *cse.Keyring {
		t.Helper()
		kr, err := cse.LoadKeyring(data, opt)
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
}

func TestContractKeyringFile(t *testing.T) {
	load := contractKeyringFile(t, providertest.NewFakeKMS())
	for _, c := range []struct {
		name string
		errs map[tamper][]error
	}{
		{"aes", with(keyringAESErrors, keyringFileLocal)},
		{"rsa", with(keyringRSAErrors, keyringFileLocal)},
		{"kms", keyringFileKMSErrors},
	} {
		name := c.name
		t.Run(name, func(t *testing.T) {
			providertest.Run(t, func(t *testing.T) cse.Provider {
				p, err := load(t).Writer(name)
				return mustProvider(t, p, err)
			}, providertest.Options{Errors: c.errs})
		})
	}
}

func TestContractKMS(t *testing.T) {
	fake := providertest.NewFakeKMS()
	for name, c := range map[string]struct {
		opt  cse.KMSOptions
		algs []string
		errs map[tamper][]error
	}{
		"kms+context": {cse.KMSOptions{}, nil, kmsContextErrors},
		"strict":      {cse.KMSOptions{StrictKeyID: true}, nil, kmsContextErrors},
		// The legacy wrap is V2 only (a V3 object names kms+context).
		"kms": {cse.KMSOptions{Wrap: cse.WrapKMS}, []string{cse.CEKAlgGCM}, kmsLegacyErrors},
	} {
		t.Run(name, func(t *testing.T) {
			providertest.Run(t, func(t *testing.T) cse.Provider {
				p, err := cse.NewKMSProvider(t.Context(), fake, "alias/providertest", c.opt)
				return mustProvider(t, p, err)
			}, providertest.Options{CEKAlgs: c.algs, Errors: c.errs})
		})
	}
}

func TestContractExec(t *testing.T) {
	bin := cse.BuildExampleProvider(t) // once for every subtest
	env := []string{"CSEFS_EXAMPLE_KEY=" + base64.StdEncoding.EncodeToString(randomKey(t))}
	providertest.Run(t, func(t *testing.T) cse.Provider {
		p, err := cse.NewExecProvider(bin, cse.ExecOptions{Env: env})
		return mustProvider(t, p, err)
	}, providertest.Options{Rounds: 2, Errors: execErrors})
}

// routerToKeyringErrors is a Router writing with the AES keyring and
// reading with it, then KMS: the keyring declines kms wraps
// (ErrUnsupported), and KMSProvider finds no "aws:x-amz-cek-alg" or
// "kms_cmk_id" in the keyring's materials description.
var routerToKeyringErrors = with(keyringAESErrors, map[tamper][]error{
	wrapAlg.Of(cse.WrapKMSContext): {cse.ErrContextMismatch},
	wrapAlg.Of(cse.WrapKMS):        {cse.ErrContextMismatch},
})

// routerToKMSErrors is a Router writing with KMS and reading with it, then
// the RSA keyring: KMS declines the local wraps (ErrUnsupported), and the
// keyring, without a "keyname", tries its keys of the right kind and none
// unwraps (ErrNoMasterKey); both decline an unknown wrap.
var routerToKMSErrors = with(kmsContextErrors, map[tamper][]error{
	wrapAlg:                              {cse.ErrNoMasterKey},
	wrapAlg.Of(providertest.UnknownWrap): {cse.ErrUnsupported},
})

func TestContractRouter(t *testing.T) {
	fake := providertest.NewFakeKMS()
	priv, _ := contractRSA(t)
	aes := []cse.MasterKey{{Name: "aes", AES: randomKey(t)}}
	rsaKeys := []cse.MasterKey{{Name: "rsa", RSA: priv}}
	newAES := func(t *testing.T) cse.Provider {
		p, err := cse.NewKeyringProvider(aes, "aes")
		return mustProvider(t, p, err)
	}
	newRSA := func(t *testing.T) cse.Provider {
		p, err := cse.NewKeyringProvider(rsaKeys, "rsa")
		return mustProvider(t, p, err)
	}
	newKMS := func(t *testing.T) cse.Provider {
		p, err := cse.NewKMSProvider(t.Context(), fake, "alias/providertest", cse.KMSOptions{})
		return mustProvider(t, p, err)
	}
	t.Run("to-keyring", func(t *testing.T) {
		// New objects go to the AES keyring; reads try it, then KMS.
		providertest.Run(t, func(t *testing.T) cse.Provider {
			r, err := cse.NewRouter([]cse.Rule{{Prefix: "", Provider: newAES(t)}, {Prefix: "kms/", Provider: newKMS(t)}})
			return mustProvider(t, r, err)
		}, providertest.Options{Errors: routerToKeyringErrors})
	})
	t.Run("to-kms", func(t *testing.T) {
		// New objects go to KMS; reads try KMS, then the RSA keyring.
		providertest.Run(t, func(t *testing.T) cse.Provider {
			r, err := cse.NewRouter([]cse.Rule{{Prefix: "", Provider: newKMS(t)}, {Prefix: "local/", Provider: newRSA(t)}})
			return mustProvider(t, r, err)
		}, providertest.Options{Errors: routerToKMSErrors})
	})
}
