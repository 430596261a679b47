package keycache_test

import (
	"crypto/rand"
	"testing"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/cse/providertest"
	"github.com/csefs/csefs/keycache"
)

// The contract suite (providertest) on the key cache and the key-ahead pool.
// Both are decorators: DecryptKey must answer every tamper as the provider
// they wrap does (cse/contract_test.go has the reasons), the cache because
// its entries are found only by everything the wrap binds, the pool because
// it passes DecryptKey through.

// keyringAESErrors is what cse.KeyringProvider with an AES master key
// answers (the AES/GCM wrap), as in cse/contract_test.go.
var keyringAESErrors = map[providertest.Tamper][]error{
	providertest.CEKAlg:                            {cse.ErrAuthentication},
	providertest.MatDescAdd:                        {providertest.Accepted},
	providertest.MatDescChange:                     {providertest.Accepted},
	providertest.MatDescChange.Of(cse.KeyNameKey):  {cse.ErrNoMasterKey},
	providertest.MatDescRemove:                     {providertest.Accepted},
	providertest.WrapAlg:                           {cse.ErrUnsupported},
	providertest.WrapAlg.Of(cse.WrapRSAOAEPSHA1):   {cse.ErrNoMasterKey},
	providertest.WrapAlg.Of(cse.WrapRSAOAEPSHA256): {cse.ErrNoMasterKey},
	providertest.WrapAlg.Of(cse.WrapAESWrap):       {cse.ErrMalformed},
	providertest.BlobBit:                           {cse.ErrAuthentication},
	providertest.BlobTruncate:                      {cse.ErrMalformed},
}

// kmsContextErrors is what cse.KMSProvider with the kms+context wrap answers
// on a FakeKMS, as in cse/contract_test.go.
var kmsContextErrors = map[providertest.Tamper][]error{
	providertest.CEKAlg:                  {cse.ErrContextMismatch},
	providertest.MatDescAdd:              {cse.ErrContextMismatch},
	providertest.MatDescChange:           {cse.ErrContextMismatch},
	providertest.MatDescRemove:           {cse.ErrContextMismatch},
	providertest.WrapAlg:                 {cse.ErrUnsupported},
	providertest.WrapAlg.Of(cse.WrapKMS): {cse.ErrContextMismatch},
	providertest.BlobBit:                 {cse.ErrContextMismatch},
	providertest.BlobTruncate:            {cse.ErrContextMismatch},
}

// newKeyring returns a constructor of AES keyrings sharing one master key.
func newKeyring(t *testing.T) func(t *testing.T) cse.Provider {
	t.Helper()
	master := make([]byte, cse.KeySize)
	if _, err := rand.Read(master); err != nil {
		t.Fatal(err)
	}
	keys := []cse.MasterKey{{Name: "aes", AES: master}}
	return func(t *testing.T) cse.Provider {
		t.Helper()
		p, err := cse.NewKeyringProvider(keys, "aes")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// newKMS returns a constructor of KMS providers on one FakeKMS.
func newKMS(t *testing.T) func(t *testing.T) cse.Provider {
	t.Helper()
	fake := providertest.NewFakeKMS()
	return func(t *testing.T) cse.Provider {
		t.Helper()
		p, err := cse.NewKMSProvider(t.Context(), fake, "alias/providertest", cse.KMSOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
}

func newAhead(t *testing.T, p cse.Provider) *keycache.KeyAhead {
	t.Helper()
	a := keycache.NewKeyAhead(p, keycache.KeyAheadOptions{Depth: 2})
	t.Cleanup(a.Close)
	return a
}

func TestContractCache(t *testing.T) {
	inner := newKeyring(t)
	providertest.Run(t, func(t *testing.T) cse.Provider {
		return keycache.New(inner(t), keycache.Options{})
	}, providertest.Options{Errors: keyringAESErrors})
}

// TestContractCacheSmall runs the suite with a cache of two keys, so that
// entries are evicted (and zeroed) while callers hold copies.
func TestContractCacheSmall(t *testing.T) {
	inner := newKeyring(t)
	providertest.Run(t, func(t *testing.T) cse.Provider {
		return keycache.New(inner(t), keycache.Options{Size: 2})
	}, providertest.Options{Errors: keyringAESErrors})
}

func TestContractKeyAheadKMS(t *testing.T) {
	inner := newKMS(t)
	providertest.Run(t, func(t *testing.T) cse.Provider {
		return newAhead(t, inner(t))
	}, providertest.Options{Errors: kmsContextErrors})
}

func TestContractKeyAheadKeyring(t *testing.T) {
	inner := newKeyring(t)
	providertest.Run(t, func(t *testing.T) cse.Provider {
		return newAhead(t, inner(t))
	}, providertest.Options{Errors: keyringAESErrors})
}

// TestContractMountStack is the stack a --cse kms mount builds
// (mount/provider.go, mount/run.go): the cache over the key-ahead pool over
// KMS.
func TestContractMountStack(t *testing.T) {
	inner := newKMS(t)
	providertest.Run(t, func(t *testing.T) cse.Provider {
		return keycache.New(newAhead(t, inner(t)), keycache.Options{})
	}, providertest.Options{Errors: kmsContextErrors})
}
