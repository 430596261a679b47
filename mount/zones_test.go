package mount

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/csefs/csefs/cse"
)

func TestZones(t *testing.T) {
	zs, err := ParseZonesFile([]byte(`{"zones":[{"prefix":"finance/","key":"kms:alias/fin"},{"prefix":"finance/eu/","key":"keyring:eu"},{"prefix":"hr","key":"keyring:hr-2026"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if zs[0].Key != (ZoneKey{"kms", "alias/fin"}) || zs[2].Key.String() != "keyring:hr-2026" {
		t.Fatalf("got %+v", zs)
	}
	for key, want := range map[string]string{
		"finance/a": "finance/", "finance/eu/a": "finance/eu/", "finance": "", "financials/a": "",
		"hr/x": "hr", "hrx": "hr", "": "", "a/finance/x": "",
	} {
		if got := zs.ZoneOf(key); got != want {
			t.Errorf("ZoneOf(%q) = %q, want %q", key, got, want)
		}
	}
	z, err := ParseZoneFlag("a/b/=kms:arn:aws:kms:us-east-1:1:key/x=y")
	if err != nil || z.Prefix != "a/b/" || z.Key.ID != "arn:aws:kms:us-east-1:1:key/x=y" {
		t.Fatalf("got %+v, %v", z, err)
	}
	for _, bad := range []string{"nokey", "p=", "p=kms:", "p=aws:x", "p=keyring"} {
		if _, err := ParseZoneFlag(bad); err == nil {
			t.Errorf("ParseZoneFlag(%q) accepted", bad)
		}
	}
	for name, bad := range map[string]string{
		"malformed": `{"zones":[`, "unknown field": `{"zones":[{"prefix":"a/","key":"kms:k","kms":"x"}]}`,
		"bad key": `{"zones":[{"prefix":"a/","key":"k"}]}`, "trailing": `{"zones":[]} {}`,
	} {
		if _, err := ParseZonesFile([]byte(bad)); !errors.Is(err, ErrConfigFile) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	for name, bad := range map[string]Zones{
		"empty prefix": {{Prefix: "", Key: ZoneKey{"kms", "k"}}},
		"slash":        {{Prefix: "/a", Key: ZoneKey{"kms", "k"}}},
		"twice":        {{Prefix: "a/", Key: ZoneKey{"kms", "k"}}, {Prefix: "a/", Key: ZoneKey{"kms", "j"}}},
	} {
		if err := bad.Check(); !errors.Is(err, ErrConfigFile) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestLoadZones(t *testing.T) {
	p := filepath.Join(t.TempDir(), "zones.json")
	if err := os.WriteFile(p, []byte(`{"zones":[{"prefix":"a/","key":"kms:k"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	zs, err := loadZones(p, []string{"b/=keyring:n"})
	if err != nil || len(zs) != 2 {
		t.Fatalf("got %v, %v", zs, err)
	}
	if _, err := loadZones(p, []string{"a/=kms:j"}); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("duplicate across file and flag: err = %v", err)
	}
	if err := os.WriteFile(p, []byte(`{"zones":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadZones(p, nil); !errors.Is(err, ErrConfigFile) || !strings.Contains(err.Error(), p) {
		t.Errorf("malformed: err = %v", err)
	}
}

// TestZonePolicy: a zone may set its own commitment policy; PolicyFor picks
// the longest zone's, falls back to the mount's, and is nil when no zone
// sets one; a bad name is refused.
func TestZonePolicy(t *testing.T) {
	zs, err := ParseZonesFile([]byte(`{"zones":[{"prefix":"fin/","key":"kms:k","commitment_policy":"REQUIRE_ENCRYPT_REQUIRE_DECRYPT"},{"prefix":"fin/old/","key":"kms:k","commitment_policy":"forbid-encrypt-allow-decrypt"},{"prefix":"hr/","key":"kms:k"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if zs[0].Policy != "require-encrypt-require-decrypt" || zs[2].Policy != "" {
		t.Fatalf("got %+v", zs)
	}
	pf := zs.PolicyFor(cse.RequireEncryptAllowDecrypt)
	for key, want := range map[string]cse.CommitmentPolicy{
		"fin/a": cse.RequireEncryptRequireDecrypt, "fin/old/a": cse.ForbidEncryptAllowDecrypt,
		"hr/a": cse.RequireEncryptAllowDecrypt, "top": cse.RequireEncryptAllowDecrypt,
	} {
		if got := pf(key); got != want {
			t.Errorf("PolicyFor(%q) = %v, want %v", key, got, want)
		}
	}
	if Zones(zs[2:]).PolicyFor(cse.ForbidEncryptAllowDecrypt) != nil {
		t.Error("PolicyFor without zone policies is not nil")
	}
	if _, err := ParseZonesFile([]byte(`{"zones":[{"prefix":"a/","key":"kms:k","commitment_policy":"require"}]}`)); !errors.Is(err, ErrConfigFile) {
		t.Errorf("bad policy: %v", err)
	}
}
