package testenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestMain(m *testing.M) { Main(m) }

func TestMinIOAndKMS(t *testing.T) {
	srv := MinIO(t)
	k := KMS(t)
	ctx := context.Background()

	u, err := url.Parse(srv.Endpoint)
	if err != nil || net.ParseIP(u.Hostname()) == nil {
		t.Fatalf("endpoint %q is not an IP-literal URL", srv.Endpoint)
	}

	// S3: bucket, put, get.
	c := srv.Client(t)
	b1, b2 := srv.NewBucket(t), srv.NewBucket(t)
	if b1 == b2 {
		t.Fatalf("NewBucket returned %q twice", b1)
	}
	want := []byte("hello csefs")
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(b1), Key: aws.String("dir/obj"), Body: bytes.NewReader(want),
		Metadata: map[string]string{"x-amz-iv": "abc"},
	}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b1), Key: aws.String("dir/obj")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	body, err := io.ReadAll(got.Body)
	got.Body.Close()
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("GetObject body = %q, %v; want %q", body, err, want)
	}
	if got.Metadata["x-amz-iv"] != "abc" {
		t.Fatalf("metadata = %v, want x-amz-iv=abc", got.Metadata)
	}

	// KMS: GenerateDataKey/Decrypt bound to an encryption context, through
	// the alias; a changed context must fail.
	kc := k.Client(t)
	ec := map[string]string{"aws:x-amz-cek-alg": "AES/GCM/NoPadding"}
	gdk, err := kc.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId: aws.String(k.AliasName), KeySpec: kmstypes.DataKeySpecAes256, EncryptionContext: ec,
	})
	if err != nil {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	if len(gdk.Plaintext) != 32 || *gdk.KeyId != k.KeyARN {
		t.Fatalf("GenerateDataKey: %d-byte key from %s, want 32 bytes from %s", len(gdk.Plaintext), *gdk.KeyId, k.KeyARN)
	}
	for _, id := range []string{"", k.KeyID, k.KeyARN, k.AliasName, k.AliasARN} {
		in := &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: ec}
		if id != "" {
			in.KeyId = aws.String(id)
		}
		dec, err := kc.Decrypt(ctx, in)
		if err != nil {
			t.Fatalf("Decrypt (KeyId %q): %v", id, err)
		}
		if !bytes.Equal(dec.Plaintext, gdk.Plaintext) {
			t.Fatalf("Decrypt (KeyId %q) returned a different key", id)
		}
	}
	_, err = kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob,
		EncryptionContext: map[string]string{"aws:x-amz-cek-alg": "AES/CBC/PKCS5Padding"}})
	var ice *kmstypes.InvalidCiphertextException
	if !errors.As(err, &ice) {
		t.Fatalf("Decrypt with altered EC: err = %v, want InvalidCiphertextException", err)
	}

	// The special keys are what the doc says.
	describe := func(id string) *kmstypes.KeyMetadata {
		t.Helper()
		out, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(id)})
		if err != nil {
			t.Fatalf("DescribeKey %s: %v", id, err)
		}
		return out.KeyMetadata
	}
	if md := describe(k.DisabledKeyID); md.KeyState != kmstypes.KeyStateDisabled || md.Enabled {
		t.Errorf("disabled key: state %s enabled %v", md.KeyState, md.Enabled)
	}
	if md := describe(k.AsymmetricKeyID); md.KeySpec != kmstypes.KeySpecRsa2048 || md.KeyUsage != kmstypes.KeyUsageTypeEncryptDecrypt {
		t.Errorf("asymmetric key: spec %s usage %s", md.KeySpec, md.KeyUsage)
	}
	if md := describe(k.SignKeyID); md.KeyUsage != kmstypes.KeyUsageTypeSignVerify {
		t.Errorf("sign key: usage %s", md.KeyUsage)
	}
	if md := describe(k.AliasName); *md.Arn != k.KeyARN || md.KeyState != kmstypes.KeyStateEnabled {
		t.Errorf("alias resolves to %s (%s), want %s enabled", *md.Arn, md.KeyState, k.KeyARN)
	}
	_, err = kc.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(k.DisabledKeyID), KeySpec: kmstypes.DataKeySpecAes256})
	var de *kmstypes.DisabledException
	if !errors.As(err, &de) {
		t.Errorf("GenerateDataKey on disabled key: err = %v, want DisabledException", err)
	}

	id, arn := k.NewKey(t)
	if id == k.KeyID || !strings.HasSuffix(arn, id) {
		t.Errorf("NewKey = %s, %s", id, arn)
	}
}

func TestEnv(t *testing.T) {
	s := &S3Server{Endpoint: "http://127.0.0.1:1", AccessKey: testAccessKey, SecretKey: testSecretKey, Region: "us-east-1"}
	k := &KMSServer{Endpoint: "http://127.0.0.1:2", Region: "us-east-1"}
	env := map[string]string{}
	for _, kv := range append(s.Env(), k.Env()...) {
		name, val, _ := strings.Cut(kv, "=")
		env[name] = val
	}
	if env["AWS_ENDPOINT_URL_S3"] != s.Endpoint || env["AWS_ENDPOINT_URL_KMS"] != k.Endpoint || env["AWS_REGION"] != "us-east-1" ||
		env["AWS_ACCESS_KEY_ID"] != testAccessKey || env["AWS_SECRET_ACCESS_KEY"] != testSecretKey {
		t.Fatalf("env = %v", env)
	}
}

// recordTB records Skipf/Fatalf instead of ending the goroutine.
type recordTB struct {
	testing.TB
	skipped, fatal bool
}

func (r *recordTB) Helper()               {}
func (r *recordTB) Skipf(string, ...any)  { r.skipped = true }
func (r *recordTB) Fatalf(string, ...any) { r.fatal = true }

func TestUnavailable(t *testing.T) {
	for _, ci := range []string{"", "false", "true"} {
		t.Setenv("CI", ci)
		r := &recordTB{TB: t}
		Unavailable(r, "nothing %d", 1)
		if wantFatal := ci == "true"; r.fatal != wantFatal || r.skipped == wantFatal {
			t.Errorf("CI=%q: fatal=%v skipped=%v", ci, r.fatal, r.skipped)
		}
	}
}

func TestToolsBinCached(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CSEFS_TOOLS_BIN", dir)
	fake := dir + "/local-kms"
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := ToolsBin("local-kms")
	if err != nil || got != fake {
		t.Fatalf("ToolsBin = %q, %v; want the cached %q", got, err, fake)
	}
}

func TestToolsBinUnknown(t *testing.T) {
	if _, err := ToolsBin("nope"); err == nil {
		t.Fatal("ToolsBin(nope) succeeded")
	}
}

// TestToolsBinBuilds builds local-kms (the small one, seconds) into an empty
// cache from two goroutines at once: the flock lets one build and the other
// reuse the result.
func TestToolsBinBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds local-kms; skipped in -short")
	}
	dir := t.TempDir()
	t.Setenv("CSEFS_TOOLS_BIN", dir)
	var paths [2]string
	var errs [2]error
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = ToolsBin("local-kms") })
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil {
			Unavailable(t, "cannot build local-kms: %v", errs[i])
		}
		if paths[i] != dir+"/local-kms" || !isExecutable(paths[i]) {
			t.Fatalf("ToolsBin = %q, not an executable in %s", paths[i], dir)
		}
	}
	left, _ := os.ReadDir(dir)
	for _, e := range left {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary build output left behind: %s", e.Name())
		}
	}
}

// TestStartKMSStop starts a private local-kms through the non-test entry
// point, uses it, stops it twice, and checks that it is gone: the port
// refuses connections and its directory is removed.
func TestStartKMSStop(t *testing.T) {
	if _, err := ToolsBin("local-kms"); err != nil {
		Unavailable(t, "local-kms: %v", err)
	}
	before := map[*proc]bool{}
	procsMu.Lock()
	for _, p := range procs {
		before[p] = true
	}
	procsMu.Unlock()
	srv, stop, err := StartKMS()
	if err != nil {
		Unavailable(t, "StartKMS: %v", err)
	}
	if srv.KeyID == "" || srv == kmsSrv {
		t.Fatalf("StartKMS returned %+v, want a fresh server with keys", srv)
	}
	if _, err := srv.NewClient().DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: aws.String(srv.AliasName)}); err != nil {
		t.Fatalf("DescribeKey on the private server: %v", err)
	}
	procsMu.Lock()
	var dir string
	for _, p := range procs {
		if !before[p] {
			dir = p.dir
		}
	}
	procsMu.Unlock()
	if dir == "" {
		t.Fatal("StartKMS did not register its process")
	}
	stop()
	stop()
	u, _ := url.Parse(srv.Endpoint)
	if c, err := net.Dial("tcp", u.Host); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after stop", u.Host)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server directory %s left behind: %v", dir, err)
	}
	procsMu.Lock()
	for _, p := range procs {
		if !before[p] {
			t.Errorf("stopped server %s still registered", p.name)
		}
	}
	procsMu.Unlock()
}
