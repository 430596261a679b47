package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/e2e/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// csefsBin builds the csefs binary once per test binary.
func csefsBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "csefs-e2e-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "csefs")
		args := []string{"build", "-o", binPath}
		if os.Getenv("CSEFS_E2E_RACE") == "1" {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "github.com/csefs/csefs")...)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = &buildError{out: string(out), err: err}
		}
	})
	if binErr != nil {
		t.Fatalf("building csefs: %v", binErr)
	}
	return binPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// requireFUSE skips (fails in CI) when this machine cannot mount FUSE.
func requireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Unavailable(t, "no /dev/fuse: %v", err)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err := exec.LookPath("fusermount"); err != nil {
				testenv.Unavailable(t, "not root and no fusermount3")
			}
		}
	}
}

// world is one test's servers and bucket.
type world struct {
	S3     *testenv.S3Server
	KMS    *testenv.KMSServer
	Bucket string
	env    []string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	requireFUSE(t)
	w := &world{S3: testenv.MinIO(t), KMS: testenv.KMS(t)}
	w.Bucket = w.S3.NewBucket(t)
	w.env = cleanEnv(t)
	w.env = append(w.env, w.S3.Env()...)
	w.env = append(w.env, w.KMS.Env()...)
	return w
}

// cleanEnv is the environment without any AWS settings of the host, with a
// private runtime directory (pid files) and home (default keyring).
func cleanEnv(t *testing.T) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "XDG_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	dir := t.TempDir()
	env = append(env,
		"HOME="+filepath.Join(dir, "home"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"AWS_CONFIG_FILE="+filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "no-aws-credentials"),
	)
	return env
}

// mounted is a running csefs mount.
type mounted struct {
	Dir     string
	Log     string
	env     []string
	args    []string
	source  string
	unmount func()
	gone    bool // the mount was removed by the test; cleanup only checks the log
}

// s3Args are the flags that point csefs at the test servers with KMS.
func (w *world) s3Args(extra ...string) []string {
	return append([]string{
		"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region,
		"--kms-endpoint-url", w.KMS.Endpoint, "--cse", "kms", "--kms-key-id", w.KMS.KeyID,
	}, extra...)
}

// mount mounts s3://bucket[/prefix] with s3Args plus extra.
func (w *world) mount(t *testing.T, prefix string, extra ...string) *mounted {
	src := "s3://" + w.Bucket
	if prefix != "" {
		src += "/" + prefix
	}
	return mountWith(t, w.env, src, w.s3Args(extra...)...)
}

// tryMount runs csefs mount and returns its combined output and error,
// unmounting on success at cleanup.
func tryMount(t *testing.T, env []string, source string, args ...string) (*mounted, string, error) {
	t.Helper()
	bin := csefsBin(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &mounted{Dir: mnt, Log: filepath.Join(dir, "csefs.log"), env: env, args: args, source: source}
	full := append([]string{"mount", "--log-file", m.Log}, args...)
	full = append(full, source, mnt)
	cmd := exec.Command(bin, full...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(out), err
	}
	done := false
	m.unmount = func() {
		if done {
			return
		}
		done = true
		if m.gone {
			m.checkLog(t)
			return
		}
		cmd := exec.Command(bin, "unmount", mnt)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("csefs unmount %s: %v: %s", mnt, err, out)
			lazy := exec.Command(bin, "unmount", "--lazy", mnt)
			lazy.Env = env
			_ = lazy.Run()
		}
		m.checkLog(t)
	}
	t.Cleanup(m.unmount)
	return m, string(out), nil
}

func mountWith(t *testing.T, env []string, source string, args ...string) *mounted {
	t.Helper()
	m, out, err := tryMount(t, env, source, args...)
	if err != nil {
		t.Fatalf("csefs mount %s: %v\n%s", source, err, out)
	}
	return m
}

// Gone records that the test removed the mount itself (a signal, kill -9,
// a lazy unmount), so cleanup must not unmount it.
func (m *mounted) Gone() { m.gone = true }

// Unmount unmounts now (cleanup does it otherwise).
func (m *mounted) Unmount(t *testing.T) { t.Helper(); m.unmount() }

// checkLog fails the test if the mount's log shows a crash.
func (m *mounted) checkLog(t *testing.T) {
	b, err := os.ReadFile(m.Log)
	if err != nil {
		return
	}
	for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
		if bytes.Contains(b, []byte(bad)) {
			t.Errorf("mount log %s contains %q:\n%s", m.Log, bad, b)
		}
	}
}

// logText returns the mount's log so far.
func (m *mounted) logText(t *testing.T) string {
	b, _ := os.ReadFile(m.Log)
	return string(b)
}

// path joins names under the mountpoint.
func (m *mounted) path(names ...string) string {
	return filepath.Join(append([]string{m.Dir}, names...)...)
}

// run runs a command and fails the test with its output on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// randomFile writes n random bytes to a new file in dir.
func randomFile(t *testing.T, dir, name string, n int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// head returns an object's stored size and metadata, straight from S3.
func (w *world) head(t *testing.T, key string) (int64, map[string]string) {
	t.Helper()
	out, err := w.S3.Client(t).HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("HEAD %s: %v", key, err)
	}
	return aws.ToInt64(out.ContentLength), out.Metadata
}

// getRaw returns an object's stored bytes and metadata.
func (w *world) getRaw(t *testing.T, key string) ([]byte, map[string]string) {
	t.Helper()
	out, err := w.S3.Client(t).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(w.Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, out.Metadata
}

// putRaw stores bytes and metadata as they are, bypassing csefs.
func (w *world) putRaw(t *testing.T, key string, body []byte, meta map[string]string) {
	t.Helper()
	_, err := w.S3.Client(t).PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(w.Bucket), Key: aws.String(key), Body: bytes.NewReader(body), Metadata: meta,
	})
	if err != nil {
		t.Fatalf("PUT %s: %v", key, err)
	}
}
