package cse

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildExampleProvider compiles cse/exec-provider-example into a temporary
// directory.
func buildExampleProvider(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	if _, err := os.Stat(goTool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no go tool to build the example provider: %v", err)
		}
		t.Skipf("no go tool to build the example provider: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "exec-provider-example")
	cmd := exec.Command(goTool, "build", "-o", bin, "./exec-provider-example")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// script writes a /bin/sh provider.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provider.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func newExec(t *testing.T, path string, opt ExecOptions) *ExecProvider {
	t.Helper()
	p, err := NewExecProvider(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExecProviderExample runs the example program through ExecProvider and
// checks interoperation with a keyring holding the same master key.
func TestExecProviderExample(t *testing.T) {
	bin := buildExampleProvider(t)
	kek := testBytes(70, 32)
	env := []string{"CSEFS_EXAMPLE_KEY=" + base64.StdEncoding.EncodeToString(kek)}
	p := newExec(t, bin, ExecOptions{Env: env})
	ctx := t.Context()

	key, w, err := p.GenerateKey(ctx, KeyRequest{CEKAlg: CEKAlgGCM, Object: "s3://b/k", MatDesc: map[string]string{"Path": "s3://b/k"}})
	if err != nil {
		t.Fatal(err)
	}
	if w.WrapAlg != WrapAESGCM || w.CEKAlg != CEKAlgGCM || len(w.Blob) != 60 || w.MatDesc[KeyNameKey] != "exec-example" || w.MatDesc["Path"] != "s3://b/k" {
		t.Fatalf("wrapped %+v", w)
	}
	w.Object = "s3://b/k"
	got, err := p.DecryptKey(ctx, w)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("exec round trip: %v", err)
	}
	// A keyring with the same key under the same name reads what the program
	// wrapped, body included...
	kp, _ := NewKeyringProvider([]MasterKey{{Name: "exec-example", AES: kek}}, "exec-example")
	if got, err := kp.DecryptKey(ctx, w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("keyring cannot read the exec provider's wrap: %v", err)
	}
	iv := testBytes(71, GCMIVSize)
	plain := testBytes(72, 100_000)
	var body bytes.Buffer
	ew, _ := newEncryptWriter(&body, key, iv)
	_ = writeInSteps(ew, plain, 4096)
	if err := ew.Close(); err != nil {
		t.Fatal(err)
	}
	kkey, _ := kp.DecryptKey(ctx, w)
	if back, err := openGCM(kkey, iv, body.Bytes()); err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("keyring reads the body: %v", err)
	}
	// ...and the program reads what the keyring wrote.
	key, w, _ = kp.GenerateKey(ctx, KeyRequest{})
	if got, err := p.DecryptKey(ctx, w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("exec provider cannot read the keyring's wrap: %v", err)
	}
	// The program's refusals are ErrKeyAccess with its message.
	w.Blob[30] ^= 1
	_, err = p.DecryptKey(ctx, w)
	mustFail(t, err, ErrKeyAccess)
	if !strings.Contains(err.Error(), "does not authenticate") {
		t.Fatalf("message lost: %v", err)
	}
	wrongKey := newExec(t, bin, ExecOptions{Env: []string{"CSEFS_EXAMPLE_KEY=" + base64.StdEncoding.EncodeToString(testBytes(73, 32))}})
	w.Blob[30] ^= 1
	_, err = wrongKey.DecryptKey(ctx, w)
	mustFail(t, err, ErrKeyAccess)
	// Args reach the program.
	named := newExec(t, bin, ExecOptions{Env: env, Args: []string{"-key-name", "vault-7"}})
	if _, w, err := named.GenerateKey(ctx, KeyRequest{}); err != nil || w.MatDesc[KeyNameKey] != "vault-7" {
		t.Fatalf("args: %v %v", err, w.MatDesc)
	}
	// Concurrent calls are independent processes.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			key, w, err := p.GenerateKey(ctx, KeyRequest{})
			if err == nil {
				var got []byte
				if got, err = p.DecryptKey(ctx, w); err == nil && !bytes.Equal(got, key) {
					err = errors.New("concurrent round trip returned another key")
				}
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Behind a Router, the program's refusal of another key's object is an
	// access error, not a fallthrough.
	r, _ := NewRouter([]Rule{{"", p}}, p)
	_, err = r.DecryptKey(ctx, WrappedKey{WrapAlg: WrapAESGCM, CEKAlg: CEKAlgGCM, Blob: w.Blob, MatDesc: map[string]string{KeyNameKey: "other"}})
	mustFail(t, err, ErrKeyAccess)
}

// TestExecProviderRequest checks the exact JSON a program receives.
func TestExecProviderRequest(t *testing.T) {
	dir := t.TempDir()
	reqFile := filepath.Join(dir, "req.json")
	key := testBytes(74, 32)
	resp := `{"key":"` + base64.StdEncoding.EncodeToString(key) + `","wrapped_key":"d3JhcHBlZA==","wrap_alg":"X-VAULT","future_field":1}`
	p := newExec(t, script(t, `cat > "$REQ"; echo '`+resp+`'`), ExecOptions{Env: []string{"REQ=" + reqFile}})
	read := func() map[string]any {
		b, err := os.ReadFile(reqFile)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("request %s: %v", b, err)
		}
		return m
	}
	got, w, err := p.GenerateKey(t.Context(), KeyRequest{Object: "s3://b/dir/f", Key: "dir/f"})
	if err != nil || !bytes.Equal(got, key) {
		t.Fatal(err)
	}
	// No materials_description in the answer: the request's (empty) is stored.
	if w.WrapAlg != "X-VAULT" || string(w.Blob) != "wrapped" || w.MatDesc == nil || len(w.MatDesc) != 0 || w.CEKAlg != CEKAlgGCM {
		t.Fatalf("wrapped %+v", w)
	}
	want := map[string]any{"version": float64(1), "operation": "encrypt", "object": "s3://b/dir/f",
		"materials_description": map[string]any{}, "cek_alg": CEKAlgGCM}
	if m := read(); !jsonEqual(m, want) {
		t.Fatalf("encrypt request %v, want %v", m, want)
	}
	if _, err := p.DecryptKey(t.Context(), WrappedKey{WrapAlg: "X-VAULT", CEKAlg: CEKAlgGCM, Blob: []byte("wrapped"), MatDesc: map[string]string{"a": "b"}, Object: "s3://b/dir/f"}); err != nil {
		t.Fatal(err)
	}
	want = map[string]any{"version": float64(1), "operation": "decrypt", "object": "s3://b/dir/f",
		"materials_description": map[string]any{"a": "b"}, "cek_alg": CEKAlgGCM, "wrapped_key": "d3JhcHBlZA==", "wrap_alg": "X-VAULT"}
	if m := read(); !jsonEqual(m, want) {
		t.Fatalf("decrypt request %v, want %v", m, want)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestExecProviderFailures has one case per failure mode.
func TestExecProviderFailures(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(testBytes(75, 32))
	for name, c := range map[string]struct {
		body    string
		want    error
		mention string
	}{
		"exit 1 with stderr":  {`echo "vault unreachable" >&2; exit 1`, ErrKeyAccess, "vault unreachable"},
		"exit 3 no stderr":    {`exit 3`, ErrKeyAccess, "exit status 3"},
		"error answer":        {`echo '{"error":"denied by policy"}'`, ErrKeyAccess, "denied by policy"},
		"error answer exit 2": {`echo '{"error":"denied"}'; exit 2`, ErrKeyAccess, "denied"},
		"killed":              {`kill -9 $$`, ErrKeyAccess, "killed"},
		"not json":            {`echo 'hello ` + key + `'`, ErrMalformed, "syntax error"},
		"empty output":        {`true`, ErrMalformed, "empty output"},
		"trailing data":       {`echo '{"key":"` + key + `"} {}'`, ErrMalformed, "not one JSON"},
		"bad base64":          {`echo '{"key":"!!!!"}'`, ErrMalformed, "base64"},
		"wrong type":          {`echo '{"key":5}'`, ErrMalformed, `"key"`},
		"short key":           {`echo '{"key":"AAAA"}'`, ErrMalformed, "3-byte key"},
		"huge output":         {`head -c 2000000 /dev/zero`, ErrMalformed, "more than"},
	} {
		t.Run(name, func(t *testing.T) {
			p := newExec(t, script(t, c.body), ExecOptions{})
			_, err := p.DecryptKey(t.Context(), WrappedKey{WrapAlg: WrapAESGCM, CEKAlg: CEKAlgGCM, Blob: []byte{1}})
			mustFail(t, err, c.want)
			if !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("error %q does not mention %q", err, c.mention)
			}
			if strings.Contains(err.Error(), key) {
				t.Fatalf("error echoes a key: %v", err)
			}
		})
	}
	// Encrypt answers need the wrapped key and its algorithm.
	for name, body := range map[string]string{
		"no wrapped key": `echo '{"key":"` + key + `","wrap_alg":"AES/GCM"}'`,
		"no wrap alg":    `echo '{"key":"` + key + `","wrapped_key":"AAAA"}'`,
		"16-byte key":    `echo '{"key":"AAAAAAAAAAAAAAAAAAAAAA==","wrapped_key":"AAAA","wrap_alg":"AES/GCM"}'`,
	} {
		t.Run(name, func(t *testing.T) {
			p := newExec(t, script(t, body), ExecOptions{})
			_, _, err := p.GenerateKey(t.Context(), KeyRequest{})
			mustFail(t, err, ErrMalformed)
		})
	}
}

func TestExecProviderRedactsStderr(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(testBytes(76, 32))
	long := strings.Repeat("x", 3000)
	p := newExec(t, script(t, `printf 'leaked %s\033[31m tail %s\n' '`+key+`' '`+long+`' >&2; exit 1`), ExecOptions{})
	_, err := p.DecryptKey(t.Context(), WrappedKey{})
	mustFail(t, err, ErrKeyAccess)
	msg := err.Error()
	if strings.Contains(msg, key) || strings.Contains(msg, "\033") || !strings.Contains(msg, "leaked [redacted]") {
		t.Fatalf("stderr not cleaned: %q", msg)
	}
	if len(msg) > 1000 {
		t.Fatalf("message of %d bytes", len(msg))
	}
}

// TestExecProviderTimeout: a hanging program (and the child it started) is
// killed; the call returns instead of hanging.
func TestExecProviderTimeout(t *testing.T) {
	p := newExec(t, script(t, `sleep 300 & sleep 300`), ExecOptions{Timeout: 2 * time.Second})
	_, _, err := p.GenerateKey(t.Context(), KeyRequest{})
	mustFail(t, err, ErrKeyAccess)
	if !strings.Contains(err.Error(), "timed out after 2s") {
		t.Fatalf("message: %v", err)
	}
	// The caller's cancellation is reported as such.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = p.DecryptKey(ctx, WrappedKey{})
	mustFail(t, err, ErrKeyAccess)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancellation lost: %v", err)
	}
}

func TestNewExecProviderChecks(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"missing": filepath.Join(dir, "absent"), "not executable": plain, "directory": dir} {
		t.Run(name, func(t *testing.T) {
			_, err := NewExecProvider(path, ExecOptions{})
			mustFail(t, err, ErrKeyUnusable)
		})
	}
	p := newExec(t, script(t, "true"), ExecOptions{})
	if p.opt.Timeout != 10*time.Second {
		t.Fatalf("default timeout %v", p.opt.Timeout)
	}
}
