package interop

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	s3ecclient "github.com/aws/amazon-s3-encryption-client-go/v3/client"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/metadata"
)

// coreWraps are the wraps csefs writes, each with the key identifier its
// provider is configured with: kms+context by key id, legacy kms (EMRFS
// CSE-KMS) by alias, as fs.s3.cse.kms.keyId often is.
func coreWraps(e *env) []struct{ wrap, keyID string } {
	return []struct{ wrap, keyID string }{
		{cse.WrapKMSContext, e.KMSSRV.KeyID},
		{cse.WrapKMS, e.KMSSRV.AliasName},
	}
}

// checkOracles decrypts bucket/key with GO3 (keyring on keyID) and GO1 and
// compares both with want.
func checkOracles(t *testing.T, e *env, keyID, key string, want []byte) {
	t.Helper()
	got, err := go3Read(t, go3(t, e, keyID, true), e, key)
	if err != nil {
		t.Fatalf("GO3 read %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GO3 read %s: %d bytes differ from the %d written", key, len(got), len(want))
	}
	got, err = go1Read(go1Decrypter(t, e), e, key)
	if err != nil {
		t.Fatalf("GO1 read %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GO1 read %s: %d bytes differ from the %d written", key, len(got), len(want))
	}
}

// TestCoreWritesOraclesRead: every object the core writes in a single PUT,
// for each wrap, in metadata and instruction-file mode, decrypts byte-exact
// with GO3 and GO1 (and with the core itself).
func TestCoreWritesOraclesRead(t *testing.T) {
	e := newEnv(t)
	go3InstructionEnv(t, e)
	for _, w := range coreWraps(e) {
		p := newKMSProvider(t, e, w.keyID, w.wrap)
		for _, mode := range []writeMode{{}, {instruction: true}} {
			for _, n := range sizes {
				t.Run(fmt.Sprintf("%s/%s/%s", w.wrap, mode, sizeName(n)), func(t *testing.T) {
					key := fmt.Sprintf("core/%s/%s/%d", w.wrap, mode, n)
					plain := randBytes(t, n)
					coreWrite(t, e, p, key, plain, mode)

					body, meta := rawObject(t, e, key)
					if len(body) != n+cse.TagSize {
						t.Fatalf("stored body is %d bytes, want %d", len(body), n+cse.TagSize)
					}
					if _, err := metadata.Detect(meta); mode.instruction != (err != nil) {
						t.Fatalf("Detect(stored metadata) = %v in %s mode", err, mode)
					}
					checkOracles(t, e, w.keyID, key, plain)
					mustCoreRead(t, e, p, key, plain)
				})
			}
		}
	}
}

// TestCoreMultipartOraclesRead: a 64 MiB+3 object the core uploads in 8 MiB
// parts (one GCM stream, tag on the last part) decrypts with GO3 and GO1.
func TestCoreMultipartOraclesRead(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB upload; skipped in -short")
	}
	e := newEnv(t)
	go3InstructionEnv(t, e)
	plain := randBytes(t, bigSize)
	cases := coreWraps(e)
	modes := []writeMode{{multipart: true}, {multipart: true, instruction: true}}
	for i, w := range cases {
		mode := modes[i%len(modes)]
		t.Run(fmt.Sprintf("%s/%s", w.wrap, mode), func(t *testing.T) {
			p := newKMSProvider(t, e, w.keyID, w.wrap)
			key := fmt.Sprintf("core-mpu/%s", w.wrap)
			coreWrite(t, e, p, key, plain, mode)
			out, err := e.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &e.Bucket, Key: &key})
			if err != nil {
				t.Fatal(err)
			}
			if *out.ContentLength != bigSize+cse.TagSize {
				t.Fatalf("stored %d bytes, want %d", *out.ContentLength, bigSize+cse.TagSize)
			}
			checkOracles(t, e, w.keyID, key, plain)
			mustCoreRead(t, e, p, key, plain)
		})
	}
}

// TestGO3WritesCoreReads: GO3 kms+context objects, with no caller encryption
// context and with one, read back byte-exact through the core.
func TestGO3WritesCoreReads(t *testing.T) {
	e := newEnv(t)
	k := e.KMSSRV
	p := newKMSProvider(t, e, k.KeyID, cse.WrapKMSContext)
	c := go3(t, e, k.KeyID, false)
	ecs := map[string]map[string]string{
		"noEC":   nil,
		"withEC": {"department": "x", "Path": "s3://" + e.Bucket + "/a"},
	}
	for name, ec := range ecs {
		for _, n := range sizes {
			t.Run(name+"/"+sizeName(n), func(t *testing.T) {
				key := fmt.Sprintf("go3/%s/%d", name, n)
				plain := randBytes(t, n)
				wctx := context.Context(ctx)
				if ec != nil {
					wctx = context.WithValue(ctx, s3ecclient.EncryptionContext, ec)
				}
				if _, err := c.PutObject(wctx, &s3.PutObjectInput{Bucket: &e.Bucket, Key: &key, Body: bytes.NewReader(plain)}); err != nil {
					t.Fatalf("GO3 put: %v", err)
				}
				_, meta := rawObject(t, e, key)
				envl, err := metadata.Detect(meta)
				if err != nil {
					t.Fatalf("Detect: %v", err)
				}
				for k, v := range ec {
					if envl.Key.MatDesc[k] != v {
						t.Fatalf("matdesc %v lacks %s=%s", envl.Key.MatDesc, k, v)
					}
				}
				mustCoreRead(t, e, p, key, plain)
			})
		}
	}
}

// TestGO1WritesCoreReads: GO1 V2 kms+context (object metadata and
// instruction file) and V1 legacy kms with GCM and with CBC read back
// byte-exact through the core.
func TestGO1WritesCoreReads(t *testing.T) {
	e := newEnv(t)
	k := e.KMSSRV
	p := newKMSProvider(t, e, k.KeyID, cse.WrapKMSContext)
	for _, w := range oracle.GO1Writers {
		for _, n := range sizes {
			t.Run(w.Name+"/"+sizeName(n), func(t *testing.T) {
				key := fmt.Sprintf("go1/%s/%d", w.Name, n)
				plain := randBytes(t, n)
				if err := w.Put(ctx, e.servers(), k.KeyID, e.Bucket, key, plain); err != nil {
					t.Fatal(err)
				}
				mustCoreRead(t, e, p, key, plain)
			})
		}
	}
}
