package mount

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cache"
	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/fusefs"
	"github.com/csefs/csefs/keycache"
	"github.com/csefs/csefs/metrics"
	"github.com/csefs/csefs/objectstore"
)

// Run mounts cfg and serves it until it is unmounted or a SIGTERM/SIGINT
// arrives. ready is called once: with nil when the mount is usable, or with
// the error that prevented it (which Run also returns).
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(error)) (err error) {
	readied := false
	defer func() {
		if !readied && ready != nil {
			ready(err)
		}
	}()
	if err := applyConfigFiles(&cfg, log); err != nil {
		return err
	}
	src, err := cfg.normalize()
	if err != nil {
		return err
	}
	if err := checkMountpoint(cfg.Mountpoint, cfg.AllowNonEmpty); err != nil {
		return err
	}
	if err := checkFUSE(); err != nil {
		return err
	}
	if err := protectMemory(cfg.AllowCoreDumps); err != nil {
		return err
	}
	if cfg.StagingDir, err = filepath.Abs(cfg.StagingDir); err != nil {
		return err
	}
	if err := setMemoryTarget(cfg.MemoryTarget); err != nil {
		return err
	}
	// One bound for the read-ahead and upload parts of all open files.
	budget := objectstore.NewBudget(cfg.MemoryBudget)
	if cfg.MetricsAddr != "" {
		if _, err := metrics.ListenAddr(cfg.MetricsAddr); err != nil {
			return err
		}
		cfg.metrics = metrics.New()
	}
	store, keys, err := build(ctx, cfg, src, budget, log)
	if err != nil {
		return err
	}
	defer keys.Close() // on the error paths; idempotent
	provider := keys.Provider
	if cfg.CacheDir != "" {
		rc, err := cache.Open(ctx, cache.Options{Dir: cfg.CacheDir, Size: cfg.CacheSize, Provider: provider, Logger: log})
		if err != nil {
			return fmt.Errorf("--cache-dir: %w", err)
		}
		defer func() { // after the last read: writes the index
			st := rc.Stats()
			log.Info("read cache closed", "hits", st.Hits, "misses", st.Misses, "blocks_stored", st.Stored,
				"blocks_evicted", st.Evicted, "store_errors", st.StoreErrors)
			rc.Close()
		}()
		store = cache.Wrap(store, rc)
	}
	policy, _ := cse.ParseCommitmentPolicy(cfg.CommitmentPolicy) // normalize has checked it
	fsys, root, err := fusefs.New(fusefs.Options{
		Store:               store,
		Provider:            provider,
		StorageMode:         map[string]fusefs.StorageMode{"object-metadata": fusefs.ObjectMetadata, "instruction-file": fusefs.InstructionFile}[cfg.StorageMode],
		URIPrefix:           src.uri(),
		KeyPrefix:           src.prefix,
		DenyPlaintext:       cfg.Plaintext == "deny",
		VerifyThreshold:     cfg.VerifyThreshold,
		StrictRanged:        cfg.StrictRanged,
		MetadataTTL:         cfg.MetadataTTL,
		ReadOnly:            cfg.ReadOnly,
		XAttrs:              cfg.XAttrs,
		AttrsFromList:       cfg.AttrsFromList,
		PageCache:           cfg.PageCache,
		Budget:              budget,
		UID:                 cfg.UID,
		GID:                 cfg.GID,
		FileMode:            cfg.FileMode,
		DirMode:             cfg.DirMode,
		StagingDir:          cfg.StagingDir,
		StagingLimit:        cfg.StagingLimit,
		NameMax:             nameMax(src),
		KeyMax:              keyMax(src),
		Logger:              log,
		MatDesc:             keys.MatDesc,
		MatDescFor:          keys.MatDescFor,
		ZoneOf:              keys.ZoneOf,
		CommitmentPolicy:    policy,
		CommitmentPolicyFor: keys.PolicyFor,
		Metrics:             fsMetrics(cfg.metrics),
	})
	if err != nil {
		return err
	}
	if !cfg.ReadOnly {
		// Before serving: finish the directory renames that dead processes
		// left half done (fusefs/intent.go).
		// Each one finished is logged ("directory rename finished").
		rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		_, err := fsys.RecoverRenames(rctx, nil)
		cancel()
		if err != nil {
			log.Warn("rename recovery incomplete: a rename touching those directories finishes it, or csefs recover", "cause", err.Error())
		}
	}
	if cfg.PprofAddr != "" {
		if err := servePprof(cfg.PprofAddr, log); err != nil {
			return err
		}
	}
	// Everything named by a relative path (config files, keyring, zones)
	// has been read by now.
	if err := leaveCwd(); err != nil {
		return err
	}
	if cfg.metrics != nil {
		registerGauges(cfg.metrics, fsys, provider, budget)
		mctx, stopMetrics := context.WithCancel(ctx)
		defer stopMetrics()
		addr, err := cfg.metrics.Serve(mctx, cfg.MetricsAddr, log)
		if err != nil {
			return err
		}
		log.Info("serving metrics", "url", "http://"+addr+"/metrics")
	}
	opts := fsys.MountOptions(src.uri(), cfg.AllowOther, cfg.FuseDebug)
	opts.DirectMount = os.Geteuid() == 0
	if cfg.ReadOnly {
		opts.Options = append(opts.Options, "ro")
	}
	if cfg.NoExec {
		opts.Options = append(opts.Options, "noexec")
	}
	if cfg.AllowOther {
		// Other users see decrypted files: let the kernel enforce the mode
		// bits, which it does not do for FUSE by default.
		opts.Options = append(opts.Options, "default_permissions")
	}
	var server *fuse.Server
	mountFUSE := func() error {
		var err error
		server, err = fs.Mount(cfg.Mountpoint, root, opts)
		return err
	}
	if opts.DirectMount {
		err = mountFUSE()
	} else {
		// fusermount3 prints why it refuses to the stderr it inherits.
		var reason string
		if reason, err = captureStderr(mountFUSE); err != nil && reason != "" {
			err = fmt.Errorf("%s (%s)", reason, strings.TrimSpace(err.Error()))
		}
	}
	if err != nil {
		return fmt.Errorf("mount %s: %w", cfg.Mountpoint, err)
	}
	if w := fsys.MmapWarning(server.KernelSettings().Flags64()); w != "" {
		log.Warn(w)
	}
	if err := setReadAhead(cfg.Mountpoint, opts.MaxReadAhead); err != nil {
		log.Debug("kernel read-ahead left at its default", "cause", err.Error())
	}
	pidfile := pidFile(cfg.Mountpoint)
	if err := os.MkdirAll(filepath.Dir(pidfile), 0o700); err == nil {
		_ = os.WriteFile(pidfile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o600)
		defer os.Remove(pidfile)
	}
	// Signals are caught before readiness is reported: a SIGHUP (logrotate)
	// or SIGTERM right after mount returns must not kill the daemon.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	log.Info("mounted", "source", src.uri(), "mountpoint", cfg.Mountpoint, "cse", cfg.CSE, "sse", sseName(cfg.SSE), "version", Version())
	readied = true
	if ready != nil {
		ready(nil)
	}
	// systemd Type=notify: the mount is usable now.
	if err := sdNotify(fmt.Sprintf("READY=1\nMAINPID=%d\nSTATUS=serving %s on %s", os.Getpid(), src.uri(), cfg.Mountpoint)); err != nil {
		log.Warn("systemd notification failed", "socket", os.Getenv("NOTIFY_SOCKET"), "cause", err.Error())
	}
	var stopping sync.Once
	notifyStopping := func() {
		stopping.Do(func() { _ = sdNotify("STOPPING=1\nSTATUS=unmounting, finishing uploads") })
	}

	go func() {
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				// logrotate: reopen the log file; never unmount.
				if cfg.ReopenLog != nil {
					if err := cfg.ReopenLog(); err != nil {
						log.Error("reopening the log file failed", "cause", err.Error())
					} else {
						log.Info("log file reopened (SIGHUP)")
					}
				}
				continue
			}
			notifyStopping()
			log.Info("signal: unmounting", "signal", sig.String())
			if err := unmountServer(server, cfg.Mountpoint, 30*time.Second); err != nil {
				log.Error("unmount after signal failed", "cause", err.Error())
			}
		}
	}()
	server.Wait()
	notifyStopping()
	fsys.WaitUploads(30 * time.Second)
	keys.Close() // zero the data keys generated ahead
	if c, ok := provider.(*keycache.Cache); ok {
		c.Purge() // zero the unwrapped data keys
	}
	log.Info("unmounted", "mountpoint", cfg.Mountpoint)
	return nil
}

// RecoverRenames finishes the directory renames of cfg.Source that crashed
// processes left half done (fusefs/intent.go): those of dead processes of
// this machine, and, with olderThan > 0, those of other machines (whose
// owners this one cannot see) stored at least olderThan ago. Only do the
// latter when no process still works on them: two at once can lose data.
func RecoverRenames(ctx context.Context, cfg Config, olderThan time.Duration, log *slog.Logger) ([]fusefs.RenameIntent, []fusefs.RenameIntent, error) {
	src, err := parseSource(cfg.Source)
	if err != nil {
		return nil, nil, err
	}
	var store objectstore.Store
	switch src.scheme {
	case "s3":
		c, err := loadAWSConfig(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		if cfg.SSECKeyFile != "" && cfg.SSE == "" {
			cfg.SSE = objectstore.SSEC
		}
		sse, err := sseOptions(cfg) // the renames' copies need the SSE-C key
		if err != nil {
			return nil, nil, err
		}
		defer cse.Zero(sse.CustomerKey)
		store = objectstore.NewS3(newS3Client(*c, cfg, log), src.bucket, src.prefix, objectstore.S3Options{SSE: sse})
	case "file":
		if store, err = objectstore.NewLocal(src.dir); err != nil {
			return nil, nil, err
		}
	}
	fsys, _, err := fusefs.New(fusefs.Options{Store: store, URIPrefix: src.uri(), KeyPrefix: src.prefix, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	var left []fusefs.RenameIntent
	done, err := fsys.RecoverRenames(ctx, func(in *fusefs.RenameIntent, st fusefs.OwnerState) bool {
		ok := st == fusefs.OwnerDead || st == fusefs.OwnerUnknown && olderThan > 0 && time.Since(in.Time) >= olderThan
		if !ok {
			left = append(left, *in)
		}
		return ok
	})
	return done, left, err
}

// unmountServer unmounts, retrying while the mount is busy (files still open,
// uploads in progress); after timeout it detaches lazily.
func unmountServer(server interface{ Unmount() error }, mnt string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 50 * time.Millisecond
	for {
		err := server.Unmount()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// build makes the store and the key provider, and checks both work.
func build(ctx context.Context, cfg Config, src source, budget *objectstore.Budget, log *slog.Logger) (objectstore.Store, *keySetup, error) {
	var (
		store  objectstore.Store
		awsCfg *aws.Config
	)
	loadAWS := func() (*aws.Config, error) {
		if awsCfg != nil {
			return awsCfg, nil
		}
		c, err := loadAWSConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		awsCfg = c
		return awsCfg, nil
	}
	var journal *Journal
	switch src.scheme {
	case "s3":
		c, err := loadAWS()
		if err != nil {
			return nil, nil, err
		}
		services := []string{"S3"}
		if cfg.CSE == "kms" {
			services = append(services, "KMS")
		}
		if err := probeEndpoints(ctx, c.HTTPClient, cfg, services...); err != nil {
			return nil, nil, err
		}
		opt := objectstore.S3Options{
			PartSize:        cfg.PartSize,
			Budget:          budget,
			Concurrency:     cfg.UploadConcurrency,
			UnsignedPayload: true,
		}
		if opt.SSE, err = sseOptions(cfg); err != nil {
			return nil, nil, err
		}
		defer cse.Zero(opt.SSE.CustomerKey) // NewS3 keeps a copy
		// The upload journal: see journal.go.
		if journal, err = OpenJournal(JournalPath(src.bucket, src.prefix), log); err != nil {
			log.Warn("no upload journal: uploads a crash leaves open will not be aborted", "cause", err.Error())
		} else {
			opt.OnUpload = journal.Record
		}
		store = objectstore.NewS3(newS3Client(*c, cfg, log), src.bucket, src.prefix, opt)
	case "file":
		s, err := objectstore.NewLocal(src.dir)
		if err != nil {
			return nil, nil, err
		}
		store = s
	}
	checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := store.Check(checkCtx); err != nil {
		if src.scheme == "s3" {
			endpoint := endpointOf("S3", cfg.EndpointURL, awsCfg, cfg.Region)
			if msg := unreachable("S3", endpoint, err); msg != "" {
				return nil, nil, fmt.Errorf("cannot reach %s: %s: %w", src.uri(), msg, err)
			}
			if status := notS3(err); status != 0 {
				// Not %w: the chain would say "no such bucket".
				return nil, nil, fmt.Errorf("%s is not an S3 endpoint: HTTP %d without an S3 request id to HeadBucket of %s (check --endpoint-url)", endpoint, status, src.bucket)
			}
		}
		switch {
		case errors.Is(err, objectstore.ErrNoSuchBucket):
			return nil, nil, fmt.Errorf("no such bucket: %s: %w", src.uri(), err)
		case errors.Is(err, objectstore.ErrAccessDenied):
			return nil, nil, fmt.Errorf("access denied to %s (bad credentials or missing permission): %w", src.uri(), err)
		}
		return nil, nil, fmt.Errorf("cannot reach %s: %w", src.uri(), err)
	}
	if journal != nil {
		// Before serving: abort what earlier processes left open.
		if _, err := AbortAbandoned(checkCtx, journal, store.(*objectstore.S3Store), log); err != nil {
			log.Warn("upload journal recovery incomplete", "journal", journal.Path(), "cause", err.Error())
		}
	}

	keys, err := buildProvider(ctx, &cfg, src, loadAWS, log)
	if err != nil {
		return nil, nil, err
	}
	if keys.Provider != nil {
		keys.Provider = keycache.New(keys.Provider, keycache.Options{Size: cfg.KeyCacheSize, TTL: cfg.KeyCacheTTL})
	}
	return store, keys, nil
}

// loadAWSConfig loads the SDK configuration for cfg's region, with the
// HTTP client of cfg's TLS settings (tls.go) for S3 and KMS alike. Plain
// http endpoints off loopback are refused here unless --allow-http.
func loadAWSConfig(ctx context.Context, cfg Config) (*aws.Config, error) {
	if err := checkEndpoints(cfg); err != nil {
		return nil, err
	}
	load := func(tc *tls.Config) (*aws.Config, error) {
		opts := []func(*config.LoadOptions) error{config.WithHTTPClient(httpClient(tc))}
		if cfg.Region != "" {
			opts = append(opts, config.WithRegion(cfg.Region))
		}
		c, err := config.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("AWS configuration: %w", err)
		}
		if c.Region == "" {
			c.Region = "us-east-1"
		}
		return &c, nil
	}
	tc, err := tlsConfig(ctx, cfg, func(ctx context.Context, tc *tls.Config, bucket, key string) ([]byte, error) {
		base, err := load(tc)
		if err != nil {
			return nil, err
		}
		return fetchObject(ctx, *base, cfg, tc, bucket, key)
	})
	if err != nil {
		return nil, err
	}
	return load(tc)
}

// s3IdleConns is the idle connections the S3 client keeps per host: more
// than one stream's ranged GETs (16) and one file's part uploads (8).
const s3IdleConns = 64

// newS3Client is the S3 client for cfg's endpoint and addressing, with the
// retry policy of --s3-retry-deadline.
func newS3Client(c aws.Config, cfg Config, log *slog.Logger) *s3.Client {
	policy := retryPolicy("S3", cfg.S3RetryDeadline, 0, log)
	return s3.NewFromConfig(c, func(o *s3.Options) {
		o.Retryer = policy.Retryer()
		o.APIOptions = append(o.APIOptions, policy.Middleware, cfg.metrics.S3Middleware)
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(cfg.EndpointURL)
		}
		o.UsePathStyle = cfg.PathStyle
		// Keep as many idle connections as the ranged GETs and part
		// uploads in flight (the SDK keeps 10 per host): against a
		// distant store each new connection costs a round trip or more.
		deeper := func(t *http.Transport) { t.MaxIdleConnsPerHost = s3IdleConns }
		switch hc := o.HTTPClient.(type) {
		case nil:
			o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(deeper)
		case *awshttp.BuildableClient:
			o.HTTPClient = hc.WithTransportOptions(deeper)
		}
		// The GCM tag already protects every byte end to end.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

// DefaultKeyring is where the keyring of a file:// mount lives when no
// --keyring is given. It is created on first use.
func DefaultKeyring() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("csefs-%d", os.Getuid()))
	}
	return filepath.Join(dir, "csefs", "keyring.json")
}

// CreateKeyring writes a new keyring with one random AES-256 key, mode 0600.
// It refuses to overwrite an existing file.
func CreateKeyring(path string) error {
	data, err := cse.NewKeyringFile()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkMountpoint refuses a mountpoint that is missing, not a directory, or
// already a mount.
func checkMountpoint(mnt string, allowNonEmpty bool) error {
	fi, err := os.Stat(mnt)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == syscall.ENOTCONN || errno == syscall.ECONNABORTED) {
			return fmt.Errorf("mountpoint %s is busy: a dead mount is still attached (csefs unmount --lazy %s)", mnt, mnt)
		}
		return fmt.Errorf("mountpoint: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	mounted, err := isMountpoint(mnt)
	if err != nil {
		return err
	}
	if mounted {
		return fmt.Errorf("mountpoint %s is busy: something is already mounted there", mnt)
	}
	if !allowNonEmpty {
		// Mounting over files hides them, as mount-s3, s3fs and gocryptfs
		// refuse to do unless asked.
		d, err := os.Open(mnt)
		if err != nil {
			return fmt.Errorf("mountpoint: %w", err)
		}
		names, err := d.Readdirnames(1)
		d.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			// An unreadable mountpoint is not known to be empty.
			return fmt.Errorf("mountpoint %s cannot be read to check that it is empty: %w", mnt, err)
		}
		if len(names) > 0 {
			return fmt.Errorf("mountpoint %s is not empty (mounting would hide what is in it; --allow-non-empty mounts anyway)", mnt)
		}
	}
	return nil
}

// isMountpoint reports whether mnt is a mount point, from /proc/self/mountinfo.
func isMountpoint(mnt string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == mnt {
			return true, nil
		}
	}
	return false, sc.Err()
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// pidFile is where the daemon serving mnt records its pid, so that unmount
// can wait for it to finish.
//
// It is $XDG_RUNTIME_DIR/csefs, else /run/csefs for root (system units and
// sudo have no XDG_RUNTIME_DIR, and a unit's PrivateTmp would hide /tmp),
// else $TMPDIR/csefs-UID/csefs.
func pidFile(mnt string) string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" && os.Geteuid() == 0 {
		dir = "/run"
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("csefs-%d", os.Getuid()))
	}
	r := strings.NewReplacer("/", "_", " ", "_")
	return filepath.Join(dir, "csefs", r.Replace(strings.Trim(mnt, "/"))+".pid")
}

// setReadAhead raises the kernel's read-ahead for the mount to n bytes. FUSE
// can only lower the default (128 KiB) at INIT; the mount's backing device
// takes more through sysfs (root only). With 1 MiB the kernel sends 1 MiB
// READs for sequential reads instead of 128 to 256 KiB ones: a quarter of
// the requests.
func setReadAhead(mnt string, n int) error {
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		return err
	}
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff // glibc's gnu_dev_major
	minor := dev&0xff | (dev>>12)&^0xff
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	return os.WriteFile(path, []byte(strconv.Itoa(n>>10)), 0)
}

// setMemoryTarget sets the Go runtime's soft memory limit, unless the
// GOMEMLIMIT environment variable already did. Part buffers and read-ahead
// are reused, so the heap's live size is bounded per open file; without a
// limit the collector lets the heap grow to twice that before it runs.
func setMemoryTarget(s string) error {
	if s == "" || s == "0" || os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	n, err := ParseSize(s)
	if err != nil {
		return fmt.Errorf("--memory-target: %w", err)
	}
	debug.SetMemoryLimit(n)
	return nil
}

// retryPolicy is the retry policy of one service's client: the deadline and
// attempt timeout given, every retry logged at debug level and every
// throttled attempt at warning level, with the running count.
func retryPolicy(service string, deadline, attemptTimeout time.Duration, log *slog.Logger) objectstore.RetryPolicy {
	throttles := new(atomic.Int64)
	return objectstore.RetryPolicy{
		Deadline: deadline, AttemptTimeout: attemptTimeout, Throttles: throttles,
		OnRetry: func(op string, attempt int, err error, throttled bool) {
			if throttled {
				log.Warn(service+" throttled; backing off", "op", op, "attempt", attempt, "throttled_total", throttles.Load(), "cause", err.Error())
				return
			}
			log.Debug(service+" request failed; retrying", "op", op, "attempt", attempt, "cause", err.Error())
		},
	}
}

// nameMax is the longest name src can hold: S3 keys take any 255-byte
// segment; a local directory what its filesystem allows (statfs f_namelen;
// long names' sidecars are hashed to fit).
func nameMax(src source) int {
	if src.scheme != "file" {
		return 255
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(src.dir, &st); err != nil || st.Namelen <= 0 {
		return 255
	}
	return min(255, int(st.Namelen))
}

// keyMax is the longest key src can hold: S3's 1024 bytes; in a local
// directory, a path (with its sidecar's 17 extra bytes) within PATH_MAX.
func keyMax(src source) int {
	if src.scheme != "file" {
		return 1024
	}
	return 4095 - len(src.dir) - 1 - len("..csefs-meta.json")
}
