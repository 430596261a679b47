package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/e2e/testenv"
)

// newSecureWorld is newWorld on testenv.SecureMinIO (https from a test CA,
// a KMS secret for SSE-S3 and SSE-KMS). The mounts trust the CA through
// AWS_CA_BUNDLE, the SDK's own variable.
func newSecureWorld(t *testing.T) *world {
	t.Helper()
	requireFUSE(t)
	w := &world{S3: testenv.SecureMinIO(t), KMS: testenv.KMS(t)}
	w.Bucket = w.S3.NewBucket(t)
	w.env = cleanEnv(t)
	w.env = append(w.env, w.S3.Env()...)
	w.env = append(w.env, w.KMS.Env()...)
	w.env = append(w.env, "AWS_CA_BUNDLE="+w.S3.CA.File)
	return w
}

// sseKey is an SSE-C key and its file.
type sseKey struct {
	key  []byte
	file string
}

func newSSEKey(t *testing.T) sseKey {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	p := filepath.Join(t.TempDir(), "sse-c.key")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sseKey{key: k, file: p}
}

func (k sseKey) headers() (alg, key, keyMD5 *string) {
	if k.key == nil {
		return nil, nil, nil
	}
	sum := md5.Sum(k.key)
	return aws.String("AES256"), aws.String(base64.StdEncoding.EncodeToString(k.key)), aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// headSSE HEADs key with the SDK (with the SSE-C key k, if any).
func (w *world) headSSE(t *testing.T, key string, k sseKey) (*s3.HeadObjectOutput, error) {
	in := &s3.HeadObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String(key)}
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = k.headers()
	return w.S3.Client(t).HeadObject(context.Background(), in)
}

// getSSE GETs key with the SDK (with the SSE-C key k, if any).
func (w *world) getSSE(t *testing.T, key string, k sseKey) []byte {
	t.Helper()
	in := &s3.GetObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String(key)}
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = k.headers()
	out, err := w.S3.Client(t).GetObject(context.Background(), in)
	if err != nil {
		t.Fatalf("SDK GET %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkSSE fails the test unless key's HEAD shows the mode.
func (w *world) checkSSE(t *testing.T, key, mode string, k sseKey) {
	t.Helper()
	out, err := w.headSSE(t, key, k)
	if err != nil {
		t.Fatalf("HEAD %s: %v", key, err)
	}
	switch mode {
	case "s3":
		if out.ServerSideEncryption != types.ServerSideEncryptionAes256 {
			t.Errorf("%s: x-amz-server-side-encryption = %q, want AES256", key, out.ServerSideEncryption)
		}
	case "kms":
		if out.ServerSideEncryption != types.ServerSideEncryptionAwsKms || !strings.Contains(aws.ToString(out.SSEKMSKeyId), testenv.MinIOKMSKey) {
			t.Errorf("%s: x-amz-server-side-encryption = %q key %q, want aws:kms %s", key, out.ServerSideEncryption, aws.ToString(out.SSEKMSKeyId), testenv.MinIOKMSKey)
		}
	case "c":
		if aws.ToString(out.SSECustomerAlgorithm) != "AES256" {
			t.Errorf("%s: SSE-C algorithm = %q, want AES256", key, aws.ToString(out.SSECustomerAlgorithm))
		}
		if _, err := w.headSSE(t, key, sseKey{}); err == nil {
			t.Errorf("%s: HEAD without the SSE-C key succeeded", key)
		}
	}
}

// TestSSEModes: with --sse s3, kms or c (alone, --cse off), every object the
// mount writes (one PutObject, a multipart upload, a rename's CopyObject, a
// directory marker) carries the SSE headers, reads back through the mount
// and through the SDK (with the key for SSE-C), and stays readable after a
// self-copy (chmod).
func TestSSEModes(t *testing.T) {
	w := newSecureWorld(t)
	ck := newSSEKey(t)
	for _, tc := range []struct {
		mode string
		args []string
		key  sseKey
	}{
		{"s3", []string{"--sse", "s3"}, sseKey{}},
		{"kms", []string{"--sse", "kms", "--sse-kms-key-id", testenv.MinIOKMSKey}, sseKey{}},
		{"c", []string{"--sse", "c", "--sse-c-key-file", ck.file}, ck},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			prefix := "sse-" + tc.mode
			m := mountWith(t, w.env, "s3://"+w.Bucket+"/"+prefix,
				w.plainArgs(append([]string{"--cse", "off", "--part-size", "5MiB"}, tc.args...)...)...)
			small := []byte("small object under SSE " + tc.mode)
			if err := os.WriteFile(m.path("small.txt"), small, 0o644); err != nil {
				t.Fatal(err)
			}
			big := make([]byte, 11<<20+17)
			rand.Read(big)
			if err := os.WriteFile(m.path("big.bin"), big, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(m.path("dir"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(m.path("small.txt"), m.path("dir", "moved.txt")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(m.path("big.bin"), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"dir/moved.txt", "big.bin", "dir/"} {
				w.checkSSE(t, prefix+"/"+k, tc.mode, tc.key)
			}
			if got := w.getSSE(t, prefix+"/dir/moved.txt", tc.key); !bytes.Equal(got, small) {
				t.Errorf("SDK read of the renamed object differs")
			}
			if got := w.getSSE(t, prefix+"/big.bin", tc.key); !bytes.Equal(got, big) {
				t.Errorf("SDK read of the multipart object differs")
			}
			if got, err := os.ReadFile(m.path("big.bin")); err != nil || !bytes.Equal(got, big) {
				t.Errorf("mount read of big.bin: %v (equal %v)", err, bytes.Equal(got, big))
			}
			if got, err := os.ReadFile(m.path("dir", "moved.txt")); err != nil || !bytes.Equal(got, small) {
				t.Errorf("mount read of dir/moved.txt: %v", err)
			}
			// csefs inspect shows the SSE state (SSE-C needs the key to HEAD).
			args := append([]string{"inspect", "--json"}, w.plainArgs(append([]string{"--cse", "off"}, tc.args...)...)...)
			cmd := exec.Command(csefsBin(t), append(args, "s3://"+w.Bucket+"/"+prefix+"/big.bin")...)
			cmd.Env = w.env
			out, err := cmd.Output()
			want := map[string]string{"s3": `"sse":"SSE-S3"`, "kms": `"sse":"SSE-KMS`, "c": `"sse":"SSE-C"`}[tc.mode]
			if err != nil || !strings.Contains(string(out), want) {
				t.Errorf("csefs inspect: %v, output lacks %s:\n%s", err, want, out)
			}
		})
	}
}

// TestSSEWithCSE: --sse kms together with --cse kms (defence in depth):
// objects are client-side encrypted (the official S3 Encryption Client reads
// them) and carry SSE-KMS.
func TestSSEWithCSE(t *testing.T) {
	w := newSecureWorld(t)
	m := w.mount(t, "", "--sse", "kms", "--sse-kms-key-id", testenv.MinIOKMSKey)
	plain := []byte("both layers: S3EC envelope and SSE-KMS")
	if err := os.WriteFile(m.path("both.txt"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	w.checkSSE(t, "both.txt", "kms", sseKey{})
	if raw := w.getSSE(t, "both.txt", sseKey{}); bytes.Contains(raw, plain) {
		t.Fatal("the stored object holds the plaintext: CSE was not applied")
	}
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := oracle.GO3Get(context.Background(), go3, w.Bucket, "both.txt")
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("GO3 read: %v %q", err, got)
	}
	if got, err := os.ReadFile(m.path("both.txt")); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("mount read: %v", err)
	}
}

// TestSSECWithCSE: --sse-c-key-file with --cse kms: the official S3
// Encryption Client, given the SSE-C key, reads what the mount wrote,
// including a renamed copy (whose CopyObject needed the source's key).
func TestSSECWithCSE(t *testing.T) {
	w := newSecureWorld(t)
	k := newSSEKey(t)
	m := w.mount(t, "", "--sse-c-key-file", k.file)
	plain := bytes.Repeat([]byte("CSE-KMS over SSE-C "), 1000)
	if err := os.WriteFile(m.path("a.txt"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("a.txt"), m.path("b.txt")); err != nil {
		t.Fatal(err)
	}
	w.checkSSE(t, "b.txt", "c", k)
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String("b.txt")}
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = k.headers()
	out, err := go3.GetObject(context.Background(), in)
	if err != nil {
		t.Fatalf("GO3 GetObject with the SSE-C key: %v", err)
	}
	got, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("GO3 read: %v (equal %v)", err, bytes.Equal(got, plain))
	}
}

// TestSSECWrongKey: an SSE-C object read with another key (or none) fails
// with EACCES and a log line that says so; the key itself is never logged.
func TestSSECWrongKey(t *testing.T) {
	w := newSecureWorld(t)
	good, bad := newSSEKey(t), newSSEKey(t)
	m := mountWith(t, w.env, "s3://"+w.Bucket, w.plainArgs("--cse", "off", "--sse-c-key-file", good.file)...)
	if err := os.WriteFile(m.path("secret.txt"), []byte("sse-c data"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"wrong key", []string{"--sse-c-key-file", bad.file}},
		{"no key", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m2 := mountWith(t, w.env, "s3://"+w.Bucket, w.plainArgs(append([]string{"--cse", "off"}, tc.args...)...)...)
			_, err := os.ReadFile(m2.path("secret.txt"))
			if !errors.Is(err, syscall.EACCES) {
				t.Fatalf("read with %s: %v, want EACCES", tc.name, err)
			}
			log := m2.logText(t)
			if !strings.Contains(log, "SSE-C key does not match") {
				t.Errorf("log does not explain the refusal:\n%s", log)
			}
			for _, k := range [][]byte{good.key, bad.key} {
				if strings.Contains(log, base64.StdEncoding.EncodeToString(k)) {
					t.Errorf("log holds an SSE-C key")
				}
			}
		})
	}
}

// TestSSEFromConfigFiles: EMR's SSE modes work from the configuration files
// alone: a security configuration in SSE-KMS mode, and an emrfs-site.xml
// with fs.s3.enableServerSideEncryption (SSE-S3, or SSE-KMS with
// fs.s3.serverSideEncryption.kms.keyId); each mounts without CSE.
func TestSSEFromConfigFiles(t *testing.T) {
	w := newSecureWorld(t)
	secKMS := writeConfig(t, "sse-kms.json", `{"EncryptionConfiguration":{"EnableAtRestEncryption":true,"AtRestEncryptionConfiguration":{"S3EncryptionConfiguration":{"EncryptionMode":"SSE-KMS","AwsKmsKey":"`+testenv.MinIOKMSKey+`"}}}}`)
	secS3 := writeConfig(t, "sse-s3.json", `{"EncryptionConfiguration":{"EnableAtRestEncryption":true,"AtRestEncryptionConfiguration":{"S3EncryptionConfiguration":{"EncryptionMode":"SSE-S3"}}}}`)
	siteS3 := writeConfig(t, "sse-s3.xml", emrfsSite("fs.s3.enableServerSideEncryption", "true"))
	siteKMS := writeConfig(t, "sse-kms.xml", emrfsSite("fs.s3.enableServerSideEncryption", "true", "fs.s3.serverSideEncryption.kms.keyId", testenv.MinIOKMSKey))
	for _, tc := range []struct {
		name, mode string
		args       []string
	}{
		{"security configuration SSE-KMS", "kms", []string{"--security-configuration", secKMS}},
		{"security configuration SSE-S3", "s3", []string{"--security-configuration", secS3}},
		{"emrfs-site SSE-S3", "s3", []string{"--emrfs-site", siteS3}},
		{"emrfs-site SSE-KMS", "kms", []string{"--emrfs-site", siteKMS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := strings.ReplaceAll(tc.name, " ", "-")
			m := mountWith(t, w.env, "s3://"+w.Bucket+"/"+prefix, w.plainArgs(tc.args...)...)
			plain := []byte("written under " + tc.name)
			if err := os.WriteFile(m.path("f.txt"), plain, 0o644); err != nil {
				t.Fatal(err)
			}
			w.checkSSE(t, prefix+"/f.txt", tc.mode, sseKey{})
			if got := w.getSSE(t, prefix+"/f.txt", sseKey{}); !bytes.Equal(got, plain) {
				t.Errorf("stored object is not the plaintext (CSE should be off): %q", got)
			}
			if !strings.Contains(m.logText(t), "sse="+tc.mode) {
				t.Errorf("mount log does not name the SSE mode")
			}
		})
	}
}
