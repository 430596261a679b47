// Package oracle configures the official Go S3 Encryption Clients against the
// local test servers (testenv.S3Server, testenv.KMSServer), so that tests can
// check csefs objects with an independent implementation (s3ec-format.md §10):
//
//   - GO4: amazon-s3-encryption-client-go v4.0.0 (go4.go), which writes the
//     key-committing V3 format by default;
//   - GO3: amazon-s3-encryption-client-go v3.2.0 (reads V3, writes V2);
//   - GO1: aws-sdk-go v1.55.8 service/s3/s3crypto (V2 and legacy V1 clients).
//
// GO31, amazon-s3-encryption-client-go v3.1.0 (reads and writes V2 only),
// cannot be in this module beside v3.2.0: it is the go31 command in the
// nested module ./go31, which the e2e tests build and run as a subprocess.
//
// Every helper returns an error instead of failing a test, so the package has
// no dependency on testing beyond testenv's types. It is used by e2e/interop
// (library level) and by the e2e mount tests.
package oracle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	s3ecclient "github.com/aws/amazon-s3-encryption-client-go/v3/client"
	s3ecmaterials "github.com/aws/amazon-s3-encryption-client-go/v3/materials"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	v1aws "github.com/aws/aws-sdk-go/aws"
	v1creds "github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/request"
	v1session "github.com/aws/aws-sdk-go/aws/session"
	v1kms "github.com/aws/aws-sdk-go/service/kms"
	v1s3 "github.com/aws/aws-sdk-go/service/s3"
	"github.com/aws/aws-sdk-go/service/s3/s3crypto"

	"github.com/csefs/csefs/e2e/testenv"
)

// Servers are the servers the oracles talk to.
type Servers struct {
	S3  *testenv.S3Server
	KMS *testenv.KMSServer
}

// s3Client is an aws-sdk-go-v2 S3 client for s.S3 that reads no host
// configuration (the same settings as testenv.S3Server.Client).
func (s Servers) s3Client() *s3.Client {
	cfg := aws.Config{
		Region:      s.S3.Region,
		Credentials: credentials.NewStaticCredentialsProvider(s.S3.AccessKey, s.S3.SecretKey, ""),
	}
	if s.S3.CA != nil {
		cfg.HTTPClient = s.S3.CA.HTTPClient() // an https server of the tests' own CA
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.S3.Endpoint)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

// kmsClient is an aws-sdk-go-v2 KMS client for s.KMS. local-kms accepts any
// credentials; the S3 ones are used.
func (s Servers) kmsClient() *kms.Client {
	cfg := aws.Config{
		Region:      s.KMS.Region,
		Credentials: credentials.NewStaticCredentialsProvider(s.S3.AccessKey, s.S3.SecretKey, ""),
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(s.KMS.Endpoint) })
}

// GO3 returns a GO3 v3.2.0 client whose KMS keyring uses keyID (any form KMS
// accepts). legacy enables the legacy kms wrap and unauthenticated (CBC)
// content for reading, as EMRFS CSE-KMS objects need.
//
// GO3 reads instruction files with a client of its own built from
// config.LoadDefaultConfig, not with the one given here: see
// GO3InstructionEnv.
func GO3(s Servers, keyID string, legacy bool) (*s3ecclient.S3EncryptionClientV3, error) {
	kr := s3ecmaterials.NewKmsKeyring(s.kmsClient(), keyID, func(o *s3ecmaterials.KeyringOptions) {
		o.EnableLegacyWrappingAlgorithms = legacy
	})
	cmm, err := s3ecmaterials.NewCryptographicMaterialsManager(kr)
	if err != nil {
		return nil, fmt.Errorf("oracle: GO3 materials manager: %w", err)
	}
	c, err := s3ecclient.New(s.s3Client(), cmm, func(o *s3ecclient.EncryptionClientOptions) {
		o.EnableLegacyUnauthenticatedModes = legacy
		o.Logger = nil
	})
	if err != nil {
		return nil, fmt.Errorf("oracle: GO3 client: %w", err)
	}
	return c, nil
}

// GO3InstructionEnv is the environment (KEY=VALUE) GO3's instruction-file
// fallback needs in this process: it builds its own S3 client from
// config.LoadDefaultConfig and so ignores the wrapped client's endpoint
// (s3ec-format.md §6, §10). tmp is a directory for the empty config files
// that keep the host's AWS configuration out. Tests apply it with t.Setenv.
func GO3InstructionEnv(s *testenv.S3Server, tmp string) []string {
	return append(s.Env(),
		"AWS_REQUEST_CHECKSUM_CALCULATION=when_required",
		"AWS_RESPONSE_CHECKSUM_VALIDATION=when_required",
		"AWS_CONFIG_FILE="+tmp+"/no-aws-config",
		"AWS_SHARED_CREDENTIALS_FILE="+tmp+"/no-aws-credentials",
		"AWS_PROFILE=",
	)
}

// GO3Put encrypts plain as bucket/key with c. A non-nil ec is the caller
// encryption context, stored in the matdesc beside aws:x-amz-cek-alg.
func GO3Put(ctx context.Context, c *s3ecclient.S3EncryptionClientV3, bucket, key string, plain []byte, ec map[string]string) error {
	if ec != nil {
		ctx = context.WithValue(ctx, s3ecclient.EncryptionContext, ec)
	}
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(plain)})
	if err != nil {
		return fmt.Errorf("oracle: GO3 put %s: %w", key, err)
	}
	return nil
}

// GO3Get decrypts bucket/key with c.
func GO3Get(ctx context.Context, c *s3ecclient.S3EncryptionClientV3, bucket, key string) ([]byte, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("oracle: GO3 get %s: %w", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("oracle: GO3 get %s: %w", key, err)
	}
	return b, nil
}

// GO1Session is an aws-sdk-go v1 session for the S3 server that reads no
// shared configuration. KMS clients get their own endpoint (GO1KMS).
func GO1Session(s Servers) (*v1session.Session, error) {
	sess, err := v1session.NewSessionWithOptions(v1session.Options{
		SharedConfigState: v1session.SharedConfigDisable,
		Config: v1aws.Config{
			Region:           v1aws.String(s.S3.Region),
			Endpoint:         v1aws.String(s.S3.Endpoint),
			S3ForcePathStyle: v1aws.Bool(true),
			DisableSSL:       v1aws.Bool(true),
			Credentials:      v1creds.NewStaticCredentials(s.S3.AccessKey, s.S3.SecretKey, ""),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("oracle: GO1 session: %w", err)
	}
	return sess, nil
}

// GO1KMS is a v1 KMS client for the KMS server.
func GO1KMS(sess *v1session.Session, s Servers) *v1kms.KMS {
	return v1kms.New(sess, &v1aws.Config{Endpoint: v1aws.String(s.KMS.Endpoint), Region: v1aws.String(s.KMS.Region)})
}

// GO1Load selects where a GO1 decryption client looks for the envelope.
type GO1Load int

const (
	// GO1LoadDefault: object metadata, then <key>.instruction.
	GO1LoadDefault GO1Load = iota
	// GO1LoadInstruction: only the instruction file (s3crypto.S3LoadStrategy).
	GO1LoadInstruction
)

// GO1Decrypter is a GO1 V2 decryption client that accepts every wrap and
// content algorithm csefs may meet: kms+context, kms, GCM, CBC.
func GO1Decrypter(s Servers, load GO1Load) (*s3crypto.DecryptionClientV2, error) {
	sess, err := GO1Session(s)
	if err != nil {
		return nil, err
	}
	k := GO1KMS(sess, s)
	cr := s3crypto.NewCryptoRegistry()
	if err := errors.Join(
		s3crypto.RegisterKMSContextWrapWithAnyCMK(cr, k),
		s3crypto.RegisterKMSWrapWithAnyCMK(cr, k),
		s3crypto.RegisterAESGCMContentCipher(cr),
		s3crypto.RegisterAESCBCContentCipher(cr, s3crypto.AESCBCPadder),
	); err != nil {
		return nil, fmt.Errorf("oracle: GO1 registry: %w", err)
	}
	c, err := s3crypto.NewDecryptionClientV2(sess, cr, func(o *s3crypto.DecryptionClientOptions) {
		if load == GO1LoadInstruction {
			o.LoadStrategy = s3crypto.S3LoadStrategy{Client: v1s3.New(sess)}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("oracle: GO1 decryption client: %w", err)
	}
	return c, nil
}

// GO1Get decrypts bucket/key with c.
func GO1Get(ctx context.Context, c *s3crypto.DecryptionClientV2, bucket, key string) ([]byte, error) {
	out, err := c.GetObjectWithContext(ctx, &v1s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("oracle: GO1 get %s: %w", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("oracle: GO1 get %s: %w", key, err)
	}
	return b, nil
}

// GO1Writer is one way GO1 can write an object.
type GO1Writer struct {
	Name string
	// Instruction reports that the envelope goes to <key>.instruction.
	Instruction bool
	// CBC reports AES/CBC/PKCS5Padding content (no tag, padded).
	CBC bool
	// Put encrypts plain under keyID and stores it as bucket/key.
	Put func(ctx context.Context, s Servers, keyID, bucket, key string, plain []byte) error
}

// go1Putter is what both GO1 encryption clients offer.
type go1Putter interface {
	PutObjectWithContext(v1aws.Context, *v1s3.PutObjectInput, ...request.Option) (*v1s3.PutObjectOutput, error)
}

// go1Put stores plain as bucket/key with the client mk makes.
func go1Put[C go1Putter](ctx context.Context, mk func() (C, error), bucket, key string, plain []byte) error {
	c, err := mk()
	if err != nil {
		return err
	}
	if _, err := c.PutObjectWithContext(ctx, &v1s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(plain)}); err != nil {
		return fmt.Errorf("oracle: GO1 put %s: %w", key, err)
	}
	return nil
}

func go1V2(s Servers, keyID string, instruction bool) (*s3crypto.EncryptionClientV2, error) {
	sess, err := GO1Session(s)
	if err != nil {
		return nil, err
	}
	md := s3crypto.MaterialDescription{"JobflowId": v1aws.String("j-TEST")}
	if instruction {
		md = s3crypto.MaterialDescription{}
	}
	return s3crypto.NewEncryptionClientV2(sess, s3crypto.AESGCMContentCipherBuilderV2(
		s3crypto.NewKMSContextKeyGenerator(GO1KMS(sess, s), keyID, md)),
		func(o *s3crypto.EncryptionClientOptions) {
			if instruction {
				o.SaveStrategy = s3crypto.S3SaveStrategy{Client: v1s3.New(sess)}
			}
		})
}

// go1V1 is the deprecated V1 encryption client (legacy kms wrap), GCM or
// CBC content; CBC is EMRFS CSE-KMS's default.
func go1V1(s Servers, keyID string, cbc bool) (*s3crypto.EncryptionClient, error) {
	sess, err := GO1Session(s)
	if err != nil {
		return nil, err
	}
	gen := s3crypto.NewKMSKeyGenerator(GO1KMS(sess, s), keyID)
	var b s3crypto.ContentCipherBuilder = s3crypto.AESGCMContentCipherBuilder(gen)
	if cbc {
		b = s3crypto.AESCBCContentCipherBuilder(gen, s3crypto.AESCBCPadder)
	}
	return s3crypto.NewEncryptionClient(sess, b), nil
}

// GO1Writers are the GO1 writers csefs must read: V2 kms+context in object
// metadata and in an instruction file, V1 legacy kms with GCM and with CBC.
var GO1Writers = []GO1Writer{
	{Name: "GO1-V2-kms+context", Put: func(ctx context.Context, s Servers, keyID, bucket, key string, plain []byte) error {
		return go1Put(ctx, func() (*s3crypto.EncryptionClientV2, error) { return go1V2(s, keyID, false) }, bucket, key, plain)
	}},
	{Name: "GO1-V2-kms+context-instruction", Instruction: true, Put: func(ctx context.Context, s Servers, keyID, bucket, key string, plain []byte) error {
		return go1Put(ctx, func() (*s3crypto.EncryptionClientV2, error) { return go1V2(s, keyID, true) }, bucket, key, plain)
	}},
	{Name: "GO1-V1-kms-GCM", Put: func(ctx context.Context, s Servers, keyID, bucket, key string, plain []byte) error {
		return go1Put(ctx, func() (*s3crypto.EncryptionClient, error) { return go1V1(s, keyID, false) }, bucket, key, plain)
	}},
	{Name: "GO1-V1-kms-CBC", CBC: true, Put: func(ctx context.Context, s Servers, keyID, bucket, key string, plain []byte) error {
		return go1Put(ctx, func() (*s3crypto.EncryptionClient, error) { return go1V1(s, keyID, true) }, bucket, key, plain)
	}},
}

// FindGO1Writer returns the writer named name, or nil.
func FindGO1Writer(name string) *GO1Writer {
	for i := range GO1Writers {
		if GO1Writers[i].Name == name {
			return &GO1Writers[i]
		}
	}
	return nil
}
