package oracle

import (
	"bytes"
	"context"
	"fmt"
	"io"

	s3ec4client "github.com/aws/amazon-s3-encryption-client-go/v4/client"
	s3ec4commitment "github.com/aws/amazon-s3-encryption-client-go/v4/commitment"
	s3ec4materials "github.com/aws/amazon-s3-encryption-client-go/v4/materials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// GO4Policy is the v4 client's commitment policy.
type GO4Policy = s3ec4commitment.CommitmentPolicy

// GO4 policies, re-exported so that callers need not import the client.
const (
	GO4ForbidEncryptAllowDecrypt    = s3ec4commitment.FORBID_ENCRYPT_ALLOW_DECRYPT
	GO4RequireEncryptAllowDecrypt   = s3ec4commitment.REQUIRE_ENCRYPT_ALLOW_DECRYPT
	GO4RequireEncryptRequireDecrypt = s3ec4commitment.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
)

// GO4 returns a client of amazon-s3-encryption-client-go v4.0.0 (the current
// official Go client) whose KMS keyring uses keyID, under the commitment
// policy (its default is GO4RequireEncryptRequireDecrypt: it writes V3,
// suite 115, and reads only committing objects). v4.0.0 has no raw AES or
// RSA keyring and writes object metadata only, never instruction files; it
// reads instruction files with a client of its own, as GO3 does (see
// GO3InstructionEnv).
func GO4(s Servers, keyID string, policy s3ec4commitment.CommitmentPolicy) (*s3ec4client.S3EncryptionClientV4, error) {
	kr := s3ec4materials.NewKmsKeyring(s.kmsClient(), keyID)
	cmm, err := s3ec4materials.NewCryptographicMaterialsManager(kr)
	if err != nil {
		return nil, fmt.Errorf("oracle: GO4 materials manager: %w", err)
	}
	c, err := s3ec4client.New(s.s3Client(), cmm, func(o *s3ec4client.EncryptionClientOptions) {
		o.CommitmentPolicy = policy
		o.Logger = nil
	})
	if err != nil {
		return nil, fmt.Errorf("oracle: GO4 client: %w", err)
	}
	return c, nil
}

// GO4Put encrypts plain as bucket/key with c. A non-nil ec is the caller
// encryption context, stored beside aws:x-amz-cek-alg.
func GO4Put(ctx context.Context, c *s3ec4client.S3EncryptionClientV4, bucket, key string, plain []byte, ec map[string]string) error {
	if ec != nil {
		ctx = context.WithValue(ctx, s3ec4client.EncryptionContext, ec)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(plain)}); err != nil {
		return fmt.Errorf("oracle: GO4 put %s: %w", key, err)
	}
	return nil
}

// GO4Get decrypts bucket/key with c.
func GO4Get(ctx context.Context, c *s3ec4client.S3EncryptionClientV4, bucket, key string) ([]byte, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("oracle: GO4 get %s: %w", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("oracle: GO4 get %s: %w", key, err)
	}
	return b, nil
}
