package e2e

import (
	"archive/zip"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/csefs/csefs/e2e/testenv"
)

// newTLSWorld is newSecureWorld without AWS_CA_BUNDLE: the mounts must be
// told whom to trust.
func newTLSWorld(t *testing.T) *world {
	t.Helper()
	w := newSecureWorld(t)
	w.env = slices.DeleteFunc(w.env, func(kv string) bool { return strings.HasPrefix(kv, "AWS_CA_BUNDLE=") })
	return w
}

// artifactsZip writes a zip of EMR's PEM artifact names (nil contents are
// left out) and returns its path.
func artifactsZip(t *testing.T, files map[string][]byte) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range files {
		if data == nil {
			continue
		}
		f, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "certs.zip")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newCA(t *testing.T, name string) *testenv.CA {
	t.Helper()
	ca, err := testenv.NewCA(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *testenv.CA, o testenv.CertOptions) (chain, key []byte) {
	t.Helper()
	chain, key, err := ca.Issue("csefs-e2e-client", o)
	if err != nil {
		t.Fatal(err)
	}
	return chain, key
}

// roundTrip writes a file through m and reads it back.
func roundTrip(t *testing.T, m *mounted, name string) {
	t.Helper()
	data := []byte("over TLS: " + name)
	if err := os.WriteFile(m.path(name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(m.path(name)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %s: %v %q", name, err, got)
	}
}

// TestCABundle: a MinIO whose certificate comes from a test CA is reached
// with --ca-bundle (S3 and KMS through the same client) and with the SDK's
// AWS_CA_BUNDLE; without either the mount fails at once naming the endpoint.
func TestCABundle(t *testing.T) {
	w := newTLSWorld(t)
	m := w.mount(t, "bundle", "--ca-bundle", w.S3.CA.File)
	roundTrip(t, m, "a.txt")
	m2 := mountWith(t, append(slices.Clone(w.env), "AWS_CA_BUNDLE="+w.S3.CA.File), "s3://"+w.Bucket+"/env", w.s3Args()...)
	roundTrip(t, m2, "b.txt")
	_, out, err := tryMount(t, w.env, "s3://"+w.Bucket, w.s3Args()...)
	if err == nil {
		t.Fatal("mount without the CA succeeded")
	}
	for _, s := range []string{w.S3.Endpoint, "certificate signed by unknown authority"} {
		if !strings.Contains(out, s) {
			t.Errorf("message does not mention %q:\n%s", s, out)
		}
	}
}

// TestTLSArtifactsMutualTLS: EMR's PEM artifacts (a zip, a directory, an
// s3:// zip) give the mount its client certificate for proxies that refuse
// clients without one, in front of S3 and of KMS, and trustedCertificates.pem
// adds the proxies' CA to the trusted roots. Without the artifacts the
// proxies refuse the mount, which fails naming the endpoint.
func TestTLSArtifactsMutualTLS(t *testing.T) {
	w := newTLSWorld(t)
	proxyCA, clientCA := newCA(t, "proxy-ca"), newCA(t, "client-ca")
	s3p := testenv.NewTLSProxy(t, w.S3.Endpoint, testenv.TLSProxyOptions{CA: proxyCA, ClientCA: clientCA, TargetCA: w.S3.CA})
	kmsp := testenv.NewTLSProxy(t, w.KMS.Endpoint, testenv.TLSProxyOptions{CA: proxyCA, ClientCA: clientCA})
	chain, key := issue(t, clientCA, testenv.CertOptions{Client: true})
	files := map[string][]byte{"privateKey.pem": key, "certificateChain.pem": chain, "trustedCertificates.pem": proxyCA.CertPEM}
	zipPath := artifactsZip(t, files)
	dir := t.TempDir()
	for n, b := range files {
		os.WriteFile(filepath.Join(dir, n), b, 0o600)
	}
	viaProxies := func(extra ...string) []string {
		return append([]string{"--endpoint-url", s3p.URL, "--path-style", "--region", w.S3.Region,
			"--kms-endpoint-url", kmsp.URL, "--cse", "kms", "--kms-key-id", w.KMS.KeyID}, extra...)
	}
	t.Run("zip", func(t *testing.T) {
		m := mountWith(t, w.env, "s3://"+w.Bucket+"/zip", viaProxies("--tls-artifacts", zipPath)...)
		roundTrip(t, m, "z.txt")
	})
	t.Run("directory", func(t *testing.T) {
		m := mountWith(t, w.env, "s3://"+w.Bucket+"/dir", viaProxies("--tls-artifacts", dir)...)
		roundTrip(t, m, "d.txt")
	})
	t.Run("s3 zip", func(t *testing.T) {
		// As on EMR, the zip is fetched from S3 before the certificate is
		// known: from MinIO directly (trusted through --ca-bundle); KMS
		// is behind the mutual-TLS proxy.
		zipData, _ := os.ReadFile(zipPath)
		w.putRaw(t, "certs/certs.zip", zipData, nil)
		args := []string{"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region, "--ca-bundle", w.S3.CA.File,
			"--kms-endpoint-url", kmsp.URL, "--cse", "kms", "--kms-key-id", w.KMS.KeyID,
			"--tls-artifacts", "s3://" + w.Bucket + "/certs/certs.zip"}
		m := mountWith(t, w.env, "s3://"+w.Bucket+"/s3zip", args...)
		roundTrip(t, m, "s.txt")
	})
	t.Run("no client certificate", func(t *testing.T) {
		_, out, err := tryMount(t, w.env, "s3://"+w.Bucket, viaProxies("--ca-bundle", proxyCA.File)...)
		if err == nil {
			t.Fatal("mount without a client certificate succeeded")
		}
		if !strings.Contains(out, s3p.URL) || !strings.Contains(out, "certificate") {
			t.Errorf("message does not name the endpoint and the certificate:\n%s", out)
		}
	})
}

// TestTLSBadInput: each unusable TLS input stops the mount at once with a
// message naming the file or the endpoint.
func TestTLSBadInput(t *testing.T) {
	w := newTLSWorld(t)
	ca := newCA(t, "bad-input-ca")
	chain, key := issue(t, ca, testenv.CertOptions{Client: true})
	_, otherKey := issue(t, ca, testenv.CertOptions{Client: true})
	oldChain, oldKey := issue(t, ca, testenv.CertOptions{Client: true, NotAfter: time.Now().Add(-time.Hour)})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"), 0o600)
	expired := testenv.NewTLSProxy(t, w.S3.Endpoint, testenv.TLSProxyOptions{CA: ca, TargetCA: w.S3.CA,
		Cert: testenv.CertOptions{NotAfter: time.Now().Add(-time.Hour)}})
	untrustedKMS := testenv.NewTLSProxy(t, w.KMS.Endpoint, testenv.TLSProxyOptions{CA: ca})
	missing := filepath.Join(t.TempDir(), "absent.zip")
	noKey := artifactsZip(t, map[string][]byte{"certificateChain.pem": chain})
	badPEM := artifactsZip(t, map[string][]byte{"certificateChain.pem": []byte("garbage"), "privateKey.pem": key})
	mismatch := artifactsZip(t, map[string][]byte{"certificateChain.pem": chain, "privateKey.pem": otherKey})
	old := artifactsZip(t, map[string][]byte{"certificateChain.pem": oldChain, "privateKey.pem": oldKey})
	badTrusted := artifactsZip(t, map[string][]byte{"certificateChain.pem": chain, "privateKey.pem": key, "trustedCertificates.pem": []byte("nothing")})
	bundle := []string{"--ca-bundle", w.S3.CA.File}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing artifacts", append(bundle, "--tls-artifacts", missing), []string{missing}},
		{"no private key", append(bundle, "--tls-artifacts", noKey), []string{noKey, "privateKey.pem"}},
		{"malformed chain", append(bundle, "--tls-artifacts", badPEM), []string{badPEM, "certificateChain.pem", "no PEM certificate"}},
		{"key does not match", append(bundle, "--tls-artifacts", mismatch), []string{mismatch, "privateKey.pem does not match certificateChain.pem"}},
		{"expired client certificate", append(bundle, "--tls-artifacts", old), []string{old, "expired"}},
		{"malformed trusted certificates", append(bundle, "--tls-artifacts", badTrusted), []string{badTrusted, "trustedCertificates.pem"}},
		{"malformed CA bundle", []string{"--ca-bundle", garbage}, []string{garbage}},
		{"missing CA bundle", []string{"--ca-bundle", missing}, []string{missing}},
		{"untrusted server", nil, []string{w.S3.Endpoint, "unknown authority"}},
		{"expired server certificate", []string{"--ca-bundle", ca.File, "--endpoint-url", expired.URL}, []string{expired.URL, "expired"}},
		{"untrusted KMS endpoint", append(bundle, "--kms-endpoint-url", untrustedKMS.URL), []string{"KMS endpoint " + untrustedKMS.URL, "unknown authority"}},
		{"SSE-C over http", []string{"--endpoint-url", "http://127.0.0.1:9", "--sse-c-key-file", newSSEKey(t).file}, []string{"http://127.0.0.1:9", "SSE-C sends its key"}},
		{"plain http off loopback", []string{"--endpoint-url", "http://192.0.2.1:9000"}, []string{"http://192.0.2.1:9000", "--allow-http"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out, err := tryMount(t, w.env, "s3://"+w.Bucket, w.s3Args(tc.args...)...)
			if err == nil {
				t.Fatal("mount succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("message does not mention %q:\n%s", s, out)
				}
			}
		})
	}
}

// TestMaintenanceCommandsTLS: csefs recover and csefs uploads list reach an
// https MinIO of a test CA with --ca-bundle (recover also with the mount's
// SSE-C key, which its copies would need).
func TestMaintenanceCommandsTLS(t *testing.T) {
	w := newTLSWorld(t)
	k := newSSEKey(t)
	base := []string{"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region, "--ca-bundle", w.S3.CA.File}
	for _, args := range [][]string{
		append(append([]string{"recover"}, base...), "--sse-c-key-file", k.file, "s3://"+w.Bucket),
		append(append([]string{"uploads", "list"}, base...), "s3://"+w.Bucket),
	} {
		cmd := exec.Command(csefsBin(t), args...)
		cmd.Env = w.env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("csefs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
