package e2e

// Mount-time errors give a clear message and a non-zero exit; read-time
// errors give the right errno and a log line naming the object.

import (
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/metadata"
)

// mountAt runs csefs mount of source on an existing mnt, unmounting at
// cleanup if it unexpectedly succeeds.
func mountAt(t *testing.T, env []string, source, mnt string, args ...string) (string, error) {
	t.Helper()
	bin := csefsBin(t)
	full := append(append([]string{"mount", "--log-file", filepath.Join(t.TempDir(), "csefs.log")}, args...), source, mnt)
	cmd := exec.Command(bin, full...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Cleanup(func() {
			u := exec.Command(bin, "unmount", mnt)
			u.Env = env
			_ = u.Run()
		})
	}
	return string(out), err
}

// wantMountError requires a non-zero exit and a message containing one of
// words (case-insensitive).
func wantMountError(t *testing.T, out string, err error, words ...string) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("csefs mount: err %v, want a non-zero exit; output:\n%s", err, out)
	}
	low := strings.ToLower(out)
	for _, w := range words {
		if strings.Contains(low, strings.ToLower(w)) {
			return
		}
	}
	t.Errorf("csefs mount output lacks any of %q:\n%s", words, out)
}

// withEnv returns env with the variable name set to value everywhere it
// appears (the S3 and KMS lists both carry credentials).
func withEnv(env []string, name, value string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return append(out, name+"="+value)
}

// s3Flags is w.s3Args with another KMS key id (or none).
func (w *world) s3Flags(keyID string, extra ...string) []string {
	args := []string{
		"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region,
		"--kms-endpoint-url", w.KMS.Endpoint, "--cse", "kms",
	}
	if keyID != "" {
		args = append(args, "--kms-key-id", keyID)
	}
	return append(args, extra...)
}

func TestMountErrors(t *testing.T) {
	w := newWorld(t)
	src := "s3://" + w.Bucket
	keyring := filepath.Join(t.TempDir(), "keyring.json")
	if err := os.WriteFile(keyring, []byte(`{"keys": [ {"id": "k1", "key": "not base64!"`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		env    []string
		source string
		args   []string
		words  []string
	}{
		{"no-such-bucket", w.env, "s3://csefs-no-such-bucket-e2e", w.s3Args(), []string{"no such bucket"}},
		{"bad-secret-key", withEnv(w.env, "AWS_SECRET_ACCESS_KEY", "wrong-secret-key"), src, w.s3Args(), []string{"access denied", "credentials"}},
		{"kms-key-missing", w.env, src, w.s3Flags("alias/csefs-does-not-exist"), []string{"alias/csefs-does-not-exist"}},
		{"kms-key-missing-id", w.env, src, w.s3Flags("0d3c5b2a-1111-4222-8333-444455556666"), []string{"not found", "does not exist", "notfound"}},
		{"kms-key-disabled", w.env, src, w.s3Flags(w.KMS.DisabledKeyID), []string{"disabled"}},
		{"kms-key-asymmetric", w.env, src, w.s3Flags(w.KMS.AsymmetricKeyID), []string{"asymmetric", "RSA"}},
		{"kms-key-sign-only", w.env, src, w.s3Flags(w.KMS.SignKeyID), []string{"sign", "ECC"}},
		{"cse-kms-without-key", w.env, src, w.s3Flags(""), []string{"--kms-key-id"}},
		{"malformed-keyring", w.env, src, append(w.s3Flags(""), "--cse", "custom", "--keyring", keyring), []string{"keyring"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, out, err := tryMount(t, tc.env, tc.source, tc.args...)
			wantMountError(t, out, err, tc.words...)
			if tc.name == "malformed-keyring" && strings.Contains(out, "not base64!") {
				t.Errorf("the error message quotes keyring content:\n%s", out)
			}
		})
	}
	t.Run("already-mounted", func(t *testing.T) {
		m := w.mount(t, "")
		out, err := mountAt(t, w.env, src, m.Dir, w.s3Args()...)
		wantMountError(t, out, err, "busy")
		// The first mount still works.
		if err := os.WriteFile(m.path("x"), []byte("x"), 0o644); err != nil {
			t.Fatalf("first mount after the refused second one: %v", err)
		}
	})
	t.Run("mountpoint-missing", func(t *testing.T) {
		mnt := filepath.Join(t.TempDir(), "does", "not", "exist")
		out, err := mountAt(t, w.env, src, mnt, w.s3Args()...)
		wantMountError(t, out, err, "no such file or directory", "does not exist")
		if !strings.Contains(out, mnt) {
			t.Errorf("message does not name the mountpoint %s:\n%s", mnt, out)
		}
	})
}

// wantReadErrno reads the file and requires errno, with no bytes returned,
// and a log line naming the object with the cause word.
func wantReadErrno(t *testing.T, m *mounted, w *world, key string, errno syscall.Errno, cause string) {
	t.Helper()
	got, err := os.ReadFile(m.path(key))
	if !errors.Is(err, errno) {
		t.Errorf("read %s: %d bytes, err %v; want %v", key, len(got), err, errno)
	}
	if len(got) != 0 {
		t.Errorf("read %s returned %d bytes despite the error", key, len(got))
	}
	uri := "s3://" + w.Bucket + "/" + key
	var line string
	for _, l := range strings.Split(m.logText(t), "\n") {
		if strings.Contains(l, uri) && strings.Contains(strings.ToLower(l), strings.ToLower(cause)) {
			line = l
			break
		}
	}
	if line == "" {
		t.Errorf("no log line names %s with %q:\n%s", uri, cause, m.logText(t))
	}
}

// TestReadErrors: objects that cannot be decrypted give the errno of the
// cause, never bytes, and a log line naming the object.
func TestReadErrors(t *testing.T) {
	w := newWorld(t)
	kc := w.KMS.Client(t)
	laterID, _ := w.KMS.NewKey(t)
	plain := randBytes(t, 5000)

	// Objects written through csefs, then broken behind its back.
	wr := mountWith(t, w.env, "s3://"+w.Bucket, w.s3Flags(laterID)...)
	if err := os.WriteFile(wr.path("disabled-later"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	wr.Unmount(t)
	wr = w.mount(t, "")
	for _, k := range []string{"bad-base64", "good"} {
		if err := os.WriteFile(wr.path(k), plain, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wr.Unmount(t)
	wr = w.mount(t, "", "--storage-mode", "instruction-file")
	if err := os.WriteFile(wr.path("instr-deleted"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	wr.Unmount(t)

	if _, err := kc.DisableKey(bg, &kms.DisableKeyInput{KeyId: aws.String(laterID)}); err != nil {
		t.Fatal(err)
	}
	body, meta := w.getRaw(t, "bad-base64")
	meta[metadata.KeyV2] = "!!not base64!!"
	w.putRaw(t, "bad-base64", body, meta)
	// A V3 (key-committing) envelope with a 184-byte commitment and no
	// wrap code (V3_test.go has the finer cases).
	w.putRaw(t, "v3", body, map[string]string{
		"x-amz-c": "115",
		"x-amz-d": base64.StdEncoding.EncodeToString(make([]byte, 184)),
		"x-amz-i": base64.StdEncoding.EncodeToString(make([]byte, 28)),
		"x-amz-3": "12",
	})
	// csefs marks an object whose envelope is in its instruction file, so
	// that a missing instruction file is an error and not "plaintext".
	if _, im := w.head(t, "instr-deleted"); !metadata.ParseAttrs(im).InstructionFile {
		t.Errorf("object written with --storage-mode instruction-file lacks %s=%s: %v",
			metadata.AttrEnvelope, metadata.EnvelopeInstructionFile, im)
	}
	if _, err := w.S3.Client(t).DeleteObject(bg, &s3.DeleteObjectInput{Bucket: &w.Bucket, Key: aws.String(metadata.InstructionKey("instr-deleted"))}); err != nil {
		t.Fatal(err)
	}

	m := w.mount(t, "")
	t.Run("good", func(t *testing.T) {
		got, err := os.ReadFile(m.path("good"))
		checkSame(t, "mount", "good", got, err, plain)
	})
	t.Run("key-disabled-after-write", func(t *testing.T) {
		wantReadErrno(t, m, w, "disabled-later", syscall.EACCES, "errno=")
	})
	t.Run("malformed-metadata", func(t *testing.T) {
		wantReadErrno(t, m, w, "bad-base64", syscall.EIO, "malformed")
	})
	t.Run("v3-envelope", func(t *testing.T) {
		wantReadErrno(t, m, w, "v3", syscall.EIO, "malformed")
	})
	t.Run("instruction-file-deleted", func(t *testing.T) {
		wantReadErrno(t, m, w, "instr-deleted", syscall.EIO, "instruction file")
	})
	// No log line carries key material: the wrapped key of the object the
	// test broke (base64 as stored) never appears.
	if good, gm := w.getRaw(t, "good"); len(good) > 0 {
		if k := gm[metadata.KeyV2]; k != "" && strings.Contains(m.logText(t), k) {
			t.Errorf("the log contains a wrapped data key")
		}
	}
}
