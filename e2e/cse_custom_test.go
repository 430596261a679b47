package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/csefs/csefs/cse"
)

// plainArgs point csefs at the test servers without choosing a mode.
func (w *world) plainArgs(extra ...string) []string {
	return append([]string{
		"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region,
		"--kms-endpoint-url", w.KMS.Endpoint,
	}, extra...)
}

func aesKeyB64(t *testing.T) string {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func writeConfig(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeMount(t *testing.T, m *mounted, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(m.path(name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path(name), []byte(data), 0o644); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
}

func readMount(t *testing.T, m *mounted, name, want string) {
	t.Helper()
	got, err := os.ReadFile(m.path(name))
	if err != nil || string(got) != want {
		t.Errorf("read %s: %q, %v; want %q", name, got, err, want)
	}
}

// TestCustomKeyring: a keyring mount writes AES/GCM and RSA-OAEP-SHA1
// envelopes with {"keyname": …} chosen by prefix rules; a mount with the same
// keys and other rules reads them all; a mount lacking a key gets EACCES and
// logs the description.
func TestCustomKeyring(t *testing.T) {
	w := newWorld(t)
	pem, err := filepath.Abs("../cse/testdata/rsa2048-test-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	aes1, fin := aesKeyB64(t), aesKeyB64(t)
	keys := `{"name":"aes1","aes256":"` + aes1 + `"},{"name":"fin","aes256":"` + fin + `"},{"name":"rsa1","rsa_private_key_pem_file":"` + pem + `"}`
	ringA := writeConfig(t, "a.json", `{"version":2,"keys":[`+keys+`],"rules":[{"prefix":"finance/","key":"fin"},{"prefix":"rsa/","key":"rsa1"}],"encrypt_with":"aes1"}`)
	ringB := writeConfig(t, "b.json", `{"version":2,"keys":[`+keys+`],"encrypt_with":"fin"}`)
	ringC := writeConfig(t, "c.json", `{"version":2,"keys":[{"name":"aes1","aes256":"`+aes1+`"},{"name":"rsa1","rsa_private_key_pem_file":"`+pem+`"}],"encrypt_with":"aes1"}`)

	a := mountWith(t, w.env, "s3://"+w.Bucket, w.plainArgs("--cse", "custom", "--keyring", ringA)...)
	files := map[string]struct{ data, wrap, keyname string }{
		"top.txt":          {"top", cse.WrapAESGCM, "aes1"},
		"finance/q1.csv":   {"q1", cse.WrapAESGCM, "fin"},
		"rsa/secret.txt":   {"rsa", cse.WrapRSAOAEPSHA1, "rsa1"},
		"financials/x.txt": {"x", cse.WrapAESGCM, "aes1"}, // "finance/" is not a prefix of it
	}
	for name, f := range files {
		writeMount(t, a, name, f.data)
	}
	a.Unmount(t)
	for name, f := range files {
		envl := storedEnvelope(t, w, name, false)
		if envl.Key.CEKAlg != cse.CEKAlgGCM || envl.Key.WrapAlg != f.wrap || envl.Key.MatDesc[cse.KeyNameKey] != f.keyname || len(envl.Key.MatDesc) != 1 {
			t.Errorf("%s: cek %q wrap %q matdesc %v; want %s %s {keyname: %s}", name, envl.Key.CEKAlg, envl.Key.WrapAlg, envl.Key.MatDesc, cse.CEKAlgGCM, f.wrap, f.keyname)
		}
	}

	b := mountWith(t, w.env, "s3://"+w.Bucket, w.plainArgs("--cse", "custom", "--keyring", ringB)...)
	for name, f := range files {
		readMount(t, b, name, f.data)
	}
	writeMount(t, b, "rsa/fromb.txt", "b")
	b.Unmount(t)
	if md := storedEnvelope(t, w, "rsa/fromb.txt", false).Key.MatDesc; md[cse.KeyNameKey] != "fin" {
		t.Errorf("mount B's rules: rsa/fromb.txt written with %v, want keyname fin", md)
	}

	c := mountWith(t, w.env, "s3://"+w.Bucket, w.plainArgs("--cse", "custom", "--keyring", ringC)...)
	readMount(t, c, "top.txt", "top")
	readMount(t, c, "rsa/secret.txt", "rsa")
	if _, err := os.ReadFile(c.path("finance/q1.csv")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("reading finance/q1.csv without key fin: %v, want EACCES", err)
	}
	if log := c.logText(t); !strings.Contains(log, `\"keyname\":\"fin\"`) && !strings.Contains(log, `"keyname":"fin"`) {
		t.Errorf("log does not name the materials description {\"keyname\":\"fin\"}:\n%s", log)
	}
}

// TestCustomExecProvider: the example exec provider round-trips; a failing
// one and a hanging one (past --materials-provider-timeout) give errors, not
// hangs, and the log names the cause.
func TestCustomExecProvider(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	prog := filepath.Join(dir, "exec-provider-example")
	build := exec.Command("go", "build", "-o", prog, "./cse/exec-provider-example")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example provider: %v\n%s", err, out)
	}
	env := append(append([]string(nil), w.env...), "CSEFS_EXAMPLE_KEY="+aesKeyB64(t))
	m := mountWith(t, env, "s3://"+w.Bucket, w.plainArgs("--materials-provider", "exec:"+prog)...)
	writeMount(t, m, "dir/ok.txt", "hello exec")
	readMount(t, m, "dir/ok.txt", "hello exec")
	m.Unmount(t)
	envl := storedEnvelope(t, w, "dir/ok.txt", false)
	if envl.Key.WrapAlg != cse.WrapAESGCM || envl.Key.MatDesc[cse.KeyNameKey] != "exec-example" {
		t.Errorf("exec envelope: wrap %q matdesc %v", envl.Key.WrapAlg, envl.Key.MatDesc)
	}
	m = mountWith(t, env, "s3://"+w.Bucket, w.plainArgs("--materials-provider", "exec:"+prog)...)
	readMount(t, m, "dir/ok.txt", "hello exec") // a fresh process: the program unwraps
	m.Unmount(t)

	failing := writeConfig(t, "failing", "#!/bin/sh\necho 'vault unreachable: connection refused' >&2\nexit 3\n")
	hanging := writeConfig(t, "hanging", "#!/bin/sh\nexec sleep 120\n")
	for _, p := range []string{failing, hanging} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ name, prog, cause string }{
		{"failing", failing, "vault unreachable"},
		{"hanging", hanging, "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mountWith(t, env, "s3://"+w.Bucket, w.plainArgs("--materials-provider", "exec:"+tc.prog, "--materials-provider-timeout", "1s")...)
			_, err := os.ReadFile(m.path("dir/ok.txt"))
			if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EIO) {
				t.Errorf("read: %v, want EACCES or EIO", err)
			}
			if err := os.WriteFile(m.path("new.txt"), []byte("x"), 0o644); err == nil {
				t.Errorf("write with a %s provider succeeded", tc.name)
			}
			if log := m.logText(t); !strings.Contains(log, tc.cause) {
				t.Errorf("log does not name the cause %q:\n%s", tc.cause, log)
			}
		})
	}
}
