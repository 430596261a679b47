package mount

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSSEOptions(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	raw := filepath.Join(dir, "raw.key")
	b64 := filepath.Join(dir, "b64.key")
	short := filepath.Join(dir, "short.key")
	os.WriteFile(raw, key, 0o600)
	os.WriteFile(b64, []byte(" "+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	os.WriteFile(short, []byte(base64.StdEncoding.EncodeToString(key[:16])), 0o600)
	for _, p := range []string{raw, b64} {
		sse, err := sseOptions(Config{SSE: "c", SSECKeyFile: p})
		if err != nil || !bytes.Equal(sse.CustomerKey, key) {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{short, filepath.Join(dir, "absent")} {
		_, err := sseOptions(Config{SSE: "c", SSECKeyFile: p})
		if err == nil || !strings.Contains(err.Error(), "--sse-c-key-file") {
			t.Errorf("%s: err = %v", p, err)
		}
	}
	for _, tc := range []struct {
		cfg Config
		msg string
	}{
		{Config{SSE: "x"}, "expected s3, kms or c"},
		{Config{SSE: "c"}, "--sse c needs --sse-c-key-file"},
		{Config{SSE: "s3", SSECKeyFile: raw}, "--sse-c-key-file needs --sse c"},
		{Config{SSE: "s3", SSEKMSKeyID: "k"}, "--sse-kms-key-id needs --sse kms"},
	} {
		c := tc.cfg
		c.Source, c.Mountpoint, c.CSE = "s3://b", dir, "off"
		if _, err := c.normalize(); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.msg)
		}
	}
	c := Config{Source: "s3://b", Mountpoint: dir, CSE: "off", SSECKeyFile: raw}
	if _, err := c.normalize(); err != nil || c.SSE != "c" {
		t.Errorf("--sse-c-key-file alone: sse %q err %v", c.SSE, err)
	}
}

func TestEMRFSSiteSSE(t *testing.T) {
	var buf bytes.Buffer
	for _, tc := range []struct {
		props          []string
		in             Config
		set            flagSet
		cse, sse, kkey string
	}{
		{props: []string{"fs.s3.enableServerSideEncryption", "true"}, cse: "off", sse: "s3"},
		{props: []string{"fs.s3.enableServerSideEncryption", "true", "fs.s3.serverSideEncryption.kms.keyId", "alias/s"}, cse: "off", sse: "kms", kkey: "alias/s"},
		{props: []string{"fs.s3.enableServerSideEncryption", "false"}},
		{props: []string{"fs.s3.enableServerSideEncryption", "true", "fs.s3.cse.enabled", "true", "fs.s3.cse.encryptionMaterialsProvider", EMRFSKMSProviderClass},
			cse: "kms", sse: "s3"},
		{props: []string{"fs.s3.enableServerSideEncryption", "true"}, in: Config{CSE: "kms", SSE: "c"}, set: setOf("cse", "sse"), cse: "kms", sse: "c"},
	} {
		s, err := ParseEMRFSSite(site(tc.props...))
		if err != nil {
			t.Fatal(err)
		}
		cfg := tc.in
		if err := applyEMRFSSite(&cfg, s, tc.set, testLogger(&buf)); err != nil {
			t.Fatal(err)
		}
		if cfg.CSE != tc.cse || cfg.SSE != tc.sse || cfg.SSEKMSKeyID != tc.kkey {
			t.Errorf("%v: cse %q sse %q key %q", tc.props, cfg.CSE, cfg.SSE, cfg.SSEKMSKeyID)
		}
	}
	s, _ := ParseEMRFSSite(site("fs.s3.enableServerSideEncryption", "yes"))
	if err := applyEMRFSSite(&Config{}, s, nil, testLogger(&buf)); err == nil {
		t.Error("a non-boolean enableServerSideEncryption was accepted")
	}
}

func TestSecurityConfigurationInTransit(t *testing.T) {
	doc := func(enabled, typ string) string {
		return `{"EncryptionConfiguration": {"EnableInTransitEncryption": ` + enabled + `,
		  "InTransitEncryptionConfiguration": {"TLSCertificateConfiguration": {"CertificateProviderType": "` + typ + `", "S3Object": "s3://cfg/certs.zip"}},
		  "EnableAtRestEncryption": true,
		  "AtRestEncryptionConfiguration": {"S3EncryptionConfiguration": {"EncryptionMode": "SSE-S3"}}}}`
	}
	for _, tc := range []struct {
		enabled, typ string
		set          flagSet
		want         string
	}{
		{"true", "PEM", nil, "s3://cfg/certs.zip"},
		{"false", "PEM", nil, ""},
		{"true", "Custom", nil, ""},
		{"true", "PEM", setOf("tls-artifacts"), "flag"},
	} {
		sc, err := ParseSecurityConfiguration([]byte(doc(tc.enabled, tc.typ)))
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{}
		if tc.set != nil {
			cfg.TLSArtifacts = "flag"
		}
		if err := applySecurityConfiguration(&cfg, sc, "b", tc.set); err != nil || cfg.TLSArtifacts != tc.want || cfg.SSE != "s3" {
			t.Errorf("%s %s: artifacts %q sse %q err %v", tc.enabled, tc.typ, cfg.TLSArtifacts, cfg.SSE, err)
		}
	}
}
