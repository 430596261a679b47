package interop

// The oracles: the official Go S3 Encryption Clients, configured for the
// local servers by e2e/oracle (s3ec-format.md §10). These wrappers fail the
// test instead of returning construction errors.

import (
	"strings"
	"testing"

	s3ecclient "github.com/aws/amazon-s3-encryption-client-go/v3/client"
	"github.com/aws/aws-sdk-go/service/s3/s3crypto"

	"github.com/csefs/csefs/e2e/oracle"
)

func (e *env) servers() oracle.Servers { return oracle.Servers{S3: e.S3SRV, KMS: e.KMSSRV} }

// go3 returns a GO3 v3.2.0 client whose KMS keyring uses keyID. legacy
// enables the kms wrap and unauthenticated (CBC) content.
func go3(t testing.TB, e *env, keyID string, legacy bool) *s3ecclient.S3EncryptionClientV3 {
	t.Helper()
	c, err := oracle.GO3(e.servers(), keyID, legacy)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// go3InstructionEnv exports what GO3's instruction-file fallback needs
// (oracle.GO3InstructionEnv). t.Setenv makes the calling test non-parallel,
// which it must be anyway.
func go3InstructionEnv(t *testing.T, e *env) {
	for _, kv := range oracle.GO3InstructionEnv(e.S3SRV, t.TempDir()) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// go3Read decrypts bucket/key with GO3.
func go3Read(t testing.TB, c *s3ecclient.S3EncryptionClientV3, e *env, key string) ([]byte, error) {
	return oracle.GO3Get(ctx, c, e.Bucket, key)
}

// go1Decrypter is a GO1 V2 decryption client that accepts every wrap and
// content algorithm csefs may meet. Its default load strategy reads headers,
// then the instruction file.
func go1Decrypter(t testing.TB, e *env) *s3crypto.DecryptionClientV2 {
	t.Helper()
	c, err := oracle.GO1Decrypter(e.servers(), oracle.GO1LoadDefault)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func go1Read(c *s3crypto.DecryptionClientV2, e *env, key string) ([]byte, error) {
	return oracle.GO1Get(ctx, c, e.Bucket, key)
}
