package mount

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/csefs/csefs/cse"
)

func aesB64(t *testing.T) string {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func noAWS() (*aws.Config, error) { return nil, errors.New("test: no AWS") }

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildProviderKeyringZones(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "fin.key", aesB64(t)+"\n")
	kr := writeFile(t, dir, "keyring.json", `{"version":2,"keys":[
	  {"name":"default","aes256":"`+aesB64(t)+`"},
	  {"name":"fin","aes256_file":"fin.key"},
	  {"name":"hr","aes256":"`+aesB64(t)+`"}],
	  "rules":[{"prefix":"data/finance/","key":"fin"}],
	  "encrypt_with":"default"}`)
	cfg := &Config{CSE: "custom", Keyring: kr, Zones: []string{"data/hr/=keyring:hr"},
		MaterialsDescription: true, JobFlowID: "j-TEST"}
	src := source{scheme: "s3", bucket: "b", prefix: "data/"}
	var log bytes.Buffer
	ks, err := buildProvider(context.Background(), cfg, src, noAWS, testLogger(&log))
	if err != nil {
		t.Fatal(err)
	}
	if ks.ZoneOf == nil || ks.ZoneOf("data/hr/x") != "data/hr/" || ks.ZoneOf("data/finance/x") != "data/finance/" || ks.ZoneOf("data/x") != "" {
		t.Fatalf("ZoneOf wrong")
	}
	if ks.MatDesc[MatDescJobflowID] != "j-TEST" || ks.MatDescFor("s3://b/data/x")[MatDescPath] != "s3://b/data/x" {
		t.Fatalf("matdesc %v", ks.MatDesc)
	}
	ctx := context.Background()
	for key, want := range map[string]string{"data/hr/a": "hr", "data/finance/a": "fin", "data/a": "default", "other": "default"} {
		k, w, err := ks.Provider.GenerateKey(ctx, cse.KeyRequest{CEKAlg: cse.CEKAlgGCM, Key: key, MatDesc: map[string]string{"Path": "s3://b/" + key}})
		if err != nil {
			t.Fatal(err)
		}
		if w.MatDesc[cse.KeyNameKey] != want || w.MatDesc["Path"] != "s3://b/"+key || w.WrapAlg != cse.WrapAESGCM {
			t.Errorf("%s: wrapped %s %v, want keyname %s", key, w.WrapAlg, w.MatDesc, want)
		}
		got, err := ks.Provider.DecryptKey(ctx, w)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%s: round trip: %v", key, err)
		}
	}
}

func TestBuildProviderRefusals(t *testing.T) {
	dir := t.TempDir()
	one := writeFile(t, dir, "one.json", `{"version":2,"keys":[{"name":"default","aes256":"`+aesB64(t)+`"}],"rules":[{"prefix":"a/","key":"default"}]}`)
	missing := writeFile(t, dir, "missing.json", `{"version":2,"keys":[{"name":"k","aes256_file":"nothere.key"}]}`)
	env := writeFile(t, dir, "env.json", `{"version":2,"keys":[{"name":"k","aes256_env":"CSEFS_TEST_SURELY_UNSET_VAR"}]}`)
	src := source{scheme: "s3", bucket: "b"}
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"missing key file":      {Config{CSE: "custom", Keyring: missing}, "nothere.key"},
		"missing env var":       {Config{CSE: "custom", Keyring: env}, "CSEFS_TEST_SURELY_UNSET_VAR"},
		"missing keyring":       {Config{CSE: "custom", Keyring: filepath.Join(dir, "nope.json")}, "nope.json"},
		"no keyring":            {Config{CSE: "custom"}, "--keyring"},
		"keyring zone, no ring": {Config{CSE: "kms", KMSKeyID: "k", Zones: []string{"x/=keyring:n"}}, "KMS key k"},
		"unknown keyring key":   {Config{CSE: "custom", Keyring: one, Zones: []string{"x/=keyring:nope"}}, "nope"},
		"zone dup of rule":      {Config{CSE: "custom", Keyring: one, Zones: []string{"a/=keyring:default"}}, "also has a rule"},
		"zones with cse off":    {Config{CSE: "off", Zones: []string{"a/=kms:k"}}, "--cse off"},
		"bad job flow json":     {Config{CSE: "off", MaterialsDescription: true, JobFlowJSON: one}, "jobFlowId"},
		"missing job flow json": {Config{CSE: "off", MaterialsDescription: true, JobFlowJSON: filepath.Join(dir, "jf.json")}, "jf.json"},
		"missing exec":          {Config{CSE: "custom", MaterialsProvider: "exec:" + filepath.Join(dir, "prog")}, "prog"},
	} {
		t.Run(name, func(t *testing.T) {
			var log bytes.Buffer
			cfg := tc.cfg
			_, err := buildProvider(context.Background(), &cfg, src, noAWS, testLogger(&log))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestJobFlowID(t *testing.T) {
	dir := t.TempDir()
	jf := writeFile(t, dir, "job-flow.json", `{"jobFlowId":"j-ABC","jobFlowCreationInstant":1}`)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{JobFlowID: "j-FLAG", JobFlowJSON: jf}, "j-FLAG"},
		{Config{JobFlowJSON: jf}, "j-ABC"},
	} {
		if got, err := jobFlowID(&tc.cfg); err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v", tc.cfg, got, err)
		}
	}
}

func TestApplyConfigFilesMaterialsProvider(t *testing.T) {
	var log bytes.Buffer
	cfg := Config{Source: "s3://b", MaterialsProvider: "exec:/bin/true"}
	if err := applyConfigFiles(&cfg, testLogger(&log)); err != nil || cfg.CSE != "custom" {
		t.Fatalf("cse %q, err %v", cfg.CSE, err)
	}
	for _, cfg := range []Config{{Source: "s3://b", MaterialsProvider: "/bin/true"}, {Source: "s3://b", CSE: "kms", MaterialsProvider: "exec:/bin/true"}} {
		if err := applyConfigFiles(&cfg, testLogger(&log)); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
