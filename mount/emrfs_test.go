package mount

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func site(props ...string) []byte {
	var b strings.Builder
	b.WriteString("<?xml version=\"1.0\"?>\n<!-- emrfs -->\n<configuration>\n")
	for i := 0; i+1 < len(props); i += 2 {
		b.WriteString("  <property>\n    <name> " + props[i] + " </name>\n    <value>" + props[i+1] + "</value>\n    <final>true</final>\n  </property>\n")
	}
	b.WriteString("</configuration>\n")
	return []byte(b.String())
}

func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func setOf(names ...string) flagSet {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return func(n string) bool { return m[n] }
}

func TestParseEMRFSSite(t *testing.T) {
	s, err := ParseEMRFSSite(site("a", "1", "b", " 2 ", "a", "3"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Props["a"] != "3" || s.Props["b"] != "2" || strings.Join(s.Names, ",") != "a,b" {
		t.Fatalf("got %v %v", s.Props, s.Names)
	}
	for name, bad := range map[string]string{
		"empty":         "",
		"not XML":       "fs.s3.cse.enabled=true",
		"unclosed":      "<configuration><property><name>a</name><value>1</value></property>",
		"wrong root":    "<properties><property><name>a</name><value>1</value></property></properties>",
		"no name":       "<configuration><property><value>1</value></property></configuration>",
		"no value":      "<configuration><property><name>a</name></property></configuration>",
		"trailing junk": "<configuration></configuration><configuration></configuration>",
		"mismatched":    "<configuration><property><name>a</value></property></configuration>",
	} {
		if _, err := ParseEMRFSSite([]byte(bad)); !errors.Is(err, ErrConfigFile) {
			t.Errorf("%s: err = %v, want ErrConfigFile", name, err)
		}
	}
}

func TestApplyEMRFSSite(t *testing.T) {
	kmsSite := []string{
		"fs.s3.cse.enabled", "true",
		"fs.s3.cse.encryptionMaterialsProvider", EMRFSKMSProviderClass,
		"fs.s3.cse.kms.keyId", "alias/emr",
		"fs.s3.cse.kms.region", "eu-west-1",
		"fs.s3.cse.cryptoStorageMode", "InstructionFile",
		"fs.s3.cse.materialsDescription.enabled", "true",
		"fs.s3.cse.cryptoMode", "StrictAuthenticatedEncryption",
		"fs.s3.cse.encryptionMaterialsProvider.uri", "s3://b/p.jar",
		"fs.s3.somethingElse", "x",
	}
	apply := func(t *testing.T, cfg Config, set flagSet, props ...string) (Config, string, error) {
		t.Helper()
		s, err := ParseEMRFSSite(site(props...))
		if err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		err = applyEMRFSSite(&cfg, s, set, testLogger(&log))
		return cfg, log.String(), err
	}
	t.Run("kms", func(t *testing.T) {
		cfg, log, err := apply(t, Config{KMSWrap: "kms+context"}, nil, kmsSite...)
		if err != nil {
			t.Fatal(err)
		}
		want := Config{CSE: "kms", KMSWrap: "kms", KMSKeyID: "alias/emr", KMSRegion: "eu-west-1",
			StorageMode: "instruction-file", MaterialsDescription: true, StrictRanged: true}
		if cfg.CSE != want.CSE || cfg.KMSWrap != want.KMSWrap || cfg.KMSKeyID != want.KMSKeyID || cfg.KMSRegion != want.KMSRegion ||
			cfg.StorageMode != want.StorageMode || cfg.MaterialsDescription != want.MaterialsDescription || cfg.StrictRanged != want.StrictRanged {
			t.Fatalf("got %+v", cfg)
		}
		if !strings.Contains(log, "fs.s3.somethingElse") || !strings.Contains(log, "level=DEBUG") {
			t.Errorf("unknown property not logged at debug:\n%s", log)
		}
	})
	t.Run("flags win", func(t *testing.T) {
		in := Config{CSE: "kms", KMSWrap: "kms+context", KMSKeyID: "flagkey", StorageMode: "object-metadata"}
		cfg, _, err := apply(t, in, setOf("kms-wrap", "kms-key-id", "storage-mode", "materials-description", "strict-ranged-reads"), kmsSite...)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.KMSWrap != "kms+context" || cfg.KMSKeyID != "flagkey" || cfg.StorageMode != "object-metadata" || cfg.MaterialsDescription || cfg.StrictRanged {
			t.Fatalf("file overrode explicit flags: %+v", cfg)
		}
	})
	t.Run("v2 keeps kms+context", func(t *testing.T) {
		cfg, _, err := apply(t, Config{KMSWrap: "kms+context"}, nil, append(kmsSite, "fs.s3.cse.encryptionV2.enabled", "true")...)
		if err != nil || cfg.KMSWrap != "kms+context" {
			t.Fatalf("wrap %q, err %v", cfg.KMSWrap, err)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		cfg, _, err := apply(t, Config{}, nil, "fs.s3.cse.enabled", "false", "fs.s3.cse.encryptionMaterialsProvider", EMRFSKMSProviderClass)
		if err != nil || cfg.CSE != "off" {
			t.Fatalf("cse %q, err %v", cfg.CSE, err)
		}
		cfg, _, err = apply(t, Config{CSE: "kms"}, setOf("cse"), "fs.s3.cse.enabled", "false")
		if err != nil || cfg.CSE != "kms" {
			t.Fatalf("--cse lost: cse %q, err %v", cfg.CSE, err)
		}
	})
	t.Run("encryption only logged", func(t *testing.T) {
		_, log, err := apply(t, Config{}, nil, "fs.s3.cse.cryptoMode", "EncryptionOnly")
		if err != nil || !strings.Contains(log, "AuthenticatedEncryption-compatible") {
			t.Fatalf("err %v, log:\n%s", err, log)
		}
	})
	t.Run("custom class", func(t *testing.T) {
		props := []string{"fs.s3.cse.enabled", "true", "fs.s3.cse.encryptionMaterialsProvider", "com.example.MyProvider"}
		if _, _, err := apply(t, Config{}, nil, props...); !errors.Is(err, ErrConfigFile) || !strings.Contains(err.Error(), "com.example.MyProvider") {
			t.Fatalf("err = %v", err)
		}
		for _, in := range []Config{{Keyring: "k.json"}, {MaterialsProvider: "exec:/bin/p"}} {
			cfg, _, err := apply(t, in, nil, props...)
			if err != nil || cfg.CSE != "custom" {
				t.Fatalf("%+v: cse %q, err %v", in, cfg.CSE, err)
			}
		}
	})
	for name, props := range map[string][]string{
		"no provider": {"fs.s3.cse.enabled", "true"},
		"bad bool":    {"fs.s3.cse.enabled", "yes"},
		"bad storage": {"fs.s3.cse.cryptoStorageMode", "Sidecar"},
		"bad mode":    {"fs.s3.cse.cryptoMode", "GCM"},
		"bad matdesc": {"fs.s3.cse.materialsDescription.enabled", "1"},
		"bad v2 bool": {"fs.s3.cse.encryptionV2.enabled", "on"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := apply(t, Config{}, nil, props...); !errors.Is(err, ErrConfigFile) {
				t.Fatalf("err = %v, want ErrConfigFile", err)
			}
		})
	}
}

func TestLoadEMRFSSiteNamesFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "emrfs-site.xml")
	if err := os.WriteFile(bad, []byte("<configuration><property>"), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	for _, p := range []string{bad, filepath.Join(dir, "missing.xml")} {
		err := loadEMRFSSite(&Config{}, p, nil, testLogger(&log))
		if !errors.Is(err, ErrConfigFile) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v", p, err)
		}
	}
}
