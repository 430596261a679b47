// Package mount wires csefs together: it builds the SDK clients, the object
// store, the key provider behind the key cache and the FUSE server from a
// Config, mounts, signals readiness, handles signals, and unmounts.
package mount

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metrics"
)

// Config is everything the command line can say about one mount.
type Config struct {
	Source     string // s3://BUCKET[/PREFIX] or file:///ABS/DIR
	Mountpoint string

	EndpointURL    string // S3 endpoint; AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL otherwise
	KMSEndpointURL string // KMS endpoint; AWS_ENDPOINT_URL_KMS otherwise
	Region         string
	PathStyle      bool

	CSE         string // "kms", "custom", "off"; "" picks kms for s3:// and custom for file://
	KMSKeyID    string
	KMSWrap     string // "kms+context" (default) or "kms"
	StorageMode string // "object-metadata" (default) or "instruction-file"
	// CommitmentPolicy is --commitment-policy: "forbid-encrypt-allow-decrypt"
	// (default), "require-encrypt-allow-decrypt" or
	// "require-encrypt-require-decrypt" (cse.ParseCommitmentPolicy).
	CommitmentPolicy string
	Keyring          string // keyring file for --cse custom

	// Server-side encryption (sse.go): SSE is --sse "s3", "kms", "c" or ""
	// (none); SSEKMSKeyID the SSE-KMS key; SSECKeyFile the file holding the
	// SSE-C key (32 raw bytes or base64).
	SSE         string
	SSEKMSKeyID string
	SSECKeyFile string

	// TLS (tls.go): CABundle is a PEM file of extra trusted roots;
	// TLSArtifacts a zip, directory or s3:// zip of EMR's PEM artifacts;
	// AllowHTTP lets a non-loopback http:// endpoint be used.
	CABundle     string
	TLSArtifacts string
	AllowHTTP    bool

	Plaintext       string // "allow" (default) or "deny"
	VerifyThreshold int64
	StrictRanged    bool
	MetadataTTL     time.Duration

	ReadOnly   bool
	NoExec     bool // files cannot be executed (MS_NOEXEC)
	AllowOther bool
	// AllowNonEmpty mounts over a mountpoint that has entries (hiding them).
	AllowNonEmpty bool
	XAttrs        bool
	// AttrsFromList: fusefs.Options.AttrsFromList (--attrs-from-list).
	AttrsFromList bool
	// PageCache: fusefs.Options.PageCache (--page-cache).
	PageCache bool
	UID, GID  uint32
	FileMode  uint32
	DirMode   uint32

	StagingDir   string // encrypted staging files of non-sequential writes
	StagingLimit int64  // bound on their total size (ENOSPC past it)
	// CacheDir, if set, is the encrypted persistent read cache (package
	// cache), bounded by CacheSize.
	CacheDir  string
	CacheSize int64

	// AllowCoreDumps leaves the core size limit and the dumpable flag as
	// inherited (harden.go); for debugging only.
	AllowCoreDumps bool

	MemoryTarget string // soft Go heap limit, e.g. "224MiB" ("0": none)
	// MemoryBudget bounds the read-ahead and upload part buffers of all open
	// files together, beyond a small minimum per file (0: no shared bound).
	MemoryBudget      int64
	PartSize          int64
	UploadConcurrency int
	KeyCacheSize      int
	KeyCacheTTL       time.Duration
	// KMSKeyAhead is how many unused data keys each KMS key keeps generated
	// ahead per materials description (keycache.KeyAhead); 0: none.
	KMSKeyAhead int
	// S3RetryDeadline bounds how long one S3 request keeps retrying through
	// an outage, throttling or lost replies (objectstore.RetryPolicy); 0:
	// objectstore.DefaultRetryDeadline.
	S3RetryDeadline time.Duration
	// KMSTimeout bounds one KMS attempt, KMSDeadline one KMS call with its
	// retries: a KMS that does not answer fails the call ("KMS timeout",
	// EIO) within KMSDeadline (plus one KMSTimeout at most).
	KMSTimeout  time.Duration
	KMSDeadline time.Duration

	LogLevel string
	// ReopenLog, if set, is called on SIGHUP to reopen the log file (for
	// logrotate); a failure is logged to the old file.
	ReopenLog func() error
	FuseDebug bool
	PprofAddr string // serve net/http/pprof on this loopback address (profiling)
	// MetricsAddr serves Prometheus metrics at /metrics on HOST:PORT (a bare
	// PORT or :PORT is loopback); "" serves none.
	MetricsAddr string
	metrics     *metrics.Metrics // set by Run when MetricsAddr is

	// Configuration files and key selection (emrfs.go, secconfig.go,
	// zones.go, provider.go).
	EMRFSSite             string   // --emrfs-site: Hadoop XML
	SecurityConfiguration string   // --security-configuration: EMR JSON
	ZonesFile             string   // --zones-file
	Zones                 []string // --zone PREFIX=KEYSPEC, repeated
	KMSRegion             string   // KMS region when it differs from Region (fs.s3.cse.kms.region)
	// MaterialsDescription stores EMRFS's {"Path": s3 URI, "JobflowId": id}
	// with every new object (for kms+context, in the encryption context).
	MaterialsDescription bool
	JobFlowID            string // --job-flow-id; else read from JobFlowJSON
	JobFlowJSON          string // EMR's job-flow.json ("" → DefaultJobFlowJSON)
	// MaterialsProvider is "exec:/path/to/program" (--cse custom).
	MaterialsProvider        string
	MaterialsProviderTimeout time.Duration
	// IsSet reports whether a flag was given on the command line (urfave/cli
	// Context.IsSet); explicit flags win over configuration files. nil: none.
	IsSet func(flag string) bool
}

// DefaultStagingDir is where staging files go without --staging-dir:
// $XDG_CACHE_HOME/csefs/staging (~/.cache/csefs/staging).
func DefaultStagingDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "csefs", "staging")
}

// source is a parsed Config.Source.
type source struct {
	scheme string // "s3" or "file"
	bucket string // s3
	prefix string // s3, "" or ending in "/"
	dir    string // file
}

func parseSource(s string) (source, error) {
	u, err := url.Parse(s)
	if err != nil {
		return source{}, fmt.Errorf("source %q: %w", s, err)
	}
	switch u.Scheme {
	case "s3":
		if u.Host == "" {
			return source{}, fmt.Errorf("source %q: no bucket", s)
		}
		p := strings.Trim(u.Path, "/")
		if p != "" {
			p += "/"
		}
		return source{scheme: "s3", bucket: u.Host, prefix: p}, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return source{}, fmt.Errorf("source %q: file URLs take an absolute path (file:///dir)", s)
		}
		if !filepath.IsAbs(u.Path) {
			return source{}, fmt.Errorf("source %q: not an absolute path", s)
		}
		return source{scheme: "file", dir: filepath.Clean(u.Path)}, nil
	}
	return source{}, fmt.Errorf("source %q: expected s3://BUCKET[/PREFIX] or file:///ABS/DIR", s)
}

func (s source) uri() string {
	if s.scheme == "s3" {
		return "s3://" + s.bucket + "/" + s.prefix
	}
	return "file://" + s.dir + "/"
}

// normalize fills defaults and rejects contradictions.
func (c *Config) normalize() (source, error) {
	src, err := parseSource(c.Source)
	if err != nil {
		return src, err
	}
	if c.CSE == "" {
		if src.scheme == "file" {
			c.CSE = "custom"
		} else {
			c.CSE = "kms"
		}
	}
	switch c.CSE {
	case "kms":
		if c.KMSKeyID == "" {
			return src, errors.New("--cse kms needs --kms-key-id")
		}
	case "custom", "off":
	default:
		return src, fmt.Errorf("--cse %q: expected kms, custom or off", c.CSE)
	}
	if c.KMSWrap == "" {
		c.KMSWrap = "kms+context"
	}
	if c.KMSWrap != "kms+context" && c.KMSWrap != "kms" {
		return src, fmt.Errorf("--kms-wrap %q: expected kms+context or kms", c.KMSWrap)
	}
	if c.KMSKeyAhead < 0 {
		return src, fmt.Errorf("--kms-key-ahead %d: expected 0 (off) or more", c.KMSKeyAhead)
	}
	if c.StorageMode == "" {
		c.StorageMode = "object-metadata"
	}
	if c.StorageMode != "object-metadata" && c.StorageMode != "instruction-file" {
		return src, fmt.Errorf("--storage-mode %q: expected object-metadata or instruction-file", c.StorageMode)
	}
	if c.CommitmentPolicy == "" {
		c.CommitmentPolicy = cse.ForbidEncryptAllowDecrypt.String()
	}
	policy, err := cse.ParseCommitmentPolicy(c.CommitmentPolicy)
	if err != nil {
		return src, fmt.Errorf("--commitment-policy %q: expected forbid-encrypt-allow-decrypt, require-encrypt-allow-decrypt or require-encrypt-require-decrypt", c.CommitmentPolicy)
	}
	c.CommitmentPolicy = policy.String()
	if policy.WriteCEKAlg() == cse.CEKAlgGCMCommit && c.CSE == "kms" && c.KMSWrap == "kms" {
		// The V3 format can store kms+context but not EMRFS's legacy kms wrap.
		return src, fmt.Errorf("--commitment-policy %s writes the V3 format, which cannot store the legacy kms wrap: use --kms-wrap kms+context", policy)
	}
	if c.SSECKeyFile != "" && c.SSE == "" {
		c.SSE = "c"
	}
	switch c.SSE {
	case "", "s3", "kms":
		if c.SSECKeyFile != "" {
			return src, fmt.Errorf("--sse-c-key-file needs --sse c, not --sse %s", c.SSE)
		}
	case "c":
		if c.SSECKeyFile == "" {
			return src, errors.New("--sse c needs --sse-c-key-file")
		}
	default:
		return src, fmt.Errorf("--sse %q: expected s3, kms or c", c.SSE)
	}
	if c.SSEKMSKeyID != "" && c.SSE != "kms" {
		return src, errors.New("--sse-kms-key-id needs --sse kms")
	}
	if c.SSE != "" && src.scheme != "s3" {
		return src, fmt.Errorf("--sse %s needs an s3:// source", c.SSE)
	}
	if c.TLSArtifacts != "" && !strings.HasPrefix(c.TLSArtifacts, "s3://") {
		// Read before the daemon leaves its working directory.
		if c.TLSArtifacts, err = filepath.Abs(c.TLSArtifacts); err != nil {
			return src, err
		}
	}
	if c.CacheDir != "" {
		if c.CSE == "off" {
			return src, errors.New("--cache-dir needs a key provider to seal the cache (--cse kms or custom)")
		}
		if c.CacheSize <= 0 {
			return src, fmt.Errorf("--cache-size %d: expected a positive size", c.CacheSize)
		}
		if c.CacheDir, err = filepath.Abs(c.CacheDir); err != nil {
			return src, err
		}
	}
	if c.CABundle != "" {
		if c.CABundle, err = filepath.Abs(c.CABundle); err != nil {
			return src, err
		}
	}
	if c.Plaintext == "" {
		c.Plaintext = "allow"
	}
	if c.Plaintext != "allow" && c.Plaintext != "deny" {
		return src, fmt.Errorf("--plaintext %q: expected allow or deny", c.Plaintext)
	}
	if c.MetadataTTL <= 0 {
		c.MetadataTTL = 5 * time.Second
	}
	if c.FileMode == 0 {
		c.FileMode = 0o644
	}
	if c.DirMode == 0 {
		c.DirMode = 0o755
	}
	if c.StagingDir == "" {
		c.StagingDir = DefaultStagingDir()
	}
	abs, err := filepath.Abs(c.Mountpoint)
	if err != nil {
		return src, err
	}
	c.Mountpoint = abs
	return src, nil
}

// SizeUnits lists the units ParseSize takes, for messages.
const SizeUnits = "B, K or KiB, M or MiB, G or GiB, T or TiB (powers of 1024), or plain bytes"

// ParseSize reads "8MiB", "4M", "1048576" and the like. Its error quotes s
// as given and lists the units.
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}} {
		if len(s) > len(u.suffix) && s[len(s)-len(u.suffix):] == u.suffix {
			num, mult = s[:len(s)-len(u.suffix)], u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (units: %s)", s, SizeUnits)
	}
	return n * mult, nil
}

// S3's multipart limits: every part but the last at least 5 MiB, at most
// 5 GiB.
const (
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
)

// CheckPartSize refuses a part size S3 would refuse; s is the value as
// typed, for the message.
func CheckPartSize(n int64, s string) error {
	if n < MinPartSize || n > MaxPartSize {
		return fmt.Errorf("%q is outside S3's part size limits, 5MiB to 5GiB", s)
	}
	return nil
}
