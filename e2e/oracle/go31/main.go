// Command go31 is the amazon-s3-encryption-client-go v3.1.0 interop oracle
// (GO31). It is a module of its own because the main module pins v3.2.0 and
// one module cannot require two versions of one module path; the e2e tests
// build it and run it as a subprocess (e2e/oracle31_test.go).
//
//	go31 get -endpoint URL -kms-endpoint URL -region R -bucket B -key K
//	go31 put -endpoint URL -kms-endpoint URL -region R -bucket B -key K -kms-key-id ID -in FILE
//
// get decrypts bucket/key with any KMS key (legacy kms wrap and CBC content
// allowed, as for EMRFS objects) and writes the plaintext to stdout. put
// encrypts FILE as a V2 object (AES/GCM, kms+context under ID). Credentials
// come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY only; no shared
// configuration is read. On any error go31 prints it to stderr, writes no
// plaintext and exits 1.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	s3ecclient "github.com/aws/amazon-s3-encryption-client-go/v3/client"
	s3ecmaterials "github.com/aws/amazon-s3-encryption-client-go/v3/materials"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "go31:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "get" && args[0] != "put") {
		return errors.New("usage: go31 get|put -endpoint URL -kms-endpoint URL -region R -bucket B -key K [-kms-key-id ID -in FILE]")
	}
	verb := args[0]
	fs := flag.NewFlagSet("go31 "+verb, flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "S3 endpoint URL (path style)")
	kmsEndpoint := fs.String("kms-endpoint", "", "KMS endpoint URL")
	region := fs.String("region", "us-east-1", "region")
	bucket := fs.String("bucket", "", "bucket")
	key := fs.String("key", "", "object key")
	keyID := fs.String("kms-key-id", "", "KMS key for put")
	in := fs.String("in", "", "plaintext file for put")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *endpoint == "" || *kmsEndpoint == "" || *bucket == "" || *key == "" {
		return errors.New("-endpoint, -kms-endpoint, -bucket and -key are required")
	}
	if verb == "put" && (*keyID == "" || *in == "") {
		return errors.New("put needs -kms-key-id and -in")
	}

	cfg := aws.Config{
		Region:      *region,
		Credentials: credentials.NewStaticCredentialsProvider(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
	}
	s3c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(*endpoint)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	kmsc := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(*kmsEndpoint) })

	var kr s3ecmaterials.Keyring
	if verb == "get" {
		kr = s3ecmaterials.NewKmsDecryptOnlyAnyKeyKeyring(kmsc, func(o *s3ecmaterials.KeyringOptions) {
			o.EnableLegacyWrappingAlgorithms = true
		})
	} else {
		kr = s3ecmaterials.NewKmsKeyring(kmsc, *keyID)
	}
	cmm, err := s3ecmaterials.NewCryptographicMaterialsManager(kr)
	if err != nil {
		return fmt.Errorf("materials manager: %w", err)
	}
	c, err := s3ecclient.New(s3c, cmm, func(o *s3ecclient.EncryptionClientOptions) {
		o.EnableLegacyUnauthenticatedModes = verb == "get"
		o.Logger = log.New(os.Stderr, "go31: s3ec: ", 0)
	})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}

	ctx := context.Background()
	if verb == "put" {
		plain, err := os.ReadFile(*in)
		if err != nil {
			return err
		}
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: bucket, Key: key, Body: bytes.NewReader(plain)}); err != nil {
			return fmt.Errorf("put %s: %w", *key, err)
		}
		return nil
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: key})
	if err != nil {
		return fmt.Errorf("get %s: %w", *key, err)
	}
	defer out.Body.Close()
	// The whole plaintext is read (and so authenticated) before any of it
	// is written, so a failed decryption writes nothing.
	plain, err := io.ReadAll(out.Body)
	if err != nil {
		return fmt.Errorf("get %s: %w", *key, err)
	}
	_, err = stdout.Write(plain)
	return err
}
