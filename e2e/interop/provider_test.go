package interop

import (
	"testing"

	"github.com/csefs/csefs/cse"
)

// newKMSProviderErr is the core's KMS provider for keyID, writing with wrap
// (cse.WrapKMSContext or cse.WrapKMS); strict makes it send keyID on Decrypt.
func newKMSProviderErr(e *env, keyID, wrap string, strict ...bool) (cse.Provider, error) {
	p, err := cse.NewKMSProvider(ctx, e.KMS, keyID, cse.KMSOptions{Wrap: wrap, StrictKeyID: len(strict) > 0 && strict[0]})
	if err != nil {
		return nil, err // not a typed-nil Provider
	}
	return p, nil
}

// newKMSProvider is newKMSProviderErr that fails the test on error.
func newKMSProvider(t testing.TB, e *env, keyID, wrap string, strict ...bool) cse.Provider {
	t.Helper()
	p, err := newKMSProviderErr(e, keyID, wrap, strict...)
	if err != nil {
		t.Fatalf("NewKMSProvider(%s, %s): %v", keyID, wrap, err)
	}
	return p
}
