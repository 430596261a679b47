package interop

// The oracles: the official Go S3 Encryption Clients, configured for the
// local servers (s3ec-format.md §10).

import (
	"bytes"
	"io"
	"strings"
	"testing"

	s3ecclient "github.com/aws/amazon-s3-encryption-client-go/v3/client"
	s3ecmaterials "github.com/aws/amazon-s3-encryption-client-go/v3/materials"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	v1aws "github.com/aws/aws-sdk-go/aws"
	v1creds "github.com/aws/aws-sdk-go/aws/credentials"
	v1session "github.com/aws/aws-sdk-go/aws/session"
	v1kms "github.com/aws/aws-sdk-go/service/kms"
	v1s3 "github.com/aws/aws-sdk-go/service/s3"
	"github.com/aws/aws-sdk-go/service/s3/s3crypto"
)

// go3 returns a GO3 v3.1.0 client whose KMS keyring uses keyID. legacy
// enables the kms wrap and unauthenticated (CBC) content.
func go3(t testing.TB, e *env, keyID string, legacy bool) *s3ecclient.S3EncryptionClientV3 {
	t.Helper()
	kr := s3ecmaterials.NewKmsKeyring(e.KMS, keyID, func(o *s3ecmaterials.KeyringOptions) {
		o.EnableLegacyWrappingAlgorithms = legacy
	})
	cmm, err := s3ecmaterials.NewCryptographicMaterialsManager(kr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s3ecclient.New(e.S3, cmm, func(o *s3ecclient.EncryptionClientOptions) {
		o.EnableLegacyUnauthenticatedModes = legacy
		o.Logger = nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// go3InstructionEnv exports what GO3's instruction-file fallback needs: it
// builds its own client from config.LoadDefaultConfig, ignoring the wrapped
// client's endpoint (s3ec-format.md §6, §10). t.Setenv makes the calling test
// non-parallel, which it must be anyway.
func go3InstructionEnv(t *testing.T, e *env) {
	for _, kv := range e.S3SRV.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
	t.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")
}

// go3Read decrypts bucket/key with GO3.
func go3Read(t testing.TB, c *s3ecclient.S3EncryptionClientV3, e *env, key string) ([]byte, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &e.Bucket, Key: &key})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

// go1Session is an aws-sdk-go v1 session for MinIO; KMS clients get their
// own endpoint (go1KMS) so the S3 one does not apply to them.
func go1Session(t testing.TB, e *env) *v1session.Session {
	t.Helper()
	sess, err := v1session.NewSessionWithOptions(v1session.Options{
		SharedConfigState: v1session.SharedConfigDisable,
		Config: v1aws.Config{
			Region:           v1aws.String(e.S3SRV.Region),
			Endpoint:         v1aws.String(e.S3SRV.Endpoint),
			S3ForcePathStyle: v1aws.Bool(true),
			DisableSSL:       v1aws.Bool(true),
			Credentials:      v1creds.NewStaticCredentials(e.S3SRV.AccessKey, e.S3SRV.SecretKey, ""),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

func go1KMS(sess *v1session.Session, e *env) *v1kms.KMS {
	return v1kms.New(sess, &v1aws.Config{Endpoint: v1aws.String(e.KMSSRV.Endpoint), Region: v1aws.String(e.KMSSRV.Region)})
}

// go1Decrypter is a GO1 V2 decryption client that accepts every wrap and
// content algorithm csefs may meet: kms+context, kms, GCM, CBC. Its default
// load strategy reads headers, then the instruction file.
func go1Decrypter(t testing.TB, e *env) *s3crypto.DecryptionClientV2 {
	t.Helper()
	sess := go1Session(t, e)
	k := go1KMS(sess, e)
	cr := s3crypto.NewCryptoRegistry()
	for _, err := range []error{
		s3crypto.RegisterKMSContextWrapWithAnyCMK(cr, k),
		s3crypto.RegisterKMSWrapWithAnyCMK(cr, k),
		s3crypto.RegisterAESGCMContentCipher(cr),
		s3crypto.RegisterAESCBCContentCipher(cr, s3crypto.AESCBCPadder),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := s3crypto.NewDecryptionClientV2(sess, cr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func go1Read(c *s3crypto.DecryptionClientV2, e *env, key string) ([]byte, error) {
	out, err := c.GetObjectWithContext(ctx, &v1s3.GetObjectInput{Bucket: &e.Bucket, Key: &key})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

// go1Writer names one way GO1 can write an object.
type go1Writer struct {
	name string
	put  func(t testing.TB, e *env, keyID, key string, plain []byte)
}

func go1PutInput(e *env, key string, plain []byte) *v1s3.PutObjectInput {
	return &v1s3.PutObjectInput{Bucket: &e.Bucket, Key: &key, Body: bytes.NewReader(plain)}
}

var go1Writers = []go1Writer{
	{"GO1-V2-kms+context", func(t testing.TB, e *env, keyID, key string, plain []byte) {
		sess := go1Session(t, e)
		c, err := s3crypto.NewEncryptionClientV2(sess, s3crypto.AESGCMContentCipherBuilderV2(
			s3crypto.NewKMSContextKeyGenerator(go1KMS(sess, e), keyID, s3crypto.MaterialDescription{"JobflowId": aws.String("j-TEST")})))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutObjectWithContext(ctx, go1PutInput(e, key, plain)); err != nil {
			t.Fatalf("GO1 put: %v", err)
		}
	}},
	{"GO1-V2-kms+context-instruction", func(t testing.TB, e *env, keyID, key string, plain []byte) {
		sess := go1Session(t, e)
		c, err := s3crypto.NewEncryptionClientV2(sess, s3crypto.AESGCMContentCipherBuilderV2(
			s3crypto.NewKMSContextKeyGenerator(go1KMS(sess, e), keyID, s3crypto.MaterialDescription{})),
			func(o *s3crypto.EncryptionClientOptions) {
				o.SaveStrategy = s3crypto.S3SaveStrategy{Client: v1s3.New(sess)}
			})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutObjectWithContext(ctx, go1PutInput(e, key, plain)); err != nil {
			t.Fatalf("GO1 put: %v", err)
		}
	}},
	{"GO1-V1-kms-GCM", func(t testing.TB, e *env, keyID, key string, plain []byte) {
		sess := go1Session(t, e)
		c := s3crypto.NewEncryptionClient(sess, s3crypto.AESGCMContentCipherBuilder(s3crypto.NewKMSKeyGenerator(go1KMS(sess, e), keyID)))
		if _, err := c.PutObjectWithContext(ctx, go1PutInput(e, key, plain)); err != nil {
			t.Fatalf("GO1 put: %v", err)
		}
	}},
	{"GO1-V1-kms-CBC", func(t testing.TB, e *env, keyID, key string, plain []byte) {
		sess := go1Session(t, e)
		c := s3crypto.NewEncryptionClient(sess, s3crypto.AESCBCContentCipherBuilder(s3crypto.NewKMSKeyGenerator(go1KMS(sess, e), keyID), s3crypto.AESCBCPadder))
		if _, err := c.PutObjectWithContext(ctx, go1PutInput(e, key, plain)); err != nil {
			t.Fatalf("GO1 put: %v", err)
		}
	}},
}
