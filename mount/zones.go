package mount

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/csefs/csefs/cse"
)

// ZoneKey names the master key of an encryption zone.
type ZoneKey struct {
	Kind string // "kms" or "keyring"
	ID   string // KMS key id/ARN/alias, or keyring key name
}

func (k ZoneKey) String() string { return k.Kind + ":" + k.ID }

// ParseKeySpec reads "kms:KEYID" or "keyring:NAME".
func ParseKeySpec(s string) (ZoneKey, error) {
	kind, id, ok := strings.Cut(s, ":")
	if !ok || id == "" || (kind != "kms" && kind != "keyring") {
		return ZoneKey{}, fmt.Errorf("key %q: expected kms:KEYID or keyring:NAME: %w", s, ErrConfigFile)
	}
	return ZoneKey{Kind: kind, ID: id}, nil
}

// Zone is an encryption zone: new objects whose bucket key starts with
// Prefix get their data key from Key. Prefix is a bucket key prefix
// (including any mount prefix); "finance/" covers finance/a but not
// financials/a, while "fin" covers both.
type Zone struct {
	Prefix string
	Key    ZoneKey
	// Policy is the zone's commitment policy (cse.CommitmentPolicy spelling),
	// for new objects under Prefix and for reading them; "" means the
	// mount's --commitment-policy.
	Policy string
}

// Zones is a set of encryption zones; the longest matching prefix wins.
type Zones []Zone

// ZoneOf returns the prefix of the zone holding bucketKey, "" for none (the
// mount's default key).
func (zs Zones) ZoneOf(bucketKey string) string {
	best := ""
	for _, z := range zs {
		if len(z.Prefix) > len(best) && strings.HasPrefix(bucketKey, z.Prefix) {
			best = z.Prefix
		}
	}
	return best
}

// ParseZoneFlag reads one --zone PREFIX=KEYSPEC.
func ParseZoneFlag(s string) (Zone, error) {
	prefix, spec, ok := strings.Cut(s, "=")
	if !ok {
		return Zone{}, fmt.Errorf("--zone %q: expected PREFIX=kms:KEYID or PREFIX=keyring:NAME", s)
	}
	k, err := ParseKeySpec(spec)
	if err != nil {
		return Zone{}, fmt.Errorf("--zone %q: %w", s, err)
	}
	return Zone{Prefix: prefix, Key: k}, nil
}

// ParseZonesFile reads a zones file:
//
//	{"zones": [
//	  {"prefix": "finance/", "key": "kms:alias/fin",
//	   "commitment_policy": "require-encrypt-require-decrypt"},
//	  {"prefix": "hr/", "key": "keyring:hr-2026"}
//	]}
//
// commitment_policy is optional (the mount's --commitment-policy otherwise).
// Unknown fields are errors. Errors wrap ErrConfigFile.
func ParseZonesFile(data []byte) (Zones, error) {
	var f struct {
		Zones []struct {
			Prefix string `json:"prefix"`
			Key    string `json:"key"`
			Policy string `json:"commitment_policy"`
		} `json:"zones"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v: %w", err, ErrConfigFile)
	}
	if dec.More() {
		return nil, fmt.Errorf("malformed JSON: data after the object: %w", ErrConfigFile)
	}
	var zs Zones
	for i, z := range f.Zones {
		k, err := ParseKeySpec(z.Key)
		if err != nil {
			return nil, fmt.Errorf("zones[%d]: %w", i, err)
		}
		zone := Zone{Prefix: z.Prefix, Key: k}
		if z.Policy != "" {
			p, err := cse.ParseCommitmentPolicy(z.Policy)
			if err != nil {
				return nil, fmt.Errorf("zones[%d]: commitment_policy %q: expected forbid-encrypt-allow-decrypt, require-encrypt-allow-decrypt or require-encrypt-require-decrypt: %w", i, z.Policy, ErrConfigFile)
			}
			zone.Policy = p.String()
		}
		zs = append(zs, zone)
	}
	return zs, nil
}

// Check refuses empty prefixes (the mount's own key is the "" zone),
// prefixes starting with "/", and a prefix given twice.
func (zs Zones) Check() error {
	seen := map[string]bool{}
	for _, z := range zs {
		if z.Prefix == "" {
			return fmt.Errorf("zone with an empty prefix: the mount's own key (--kms-key-id, the keyring's encrypt_with) is that zone: %w", ErrConfigFile)
		}
		if strings.HasPrefix(z.Prefix, "/") {
			return fmt.Errorf("zone prefix %q: bucket keys do not start with /: %w", z.Prefix, ErrConfigFile)
		}
		if seen[z.Prefix] {
			return fmt.Errorf("zone prefix %q given twice: %w", z.Prefix, ErrConfigFile)
		}
		seen[z.Prefix] = true
	}
	return nil
}

// PolicyFor returns the commitment policy for new and read objects under
// bucketKey: that of the longest zone prefix holding it when the zone sets
// one, else def. It is nil when no zone sets a policy.
func (zs Zones) PolicyFor(def cse.CommitmentPolicy) func(bucketKey string) cse.CommitmentPolicy {
	policies := map[string]cse.CommitmentPolicy{}
	for _, z := range zs {
		if z.Policy != "" {
			policies[z.Prefix], _ = cse.ParseCommitmentPolicy(z.Policy) // checked by ParseZonesFile
		}
	}
	if len(policies) == 0 {
		return nil
	}
	return func(bucketKey string) cse.CommitmentPolicy {
		if p, ok := policies[zs.ZoneOf(bucketKey)]; ok {
			return p
		}
		return def
	}
}

// loadZones collects the zones of --zones-file and the --zone flags (the
// flags add to the file; a prefix in both is an error).
func loadZones(file string, flags []string) (Zones, error) {
	var zs Zones
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--zones-file %s: %w: %w", file, ErrConfigFile, err)
		}
		if zs, err = ParseZonesFile(data); err != nil {
			return nil, fmt.Errorf("--zones-file %s: %w", file, err)
		}
	}
	for _, s := range flags {
		z, err := ParseZoneFlag(s)
		if err != nil {
			return nil, err
		}
		zs = append(zs, z)
	}
	if err := zs.Check(); err != nil {
		if file != "" {
			return nil, fmt.Errorf("zones (--zones-file %s, --zone): %w", file, err)
		}
		return nil, fmt.Errorf("--zone: %w", err)
	}
	return zs, nil
}
