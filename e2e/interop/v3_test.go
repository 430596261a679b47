package interop

// The S3EC V3 format (key commitment, suite 115) against the official Go
// clients: v4.0.0 (GO4), which writes it by default, and v3.2.0 (GO3), which
// reads it.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	s3ec4client "github.com/aws/amazon-s3-encryption-client-go/v4/client"
	s3ec4commitment "github.com/aws/amazon-s3-encryption-client-go/v4/commitment"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/metadata"
)

var updateGolden = flag.Bool("update", false, "write missing golden vectors (existing files are never changed)")

func go4(t testing.TB, e *env, policy s3ec4commitment.CommitmentPolicy) *s3ec4client.S3EncryptionClientV4 {
	t.Helper()
	c, err := oracle.GO4(e.servers(), e.KMSSRV.KeyID, policy)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var go4Policies = []struct {
	name   string
	policy s3ec4commitment.CommitmentPolicy
	v3     bool // it writes V3
}{
	{"GO4-default(REQUIRE_ENCRYPT_REQUIRE_DECRYPT)", oracle.GO4RequireEncryptRequireDecrypt, true},
	{"GO4-REQUIRE_ENCRYPT_ALLOW_DECRYPT", oracle.GO4RequireEncryptAllowDecrypt, true},
	{"GO4-FORBID_ENCRYPT_ALLOW_DECRYPT", oracle.GO4ForbidEncryptAllowDecrypt, false},
}

// TestGO4WritesCoreReads: objects GO4 writes under each policy decrypt
// byte-exact in the core; the committing ones are V3 (x-amz-c "115").
func TestGO4WritesCoreReads(t *testing.T) {
	e := newEnv(t)
	p := newKMSProvider(t, e, e.KMSSRV.KeyID, cse.WrapKMSContext)
	for _, pol := range go4Policies {
		c := go4(t, e, pol.policy)
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/%s", pol.name, sizeName(n)), func(t *testing.T) {
				key := fmt.Sprintf("go4/%s/%d", pol.name, n)
				plain := randBytes(t, n)
				if err := oracle.GO4Put(ctx, c, e.Bucket, key, plain, map[string]string{"dept": "x"}); err != nil {
					t.Fatal(err)
				}
				_, meta := rawObject(t, e, key)
				envl, err := metadata.Detect(meta)
				if err != nil {
					t.Fatal(err)
				}
				if got := envl.Version == 3; got != pol.v3 {
					t.Fatalf("GO4 wrote version %d", envl.Version)
				}
				mustCoreRead(t, e, p, key, plain)
			})
		}
	}
}

// TestCoreWritesGO4Reads: V3 objects the core writes (metadata, instruction
// file, multipart) decrypt with GO4 under every policy and with GO3 v3.2.0;
// V2 objects decrypt with GO4 under the ALLOW_DECRYPT policies and are
// refused under REQUIRE_ENCRYPT_REQUIRE_DECRYPT.
func TestCoreWritesGO4Reads(t *testing.T) {
	e := newEnv(t)
	go3InstructionEnv(t, e)
	p := newKMSProvider(t, e, e.KMSSRV.KeyID, cse.WrapKMSContext)
	g3 := go3(t, e, e.KMSSRV.KeyID, false)
	for _, mode := range []writeMode{{v3: true}, {v3: true, instruction: true}, {v3: true, multipart: true}, {}, {instruction: true}} {
		ns := []int{0, 1, 17, 5<<20 + 7}
		if mode.multipart {
			ns = []int{2*partSize + 5}
		}
		for _, n := range ns {
			t.Run(fmt.Sprintf("%s/%s", mode, sizeName(n)), func(t *testing.T) {
				key := fmt.Sprintf("core/%s/%d", mode, n)
				plain := randBytes(t, n)
				coreWrite(t, e, p, key, plain, mode)
				mustCoreRead(t, e, p, key, plain)
				for _, pol := range go4Policies {
					got, err := oracle.GO4Get(ctx, go4(t, e, pol.policy), e.Bucket, key)
					if !mode.v3 && pol.policy == oracle.GO4RequireEncryptRequireDecrypt {
						if err == nil {
							t.Fatalf("%s read a V2 object", pol.name)
						}
						continue
					}
					if err != nil || !bytes.Equal(got, plain) {
						t.Fatalf("%s read: %v", pol.name, err)
					}
				}
				got, err := go3Read(t, g3, e, key)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("GO3 v3.2.0 read: %v", err)
				}
			})
		}
	}
}

// TestV3Tampered: a V3 object with a changed x-amz-d, x-amz-i, x-amz-c or
// x-amz-3, a truncated commitment or an unknown wrap code fails in the core,
// and the key substitution key commitment exists for (another object's
// x-amz-3, which KMS unwraps fine) is caught by the commitment.
func TestV3Tampered(t *testing.T) {
	e := newEnv(t)
	p := newKMSProvider(t, e, e.KMSSRV.KeyID, cse.WrapKMSContext)
	other := "v3/other"
	coreWrite(t, e, p, other, []byte("other"), writeMode{v3: true})
	_, otherMeta := rawObject(t, e, other)
	flip := func(s string) string {
		b, _ := base64.StdEncoding.DecodeString(s)
		b[len(b)/2] ^= 1
		return base64.StdEncoding.EncodeToString(b)
	}
	// The SDK returns user-metadata keys in lower case, without the prefix.
	get := func(meta map[string]string, k string) string { return meta[k] }
	set := func(meta map[string]string, k, v string) { meta[k] = v }
	tests := []struct {
		name   string
		mutate func(meta map[string]string)
		want   error
	}{
		{"x-amz-d changed", func(m map[string]string) { set(m, "x-amz-d", flip(get(m, "x-amz-d"))) }, cse.ErrCommitment},
		{"x-amz-i changed", func(m map[string]string) { set(m, "x-amz-i", flip(get(m, "x-amz-i"))) }, cse.ErrCommitment},
		{"x-amz-3 of another object", func(m map[string]string) { set(m, "x-amz-3", get(otherMeta, "x-amz-3")) }, cse.ErrCommitment},
		{"x-amz-3 changed", func(m map[string]string) { set(m, "x-amz-3", flip(get(m, "x-amz-3"))) }, cse.ErrKeyAccess},
		{"x-amz-c 114", func(m map[string]string) { set(m, "x-amz-c", "114") }, metadata.ErrMalformed},
		{"x-amz-c v2 name", func(m map[string]string) { set(m, "x-amz-c", cse.CEKAlgGCM) }, metadata.ErrMalformed},
		{"commitment truncated", func(m map[string]string) {
			b, _ := base64.StdEncoding.DecodeString(get(m, "x-amz-d"))
			set(m, "x-amz-d", base64.StdEncoding.EncodeToString(b[:20]))
		}, metadata.ErrMalformed},
		{"wrap code 99", func(m map[string]string) { set(m, "x-amz-w", "99") }, metadata.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tampered(t, e, p, func(body []byte, meta map[string]string) []byte { tt.mutate(meta); return body }, writeMode{v3: true})
			_, err := coreRead(ctx, e, p, key)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestGenerateV4Golden writes cse/testdata/v3/go-v4-kms.json, a V3 object
// written by GO4 with its defaults, with its data key (from KMS Decrypt):
//
//	go test ./e2e/interop/ -run TestGenerateV4Golden -args -update
//
// An existing file is never rewritten.
func TestGenerateV4Golden(t *testing.T) {
	if !*updateGolden {
		t.Skip("run with -update to write missing golden vectors")
	}
	e := newEnv(t)
	plain := []byte("csefs V3 golden vector written by amazon-s3-encryption-client-go v4.0.0.")
	key := "golden/v4"
	if err := oracle.GO4Put(ctx, go4(t, e, oracle.GO4RequireEncryptRequireDecrypt), e.Bucket, key, plain, map[string]string{"dept": "golden"}); err != nil {
		t.Fatal(err)
	}
	body, meta := rawObject(t, e, key)
	envl, err := metadata.Detect(meta)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.KMS.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: envl.Key.Blob, EncryptionContext: envl.Key.MatDesc, KeyId: aws.String(e.KMSSRV.KeyID)})
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	v := map[string]any{
		"description":           "V3 kms+context object written by amazon-s3-encryption-client-go v4.0.0 (default policy), metadata as MinIO returns it",
		"metadata":              meta,
		"wrap_alg":              envl.Key.WrapAlg,
		"materials_description": envl.Key.MatDesc,
		"wrapped_key_b64":       b64(envl.Key.Blob),
		"message_id_b64":        b64(envl.MessageID),
		"commitment_b64":        b64(envl.Commitment),
		"data_key":              b64(out.Plaintext),
		"ciphertext_b64":        b64(body),
		"plaintext_b64":         b64(plain),
	}
	data, _ := json.MarshalIndent(v, "", "  ")
	path := filepath.Join("..", "..", "cse", "testdata", "v3", "go-v4-kms.json")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if os.IsExist(err) {
		t.Skipf("%s exists", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(data, '\n')); err != nil {
		t.Fatal(err)
	}
}
