package e2e

// GO31: amazon-s3-encryption-client-go v3.1.0, the version many EMR-adjacent
// applications still run. The main module pins v3.2.0 (one module cannot
// require two versions of one path), so v3.1.0 lives in its own module,
// e2e/oracle/go31, which these tests build and run as a subprocess.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/e2e/testenv"
)

var (
	go31Once sync.Once
	go31Path string
	go31Err  error
)

// go31Bin builds the GO31 oracle once per test binary. A build failure
// fails the test under CI=true (testenv.Unavailable) and skips it otherwise.
func go31Bin(t *testing.T) string {
	t.Helper()
	go31Once.Do(func() {
		dir, err := os.MkdirTemp("", "csefs-e2e-go31-")
		if err != nil {
			go31Err = err
			return
		}
		go31Path = filepath.Join(dir, "go31")
		cmd := exec.Command("go", "build", "-o", go31Path, ".")
		cmd.Dir = filepath.Join("oracle", "go31")
		cmd.Env = append(os.Environ(), "GOWORK=off") // its own go.mod, as e2e/tools
		if out, err := cmd.CombinedOutput(); err != nil {
			go31Err = &buildError{out: string(out), err: err}
		}
	})
	if go31Err != nil {
		testenv.Unavailable(t, "building the GO31 oracle (e2e/oracle/go31): %v", go31Err)
	}
	return go31Path
}

// go31 runs the oracle's verb (get or put) for key with extra flags and
// returns its stdout, and its stderr in the error.
func (w *world) go31(t *testing.T, verb, key string, extra ...string) ([]byte, error) {
	t.Helper()
	args := append([]string{verb,
		"-endpoint", w.S3.Endpoint, "-kms-endpoint", w.KMS.Endpoint, "-region", w.S3.Region,
		"-bucket", w.Bucket, "-key", key}, extra...)
	cmd := exec.Command(go31Bin(t), args...)
	cmd.Env = w.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("go31 %s %s: %v: %s", verb, key, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// TestGO31Interop: with amazon-s3-encryption-client-go v3.1.0 (GO31),
//   - files the mount writes under the default policy (V2; 0 B, 1 B,
//     1000 B and a 20 MiB multipart upload) decrypt byte-exact, and one
//     flipped ciphertext byte makes GO31 fail with no plaintext;
//   - objects GO31 writes (V2 kms+context; 0 B, 1000 B, 3 MiB + 7) read
//     byte-exact through the mount, with their plaintext size;
//   - a file the mount writes under require-encrypt-allow-decrypt (V3,
//     key-committing) is refused by GO31, which predates V3: the expected
//     incompatibility (docs/operations.md).
func TestGO31Interop(t *testing.T) {
	w := newWorld(t)
	go31Bin(t)
	src := t.TempDir()

	t.Run("mount-writes-V2", func(t *testing.T) {
		sizes := []int64{0, 1, 1000, 20<<20 + 3}
		m := w.mount(t, "v2", "--part-size", "5MiB")
		files := map[int64]string{}
		for _, n := range sizes {
			files[n] = randomFile(t, src, fmt.Sprint("v2-", n), n)
			run(t, "cp", files[n], m.path(fmt.Sprint(n)))
		}
		m.Unmount(t) // every upload has finished
		for _, n := range sizes {
			key := fmt.Sprint("v2/", n)
			if v := storedEnvelope(t, w, key, false).Version; v != 2 {
				t.Fatalf("%s: the mount wrote version %d under the default policy", key, v)
			}
			if n > 5<<20 {
				out, err := w.S3.Client(t).HeadObject(bg, &s3.HeadObjectInput{Bucket: &w.Bucket, Key: &key})
				if err != nil {
					t.Fatal(err)
				}
				if etag := aws.ToString(out.ETag); !strings.Contains(etag, "-") {
					t.Errorf("%s: ETag %s is not a multipart ETag", key, etag)
				}
			}
			want, err := os.ReadFile(files[n])
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.go31(t, "get", key)
			checkSame(t, "GO31", key, got, err, want)
		}

		// The oracle authenticates: one flipped ciphertext byte fails it.
		body, meta := w.getRaw(t, "v2/1000")
		body[len(body)/2] ^= 0x01
		w.putRaw(t, "v2/1000-tampered", body, meta)
		if got, err := w.go31(t, "get", "v2/1000-tampered"); err == nil || len(got) != 0 {
			t.Errorf("GO31 read a tampered object: %d bytes, %v", len(got), err)
		}
	})

	t.Run("GO31-writes", func(t *testing.T) {
		sizes := []int64{0, 1000, 3<<20 + 7}
		files := map[int64]string{}
		for _, n := range sizes {
			files[n] = randomFile(t, src, fmt.Sprint("go31-", n), n)
			key := fmt.Sprint("go31/", n)
			if _, err := w.go31(t, "put", key, "-kms-key-id", w.KMS.KeyID, "-in", files[n]); err != nil {
				t.Fatal(err)
			}
			envl := storedEnvelope(t, w, key, false)
			if envl.Version != 2 || envl.Key.CEKAlg != cse.CEKAlgGCM || envl.Key.WrapAlg != cse.WrapKMSContext {
				t.Fatalf("%s: GO31 wrote v%d %s %s, want v2 %s %s", key, envl.Version, envl.Key.CEKAlg, envl.Key.WrapAlg, cse.CEKAlgGCM, cse.WrapKMSContext)
			}
		}
		m := w.mount(t, "go31")
		for _, n := range sizes {
			run(t, "cmp", files[n], m.path(fmt.Sprint(n)))
			st, err := os.Stat(m.path(fmt.Sprint(n)))
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != n {
				t.Errorf("go31/%d: stat size %d", n, st.Size())
			}
		}
	})

	t.Run("mount-writes-V3-refused", func(t *testing.T) {
		m := w.mount(t, "v3", "--commitment-policy", policyAllow)
		plain := randBytes(t, 1000)
		if err := os.WriteFile(m.path("f"), plain, 0o644); err != nil {
			t.Fatal(err)
		}
		m.Unmount(t)
		if v := storedEnvelope(t, w, "v3/f", false).Version; v != 3 {
			t.Fatalf("v3/f: the mount wrote version %d under %s", v, policyAllow)
		}
		got, err := w.go31(t, "get", "v3/f")
		if err == nil {
			t.Fatalf("GO31 (v3.1.0, no V3 support) read a V3 object: %d bytes", len(got))
		}
		if len(got) != 0 {
			t.Errorf("GO31 wrote %d bytes of output for a V3 object it refused", len(got))
		}
		// v3.1.0 knows no V3 metadata keys, so it finds no envelope in the
		// object and then none in <key>.instruction: "failed to load
		// objectMetadata", the instruction file's 404.
		if !strings.Contains(err.Error(), "objectMetadata") {
			t.Errorf("GO31 refused the V3 object for another reason than a missing envelope: %v", err)
		}
		t.Logf("GO31 refuses V3 as expected: %v", err)
	})
}
