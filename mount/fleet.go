package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// Fleet is what the bucket-wide tools (package fleet) need from a
// command line: the store, the target within it and the key providers of a
// mount with the same flags. It is built without FUSE.
type Fleet struct {
	// Store is rooted at the bucket (or the directory): its keys are bucket
	// keys, so zones and keyring rules see them as a mount does.
	Store objectstore.Store
	URI   string // "s3://bucket/" or "file:///dir/"
	Path  string // the key or prefix given ("" for everything)
	// Provider makes and unwraps data keys as a mount's would (nil when
	// keys were not asked for, or --cse off).
	Provider   cse.Provider
	MatDesc    map[string]string
	MatDescFor func(uri string) map[string]string
	Policy     cse.CommitmentPolicy
	// StorageMode is the --storage-mode given.
	StorageMode string

	cfg     Config
	log     *slog.Logger
	kc      *kms.Client
	awsCfg  *aws.Config
	reader  *cse.KMSProvider // unwraps any KMS key and names it
	keys    *keySetup
	journal *Journal
}

// OpenFleet builds a Fleet from cfg (cfg.Source is s3://BUCKET[/KEY-OR-
// PREFIX] or file:///DIR[/FILE]). With keys false it makes no key provider
// and never calls KMS.
func OpenFleet(ctx context.Context, cfg Config, keys bool, log *slog.Logger) (*Fleet, error) {
	if err := applyConfigFiles(&cfg, log); err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.Source)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", cfg.Source, err)
	}
	f := &Fleet{cfg: cfg, log: log}
	var src source
	switch u.Scheme {
	case "s3":
		src = source{scheme: "s3", bucket: u.Host}
		f.Path = strings.TrimPrefix(u.Path, "/")
		if u.Host == "" {
			return nil, fmt.Errorf("target %q: no bucket", cfg.Source)
		}
	case "file":
		p := filepath.Clean(u.Path)
		if !filepath.IsAbs(p) || u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("target %q: file URLs take an absolute path (file:///dir)", cfg.Source)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		if !fi.IsDir() {
			p, f.Path = filepath.Dir(p), filepath.Base(p)
		}
		src = source{scheme: "file", dir: p}
	default:
		return nil, fmt.Errorf("target %q: expected s3://BUCKET[/PREFIX] or file:///ABS/DIR", cfg.Source)
	}
	cfg.Source = src.uri()
	if !keys {
		cfg.CSE = "off"
	}
	cfg.Mountpoint = "/"
	if _, err := cfg.normalize(); err != nil {
		return nil, err
	}
	f.cfg = cfg
	f.URI = src.uri()
	f.Policy, _ = cse.ParseCommitmentPolicy(cfg.CommitmentPolicy)
	f.StorageMode = cfg.StorageMode
	switch src.scheme {
	case "s3":
		c, err := f.loadAWS(ctx)
		if err != nil {
			return nil, err
		}
		opt := objectstore.S3Options{
			PartSize: cfg.PartSize, Concurrency: cfg.UploadConcurrency,
			Budget: objectstore.NewBudget(cfg.MemoryBudget), UnsignedPayload: true,
		}
		if opt.SSE, err = sseOptions(cfg); err != nil { // the tools' writes carry the mount's SSE
			return nil, err
		}
		defer cse.Zero(opt.SSE.CustomerKey) // NewS3 keeps a copy
		if f.journal, err = OpenJournal(JournalPath(src.bucket, ""), log); err == nil {
			opt.OnUpload = f.journal.Record
		}
		f.Store = objectstore.NewS3(newS3Client(*c, cfg, log), src.bucket, "", opt)
	case "file":
		if f.Store, err = objectstore.NewLocal(src.dir); err != nil {
			return nil, err
		}
	}
	checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := f.Store.Check(checkCtx); err != nil {
		return nil, fmt.Errorf("cannot use %s: %w", src.uri(), err)
	}
	if !keys || cfg.CSE == "off" {
		return f, nil
	}
	cfg.KMSKeyAhead = 0 // every tool's key is used once
	ks, err := buildProvider(ctx, &cfg, src, func() (*aws.Config, error) { return f.loadAWS(ctx) }, log)
	if err != nil {
		return nil, err
	}
	f.keys = ks
	f.Provider, f.MatDesc, f.MatDescFor = ks.Provider, ks.MatDesc, ks.MatDescFor
	return f, nil
}

// Close zeroes what the providers hold.
func (f *Fleet) Close() {
	if f.keys != nil {
		f.keys.Close()
	}
}

func (f *Fleet) loadAWS(ctx context.Context) (*aws.Config, error) {
	if f.awsCfg == nil {
		c, err := loadAWSConfig(ctx, f.cfg)
		if err != nil {
			return nil, err
		}
		f.awsCfg = c
	}
	return f.awsCfg, nil
}

// kmsClient is the KMS client of the flags (endpoint, region, retries).
func (f *Fleet) kmsClient(ctx context.Context) (*kms.Client, error) {
	if f.kc != nil {
		return f.kc, nil
	}
	c, err := f.loadAWS(ctx)
	if err != nil {
		return nil, err
	}
	policy := retryPolicy("KMS", f.cfg.KMSDeadline, f.cfg.KMSTimeout, f.log)
	f.kc = kms.NewFromConfig(*c, func(o *kms.Options) {
		o.Retryer = policy.Retryer()
		o.APIOptions = append(o.APIOptions, policy.Middleware)
		if f.cfg.KMSEndpointURL != "" {
			o.BaseEndpoint = aws.String(f.cfg.KMSEndpointURL)
		}
		if f.cfg.KMSRegion != "" {
			o.Region = f.cfg.KMSRegion
		}
	})
	return f.kc, nil
}

// Unwrap unwraps w: KMS wraps directly with KMS (so that the KMS key that
// did it is known), others with the provider.
func (f *Fleet) Unwrap(ctx context.Context, w cse.WrappedKey) ([]byte, string, error) {
	if (w.WrapAlg == cse.WrapKMS || w.WrapAlg == cse.WrapKMSContext) && f.reader != nil {
		return f.reader.DecryptKeyID(ctx, w)
	}
	if f.Provider == nil {
		return nil, "", errors.New("no key provider (--cse off)")
	}
	k, err := f.Provider.DecryptKey(ctx, w)
	return k, "", err
}

// EnableKMSUnwrap makes Unwrap name KMS keys, using keyID (any usable key:
// KMS Decrypt is not told which key to use) to check KMS works.
func (f *Fleet) EnableKMSUnwrap(ctx context.Context, keyID string) error {
	if keyID == "" {
		keyID = f.cfg.KMSKeyID
	}
	if keyID == "" {
		return nil
	}
	kc, err := f.kmsClient(ctx)
	if err != nil {
		return err
	}
	p, err := cse.NewKMSProvider(ctx, kc, keyID, cse.KMSOptions{})
	if err != nil {
		return err
	}
	f.reader = p
	return nil
}

// RewrapTarget is the key rewrap wraps under (fleet.RewrapOptions).
type RewrapTarget struct {
	Wrapper  func(old cse.WrappedKey, version int) cse.KeyWrapper
	IsTarget func(w cse.WrappedKey, kmsKeyARN string) bool
	Name     string
}

// KMSTarget is the target KMS key keyID. Each object keeps its own KMS
// wrapping (EMRFS's legacy kms stays kms, so EMRFS still reads it) unless
// --kms-wrap is given; other objects get --kms-wrap's (kms+context by
// default). V3 objects always get kms+context, the only KMS wrap V3 stores.
func (f *Fleet) KMSTarget(ctx context.Context, keyID string) (*RewrapTarget, error) {
	kc, err := f.kmsClient(ctx)
	if err != nil {
		return nil, err
	}
	out, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &keyID})
	if err != nil {
		return nil, fmt.Errorf("--to-kms-key-id %s: %w", keyID, err)
	}
	arn := aws.ToString(out.KeyMetadata.Arn)
	byWrap := map[string]cse.KeyWrapper{}
	for _, wrap := range []string{cse.WrapKMSContext, cse.WrapKMS} {
		p, err := cse.NewKMSProvider(ctx, kc, keyID, cse.KMSOptions{Wrap: wrap})
		if err != nil {
			return nil, fmt.Errorf("--to-kms-key-id: %w", err)
		}
		byWrap[wrap] = p
	}
	if err := f.EnableKMSUnwrap(ctx, keyID); err != nil {
		return nil, err
	}
	explicit := f.cfg.IsSet != nil && f.cfg.IsSet("kms-wrap")
	wrapFor := func(old cse.WrappedKey, version int) string {
		switch {
		case version == 3:
			return cse.WrapKMSContext
		case !explicit && (old.WrapAlg == cse.WrapKMS || old.WrapAlg == cse.WrapKMSContext):
			return old.WrapAlg
		}
		return f.cfg.KMSWrap
	}
	return &RewrapTarget{
		Name:    "KMS key " + arn,
		Wrapper: func(old cse.WrappedKey, version int) cse.KeyWrapper { return byWrap[wrapFor(old, version)] },
		IsTarget: func(w cse.WrappedKey, by string) bool {
			if by == "" || (by != arn && by != keyID) {
				return false
			}
			v := 2
			if w.CEKAlg == cse.CEKAlgGCMCommit {
				v = 3
			}
			return w.WrapAlg == wrapFor(w, v)
		},
	}, nil
}

// KeyringTarget is key name of the keyring file path (its encrypt_with key
// when name is "").
func (f *Fleet) KeyringTarget(ctx context.Context, path, name string) (*RewrapTarget, error) {
	kmsProvider := func(keyID string) (cse.Provider, error) {
		kc, err := f.kmsClient(ctx)
		if err != nil {
			return nil, err
		}
		return cse.NewKMSProvider(ctx, kc, keyID, cse.KMSOptions{Wrap: f.cfg.KMSWrap})
	}
	kr, err := loadKeyring(path, source{scheme: "s3"}, kmsProvider, f.log)
	if err != nil {
		return nil, err
	}
	var p cse.Provider
	if name == "" {
		if p = kr.Default(); p == nil {
			return nil, fmt.Errorf("--to-keyring %s has no encrypt_with key: give --to-keyname", path)
		}
		for _, n := range kr.Names() {
			if w, _ := kr.Writer(n); w == p {
				name = n
			}
		}
	} else if p, err = kr.Writer(name); err != nil {
		return nil, fmt.Errorf("--to-keyring %s: %w", path, err)
	}
	kw, ok := p.(cse.KeyWrapper)
	if !ok {
		return nil, fmt.Errorf("--to-keyring %s: key %q cannot wrap", path, name)
	}
	t := &RewrapTarget{Wrapper: func(cse.WrappedKey, int) cse.KeyWrapper { return kw }, Name: fmt.Sprintf("keyring key %q", name)}
	t.IsTarget = func(w cse.WrappedKey, _ string) bool {
		return w.MatDesc[cse.KeyNameKey] == name && w.WrapAlg != cse.WrapV1
	}
	return t, nil
}
