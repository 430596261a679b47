package mount

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	smithy "github.com/aws/smithy-go"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/keycache"
)

// DefaultJobFlowJSON is where EMR describes the cluster a node belongs to
// ({"jobFlowId": "j-…", …}); --materials-description takes the JobflowId
// from it when --job-flow-id is not given.
const DefaultJobFlowJSON = "/mnt/var/lib/info/job-flow.json"

// EMRFS materials-description keys (EMRFS-DEC, s3ec-format.md §5).
const (
	MatDescPath      = "Path"
	MatDescJobflowID = "JobflowId"
)

// applyConfigFiles applies --security-configuration, then --emrfs-site (so
// the site file wins over the security configuration where both speak),
// each only where no flag was given explicitly, and checks the
// materials-provider flags.
func applyConfigFiles(cfg *Config, log *slog.Logger) error {
	set := flagSet(cfg.IsSet)
	if cfg.SecurityConfiguration != "" {
		src, err := parseSource(cfg.Source)
		if err != nil {
			return err
		}
		if err := loadSecurityConfiguration(cfg, cfg.SecurityConfiguration, src.bucket, set); err != nil {
			return err
		}
	}
	if cfg.EMRFSSite != "" {
		if err := loadEMRFSSite(cfg, cfg.EMRFSSite, set, log); err != nil {
			return err
		}
	}
	if cfg.MaterialsProvider != "" {
		if !strings.HasPrefix(cfg.MaterialsProvider, "exec:") || len(cfg.MaterialsProvider) == len("exec:") {
			return fmt.Errorf("--materials-provider %q: expected exec:/path/to/program", cfg.MaterialsProvider)
		}
		switch cfg.CSE {
		case "":
			cfg.CSE = "custom"
		case "custom":
		default:
			return fmt.Errorf("--materials-provider needs --cse custom, not --cse %s", cfg.CSE)
		}
	}
	return nil
}

// jobFlowID returns the cluster id for the JobflowId entry: --job-flow-id,
// else the "jobFlowId" of EMR's job-flow.json. An explicitly named file must
// exist; the default one is used only when present ("" without it).
func jobFlowID(cfg *Config) (string, error) {
	if cfg.JobFlowID != "" {
		return cfg.JobFlowID, nil
	}
	path, explicit := cfg.JobFlowJSON, true
	if path == "" {
		path, explicit = DefaultJobFlowJSON, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("--job-flow-json %s: %w: %w", path, ErrConfigFile, err)
	}
	var jf struct {
		JobFlowID string `json:"jobFlowId"`
	}
	if err := json.Unmarshal(data, &jf); err != nil {
		return "", fmt.Errorf("--job-flow-json %s: malformed JSON: %v: %w", path, err, ErrConfigFile)
	}
	if jf.JobFlowID == "" {
		return "", fmt.Errorf("--job-flow-json %s: no \"jobFlowId\": %w", path, ErrConfigFile)
	}
	return jf.JobFlowID, nil
}

// keySetup is the provider graph of a mount and what fusefs needs beside it.
type keySetup struct {
	// Provider is nil for --cse off.
	Provider cse.Provider
	// MatDesc and MatDescFor are fusefs.Options' (EMRFS's fields).
	MatDesc    map[string]string
	MatDescFor func(uri string) map[string]string
	// ZoneOf is fusefs.Options.ZoneOf: nil unless new objects' keys depend
	// on their prefix (zones, or keyring rules).
	ZoneOf func(bucketKey string) string
	// PolicyFor is fusefs.Options.CommitmentPolicyFor: nil unless a zone
	// sets its own commitment policy.
	PolicyFor func(bucketKey string) cse.CommitmentPolicy
	// aheads are the KMS providers' pools of data keys generated ahead;
	// Close zeroes them.
	aheads []*keycache.KeyAhead
}

// Close stops the key-ahead pools and zeroes their unused data keys. Later
// key requests go to KMS directly. Safe on a nil keySetup.
func (ks *keySetup) Close() {
	if ks == nil {
		return
	}
	for _, a := range ks.aheads {
		a.Close()
	}
}

// keyAheadErrorLog returns a KeyAheadOptions.OnError that logs the failures
// of one KMS key's background GenerateDataKey calls: the first at once, then
// at most one a minute (a failing KMS fails the next create anyway, which
// fusefs logs).
func keyAheadErrorLog(log *slog.Logger, keyID string) func(error) {
	var (
		mu         sync.Mutex
		last       time.Time
		suppressed int
	)
	return func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if !last.IsZero() && time.Since(last) < time.Minute {
			suppressed++
			return
		}
		log.Warn("KMS key-ahead: background GenerateDataKey failed; new files ask KMS directly", "kms_key", keyID, "cause", err.Error(), "suppressed", suppressed)
		last, suppressed = time.Now(), 0
	}
}

// buildProvider builds the key providers cfg asks for and checks them (each
// KMS key with DescribeKey, the exec program's presence, the keyring's
// references):
//
//   - the default ("" rule) is --kms-key-id (--cse kms), or the
//     --materials-provider program, or the keyring's encrypt_with
//     (--cse custom);
//   - a keyring (--keyring) adds its rules, and its keys to the readers;
//   - every zone (--zones-file, --zone) adds a rule: kms:ID a KMS provider
//     with the mount's --kms-wrap, keyring:NAME that keyring key;
//   - readers, in order: the keyring, the KMS providers, the program.
//
// With one rule the provider is used directly; otherwise a cse.Router picks
// by the longest prefix of the bucket key, and ZoneOf reports its choice.
func buildProvider(ctx context.Context, cfg *Config, src source, loadAWS func() (*aws.Config, error), log *slog.Logger) (*keySetup, error) {
	ks := &keySetup{}
	zones, err := loadZones(cfg.ZonesFile, cfg.Zones)
	if err != nil {
		return nil, err
	}
	if cfg.MaterialsDescription {
		id, err := jobFlowID(cfg)
		if err != nil {
			return nil, err
		}
		if id != "" {
			ks.MatDesc = map[string]string{MatDescJobflowID: id}
		} else {
			log.Info("--materials-description: no cluster id (--job-flow-id, " + DefaultJobFlowJSON + "); storing Path only")
		}
		ks.MatDescFor = func(uri string) map[string]string { return map[string]string{MatDescPath: uri} }
	}
	if cfg.CSE == "off" {
		if len(zones) > 0 {
			return nil, errors.New("encryption zones need encryption: not with --cse off")
		}
		return ks, nil
	}

	// Each KMS key generates data keys ahead (keycache.KeyAhead), unless
	// --kms-key-ahead 0, or every object gets its own materials description
	// (EMRFS's Path), which would waste every key generated ahead.
	keyAhead := cfg.KMSKeyAhead
	if keyAhead > 0 && ks.MatDescFor != nil {
		log.Info("--materials-description stores each object's Path: KMS data keys are not generated ahead")
		keyAhead = 0
	}
	var kc *kms.Client
	kmsByID := map[string]cse.Provider{}
	var kmsOrder []cse.Provider
	kmsProvider := func(keyID string) (cse.Provider, error) {
		if p, ok := kmsByID[keyID]; ok {
			return p, nil
		}
		if kc == nil {
			c, err := loadAWS()
			if err != nil {
				return nil, fmt.Errorf("KMS key %s: %w", keyID, err)
			}
			policy := retryPolicy("KMS", cfg.KMSDeadline, cfg.KMSTimeout, log)
			kc = kms.NewFromConfig(*c, func(o *kms.Options) {
				o.Retryer = policy.Retryer()
				o.APIOptions = append(o.APIOptions, policy.Middleware, cfg.metrics.KMSMiddleware)
				if cfg.KMSEndpointURL != "" {
					o.BaseEndpoint = aws.String(cfg.KMSEndpointURL)
				}
				if cfg.KMSRegion != "" {
					o.Region = cfg.KMSRegion
				}
			})
		}
		wrap := cse.WrapKMSContext
		if cfg.KMSWrap == "kms" {
			wrap = cse.WrapKMS
		}
		checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		kp, err := cse.NewKMSProvider(checkCtx, kc, keyID, cse.KMSOptions{Wrap: wrap})
		if err != nil {
			c, _ := loadAWS()
			endpoint := endpointOf("KMS", cfg.KMSEndpointURL, c, cfg.KMSRegion)
			if errors.Is(err, cse.ErrKeyService) {
				if msg := unreachable("KMS", endpoint, err); msg != "" {
					return nil, fmt.Errorf("KMS key %s: %s: %w", keyID, msg, err)
				}
			}
			// No request id and no KMS exception in the body: not KMS at all
			// (local KMS emulators send exceptions without request ids).
			var api smithy.APIError
			isKMS := errors.As(err, &api) && strings.HasSuffix(api.ErrorCode(), "Exception")
			if status := notS3(err); status != 0 && !isKMS {
				return nil, fmt.Errorf("KMS key %s: %s is not a KMS endpoint: HTTP %d without a request id to DescribeKey (check --kms-endpoint-url)", keyID, endpoint, status)
			}
			return nil, fmt.Errorf("KMS key %s: %w", keyID, err)
		}
		var p cse.Provider = kp
		if keyAhead > 0 {
			a := keycache.NewKeyAhead(kp, keycache.KeyAheadOptions{Depth: keyAhead, OnError: keyAheadErrorLog(log, keyID)})
			ks.aheads = append(ks.aheads, a)
			p = a
		}
		kmsByID[keyID] = p
		kmsOrder = append(kmsOrder, p)
		return p, nil
	}

	var keyring *cse.Keyring
	if cfg.Keyring != "" || (cfg.CSE == "custom" && cfg.MaterialsProvider == "") {
		if keyring, err = loadKeyring(cfg.Keyring, src, kmsProvider, log); err != nil {
			return nil, err
		}
	}

	var base cse.Provider
	var exec *cse.ExecProvider
	switch cfg.CSE {
	case "kms":
		if base, err = kmsProvider(cfg.KMSKeyID); err != nil {
			return nil, err
		}
	case "custom":
		if cfg.MaterialsProvider != "" {
			path := strings.TrimPrefix(cfg.MaterialsProvider, "exec:")
			if exec, err = cse.NewExecProvider(path, cse.ExecOptions{Timeout: cfg.MaterialsProviderTimeout}); err != nil {
				return nil, fmt.Errorf("--materials-provider %s: %w", cfg.MaterialsProvider, err)
			}
			base = exec
		} else {
			base = keyring.Default() // nil: decrypt-only, unless rules cover a key
		}
	}

	var rules []cse.Rule
	from := map[string]string{} // prefix → where its rule came from
	if keyring != nil {
		for _, r := range keyring.Rules() {
			if r.Prefix == "" && cfg.CSE != "custom" || r.Prefix == "" && exec != nil {
				log.Warn("keyring rule for prefix \"\" ignored: the mount's default key comes from the command line", "keyring", cfg.Keyring)
				continue
			}
			rules = append(rules, r)
			from[r.Prefix] = "keyring " + cfg.Keyring
		}
	}
	defPolicy, _ := cse.ParseCommitmentPolicy(cfg.CommitmentPolicy) // normalize has checked it
	ks.PolicyFor = zones.PolicyFor(defPolicy)
	for _, z := range zones {
		if p, _ := cse.ParseCommitmentPolicy(z.Policy); z.Policy != "" && p.WriteCEKAlg() == cse.CEKAlgGCMCommit && z.Key.Kind == "kms" && cfg.KMSWrap == "kms" {
			return nil, fmt.Errorf("zone %q: commitment_policy %s writes the V3 format, which cannot store the legacy kms wrap: use --kms-wrap kms+context: %w", z.Prefix, z.Policy, ErrConfigFile)
		}
		if where, dup := from[z.Prefix]; dup {
			return nil, fmt.Errorf("zone %q (%s) also has a rule in %s: %w", z.Prefix, z.Key, where, ErrConfigFile)
		}
		var p cse.Provider
		switch z.Key.Kind {
		case "kms":
			if p, err = kmsProvider(z.Key.ID); err != nil {
				return nil, fmt.Errorf("zone %q: %w", z.Prefix, err)
			}
		case "keyring":
			if keyring == nil {
				return nil, fmt.Errorf("zone %q uses %s but no --keyring is given", z.Prefix, z.Key)
			}
			if p, err = keyring.Writer(z.Key.ID); err != nil {
				return nil, fmt.Errorf("zone %q: keyring %s: %w", z.Prefix, cfg.Keyring, err)
			}
		}
		rules = append(rules, cse.Rule{Prefix: z.Prefix, Provider: p})
		from[z.Prefix] = "zone"
		if src.scheme == "s3" && !strings.HasPrefix(z.Prefix, src.prefix) && !strings.HasPrefix(src.prefix, z.Prefix) {
			log.Warn("zone lies outside the mounted prefix; it chooses no key here", "zone", z.Prefix, "source", src.uri())
		}
	}
	if _, ok := from[""]; !ok && base != nil {
		rules = append(rules, cse.Rule{Prefix: "", Provider: base})
	}

	var readers []cse.Provider
	if keyring != nil {
		readers = append(readers, keyring.Reader())
	}
	readers = append(readers, kmsOrder...)
	if exec != nil {
		readers = append(readers, exec)
	}
	if len(rules) == 1 && rules[0].Prefix == "" && len(readers) == 1 {
		ks.Provider = rules[0].Provider
		return ks, nil
	}
	if len(rules) == 0 {
		log.Info("no key encrypts new objects (the keyring has no encrypt_with or rule for them): writes fail with EACCES")
	}
	router, err := cse.NewRouter(rules, readers...)
	if err != nil {
		return nil, err
	}
	ks.Provider = router
	if len(rules) > 1 {
		ks.ZoneOf = func(bucketKey string) string {
			p, _ := router.RuleFor(bucketKey)
			return p
		}
	}
	return ks, nil
}

// loadKeyring loads the keyring file at path (version 1 or 2; relative key
// files resolve against its directory; kms_key_id entries become KMS
// providers). With no path, a file:// mount uses DefaultKeyring, created on
// first use.
func loadKeyring(path string, src source, kmsProvider func(string) (cse.Provider, error), log *slog.Logger) (*cse.Keyring, error) {
	if path == "" {
		if src.scheme != "file" {
			return nil, errors.New("--cse custom needs --keyring FILE (create one with: csefs keyring create FILE) or --materials-provider exec:PROGRAM")
		}
		path = DefaultKeyring()
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if obj := encryptedObject(src.dir); obj != "" {
				// A new key reads none of them: the default keyring is
				// per user ($HOME), so another user, or sudo, finds none.
				return nil, fmt.Errorf("%s already holds encrypted objects (%s), but the default keyring %s does not exist: a new keyring could not read them. "+
					"Give the keyring that wrote them with --keyring FILE (the default depends on $HOME: another user or sudo has another one), "+
					"or, to start a new key anyway, csefs keyring create FILE and --keyring FILE", src.uri(), obj, path)
			}
			if err := CreateKeyring(path); err != nil {
				return nil, err
			}
			log.Info("created a new keyring for the local bucket; back it up, it is the only copy of the key", "keyring", path)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer cse.Zero(data)
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("keyring is readable by group or others; chmod 600 it", "keyring", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	kr, err := cse.LoadKeyring(data, cse.KeyringOptions{BaseDir: filepath.Dir(abs), KMS: kmsProvider})
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return kr, nil
}

// encryptedObject returns the name of an object of the local store at dir
// that carries an envelope (a ".NAME.csefs-meta.json" sidecar), or "".
func encryptedObject(dir string) string {
	found := ""
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if name := d.Name(); !d.IsDir() && strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".csefs-meta.json") {
			rel, _ := filepath.Rel(dir, filepath.Join(filepath.Dir(p), strings.TrimSuffix(strings.TrimPrefix(name, "."), ".csefs-meta.json")))
			found = rel
			return fs.SkipAll
		}
		return nil
	})
	return found
}
