package interop

import (
	"testing"

	"github.com/csefs/csefs/cse"
)

// newKMSProvider returns the core's KMS provider for keyID with the given
// wrap (cse.WrapKMSContext or cse.WrapKMS).
func newKMSProvider(t testing.TB, e *env, keyID, wrap string) cse.Provider {
	t.Helper()
	p, err := newKMSProviderErr(e, keyID, wrap)
	if err != nil {
		t.Fatalf("NewKMSProvider(%s, %s): %v", keyID, wrap, err)
	}
	return p
}
