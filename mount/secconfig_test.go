package mount

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecurityConfiguration(t *testing.T) {
	const doc = `{"EncryptionConfiguration": {
	  "EnableInTransitEncryption": false, "EnableAtRestEncryption": true,
	  "AtRestEncryptionConfiguration": {
	    "S3EncryptionConfiguration": {
	      "EncryptionMode": "CSE-KMS", "AwsKmsKey": "arn:aws:kms:us-east-1:1:key/default",
	      "Overrides": [
	        {"BucketName": "custom-b", "EncryptionMode": "CSE-Custom", "S3Object": "s3://x/p.jar", "EncryptionKeyProviderClass": "com.example.P"},
	        {"BucketName": "sse-b", "EncryptionMode": "SSE-S3"},
	        {"BucketName": "ssekms-b", "EncryptionMode": "SSE-KMS", "AwsKmsKey": "alias/sse"},
	        {"BucketName": "kms-b", "EncryptionMode": "CSE-KMS", "AwsKmsKey": "alias/b"}
	      ]},
	    "LocalDiskEncryptionConfiguration": {"EncryptionKeyProviderType": "AwsKms", "AwsKmsKey": "x"}}}}`
	sc, err := ParseSecurityConfiguration([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bucket   string
		in       Config
		set      flagSet
		cse, key string
		wrap     string
		sse      string
		sseKey   string
		err      error
		msg      string
	}{
		{bucket: "other", cse: "kms", key: "arn:aws:kms:us-east-1:1:key/default", wrap: "kms"},
		{bucket: "kms-b", cse: "kms", key: "alias/b", wrap: "kms"},
		{bucket: "kms-b", in: Config{KMSKeyID: "flag", KMSWrap: "kms+context"}, set: setOf("kms-key-id", "kms-wrap"), cse: "kms", key: "flag", wrap: "kms+context"},
		{bucket: "custom-b", err: ErrConfigFile, msg: "com.example.P"},
		{bucket: "custom-b", in: Config{Keyring: "k"}, cse: "custom"},
		{bucket: "sse-b", cse: "off", sse: "s3"},
		{bucket: "ssekms-b", cse: "off", sse: "kms", sseKey: "alias/sse"},
		{bucket: "ssekms-b", in: Config{CSE: "kms", KMSKeyID: "k"}, set: setOf("cse", "kms-key-id"), cse: "kms", key: "k", sse: "kms", sseKey: "alias/sse"},
		{bucket: "ssekms-b", in: Config{SSE: "c"}, set: setOf("sse"), cse: "off", sse: "c"},
	} {
		cfg := tc.in
		err := applySecurityConfiguration(&cfg, sc, tc.bucket, tc.set)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: err = %v, want %v mentioning %q", tc.bucket, err, tc.err, tc.msg)
			}
			continue
		}
		if err != nil || cfg.CSE != tc.cse || cfg.KMSKeyID != tc.key || cfg.KMSWrap != tc.wrap || cfg.SSE != tc.sse || cfg.SSEKMSKeyID != tc.sseKey {
			t.Errorf("%s: got cse %q key %q wrap %q sse %q sse key %q err %v", tc.bucket, cfg.CSE, cfg.KMSKeyID, cfg.KMSWrap, cfg.SSE, cfg.SSEKMSKeyID, err)
		}
	}
	for name, bad := range map[string]string{
		"malformed":    `{"EncryptionConfiguration": {`,
		"no S3":        `{"EncryptionConfiguration": {"AtRestEncryptionConfiguration": {}}}`,
		"no mode":      `{"EncryptionConfiguration": {"AtRestEncryptionConfiguration": {"S3EncryptionConfiguration": {}}}}`,
		"bad override": `{"EncryptionConfiguration": {"AtRestEncryptionConfiguration": {"S3EncryptionConfiguration": {"EncryptionMode": "CSE-KMS", "AwsKmsKey": "k", "Overrides": [{"EncryptionMode": "SSE-S3"}]}}}}`,
		"wrong type":   `{"EncryptionConfiguration": {"AtRestEncryptionConfiguration": {"S3EncryptionConfiguration": {"EncryptionMode": 3}}}}`,
	} {
		if _, err := ParseSecurityConfiguration([]byte(bad)); !errors.Is(err, ErrConfigFile) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	for _, mode := range []string{`"CSE-KMS"`, `"Bogus"`} {
		sc, err := ParseSecurityConfiguration([]byte(`{"EncryptionConfiguration": {"AtRestEncryptionConfiguration": {"S3EncryptionConfiguration": {"EncryptionMode": ` + mode + `}}}}`))
		if err != nil {
			t.Fatal(err)
		}
		if err := applySecurityConfiguration(&Config{}, sc, "b", nil); !errors.Is(err, ErrConfigFile) {
			t.Errorf("%s without a key: err = %v", mode, err)
		}
	}
	p := filepath.Join(t.TempDir(), "sec.json")
	if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := loadSecurityConfiguration(&Config{}, p, "b", nil); !errors.Is(err, ErrConfigFile) || !strings.Contains(err.Error(), p) {
		t.Errorf("err = %v, want the file named", err)
	}
}
