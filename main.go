// Command csefs mounts an S3 bucket (or a prefix of one, or a local
// directory) as a directory, encrypting on the client in the format of Amazon
// EMRFS client-side encryption and the AWS S3 Encryption Clients.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/mount"
	"github.com/csefs/csefs/objectstore"
)

func main() {
	app := newApp()
	args, fake, err := rewriteArgs(app, os.Args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "csefs:", err)
		os.Exit(1)
	}
	if fake { // mount -f: everything but the mount itself
		return
	}
	os.Args = args // a daemonized mount re-executes these
	if err := app.Run(args); err != nil {
		fmt.Fprintln(os.Stderr, "csefs:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	// --version only: -v is the bucket tools' --verbose.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version, VCS revision and Go toolchain of this build"}
	app := &cli.App{
		Name:    "csefs",
		Version: mount.Version(),
		Usage:   "mount S3 as a directory with EMRFS-compatible client-side encryption",
		// --zone values hold ARNs and prefixes: never split them at commas.
		DisableSliceFlagSeparator: true,
		Commands: []*cli.Command{
			mountCommand(),
			unmountCommand(),
			keyringCommand(),
			uploadsCommand(),
			recoverCommand(),
		},
	}
	app.Commands = append(app.Commands, fleetCommands()...)
	polishApp(app)
	return app
}

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a bucket, prefix or local directory",
		ArgsUsage: "s3://BUCKET[/PREFIX]|file:///ABS/DIR MOUNTPOINT",
		Flags: append(append(connectionFlags(), keyFlags()...), []cli.Flag{
			&cli.StringFlag{Name: "plaintext", Value: "allow", Usage: "objects without an envelope: allow (read them as they are) or deny (EACCES)"},
			&cli.StringFlag{Name: "verify-threshold", Value: "8MiB", Usage: "GCM objects up to this size are authenticated whole before any byte is returned"},
			&cli.BoolFlag{Name: "strict-ranged-reads", Usage: "authenticate a whole large object before serving random reads from it"},
			&cli.DurationFlag{Name: "metadata-ttl", Value: 5 * time.Second, Usage: "how long listings and object attributes are trusted before S3 is asked again"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay in the foreground instead of daemonizing"},
			&cli.BoolFlag{Name: "read-only", Usage: "mount read-only (-o ro)"},
			&cli.BoolFlag{Name: "noexec", Usage: "do not let files on the mount be executed (-o noexec)"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users access the mount (needs user_allow_other in /etc/fuse.conf for non-root)"},
			&cli.BoolFlag{Name: "allow-non-empty", Usage: "mount over a mountpoint that is not empty, hiding its entries (refused by default)"},
			&cli.BoolFlag{Name: "page-cache", Usage: "serve file data through the kernel's page cache instead of direct I/O: shared mmap then works on kernels before 6.6 and reads in small buffers are faster, but a reader in this mount may see a file being overwritten here half written"},
			&cli.BoolFlag{Name: "attrs-from-list", Usage: "answer stat of listed files from the LIST alone, with no HEAD per file (fast ls -l of big directories): size = stored − 16, the mount's mode and owner, mtime = upload time; exact once a file is opened"},
			&cli.BoolFlag{Name: "xattrs", Usage: "serve the read-only user.csefs.encryption attribute (getfattr); off, xattr calls fail with ENOTSUP and ls -l needs no extra round trips"},
			&cli.IntFlag{Name: "uid", Value: os.Getuid(), Usage: "owner of every file and directory"},
			&cli.IntFlag{Name: "gid", Value: os.Getgid(), Usage: "group of every file and directory"},
			&cli.StringFlag{Name: "file-mode", Value: "0644", Usage: "permission bits of files (octal) that have none stored"},
			&cli.StringFlag{Name: "dir-mode", Value: "0755", Usage: "permission bits of directories (octal)"},
			&cli.StringFlag{Name: "staging-dir", Usage: "directory for the encrypted staging files of random writes, appends and edits (default: " + mount.DefaultStagingDir() + ")"},
			&cli.StringFlag{Name: "staging-limit", Value: "10GiB", Usage: "bound on the staging files' total size; writes past it fail with ENOSPC (0: none)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "keep an encrypted, persistent read cache here (off by default): blocks of objects as stored, sealed under a cache key from the mount's key provider; one directory per mount"},
			&cli.StringFlag{Name: "cache-size", Value: "10GiB", Usage: "bound on the --cache-dir's size; least recently used blocks are evicted"},
			&cli.StringFlag{Name: "part-size", Value: "16MiB", Usage: "multipart upload part size"},
			&cli.StringFlag{Name: "memory-budget", Value: "128MiB", Usage: "read-ahead and upload buffers of all open files together, beyond a minimum per file (one ranged GET and 2 MiB of read-ahead per reader, one part per writer); past it reads fetch less ahead and writes upload fewer parts at once (0: no shared bound)"},
			&cli.StringFlag{Name: "memory-target", Value: "224MiB", Usage: "soft limit for the daemon's Go heap (GOMEMLIMIT): garbage is collected harder near it; buffers are bounded by --memory-budget regardless; keep it well above one writer's part buffers (upload-concurrency+1 parts), or the collector runs all the time (0: Go's default)"},
			&cli.IntFlag{Name: "upload-concurrency", Value: 8, Usage: "parts of one file uploaded in parallel (8 parts of 16 MiB keep a link of 50-100 MB/s per connection, 20 ms away, busy); beyond the first part they come from --memory-budget"},
			&cli.IntFlag{Name: "key-cache-size", Value: 1024, Usage: "unwrapped data keys kept in memory"},
			&cli.DurationFlag{Name: "key-cache-ttl", Value: 10 * time.Minute, Usage: "how long an unwrapped data key is kept"},
			&cli.IntFlag{Name: "kms-key-ahead", Value: 4, Usage: "unused data keys each KMS key generates ahead, so creates do not wait for KMS; each lives at most a minute in memory (0: off)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-file", Usage: "log destination, reopened on SIGHUP (default: stderr in the foreground or under systemd; in the background /var/log/csefs/MOUNTPOINT.log for root, else $XDG_STATE_HOME/csefs/log/MOUNTPOINT.log)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log line format: text (logfmt) or json"},
			&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics at http://HOST:PORT/metrics; a bare PORT or :PORT listens on 127.0.0.1 only (off by default)"},
			&cli.StringFlag{Name: "pprof-addr", Usage: "serve Go profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060"},
			&cli.BoolFlag{Name: "allow-core-dumps", Usage: "debugging only: keep the core size limit and let the daemon be dumped; by default it sets RLIMIT_CORE 0 and PR_SET_DUMPABLE 0, since its memory holds data keys and plaintext"},
			&cli.BoolFlag{Name: "fuse-debug", Usage: "log every FUSE request (very verbose; go-fuse prints the first bytes of each read and write, so never use it on real data)"},
		}...),
		Action: runMount,
	}
}

func runMount(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("mount needs a source and a mountpoint; see csefs mount --help")
	}
	cfg := readConfig(c, c.Args().Get(0))
	cfg.Mountpoint = c.Args().Get(1)
	cfg.Plaintext = c.String("plaintext")
	cfg.StrictRanged = c.Bool("strict-ranged-reads")
	cfg.MetadataTTL = c.Duration("metadata-ttl")
	cfg.ReadOnly = c.Bool("read-only")
	cfg.NoExec = c.Bool("noexec")
	cfg.AllowOther = c.Bool("allow-other")
	cfg.AllowNonEmpty = c.Bool("allow-non-empty")
	cfg.XAttrs = c.Bool("xattrs")
	cfg.AttrsFromList = c.Bool("attrs-from-list")
	cfg.PageCache = c.Bool("page-cache")
	cfg.UID = uint32(c.Int("uid"))
	cfg.GID = uint32(c.Int("gid"))
	cfg.UploadConcurrency = c.Int("upload-concurrency")
	cfg.MemoryTarget = c.String("memory-target")
	cfg.StagingDir = c.String("staging-dir")
	cfg.CacheDir = c.String("cache-dir")
	cfg.KeyCacheSize = c.Int("key-cache-size")
	cfg.KeyCacheTTL = c.Duration("key-cache-ttl")
	cfg.KMSKeyAhead = c.Int("kms-key-ahead")
	cfg.LogLevel = c.String("log-level")
	cfg.FuseDebug = c.Bool("fuse-debug")
	cfg.AllowCoreDumps = c.Bool("allow-core-dumps")
	cfg.PprofAddr = c.String("pprof-addr")
	cfg.MetricsAddr = c.String("metrics-addr")
	var err error
	if cfg.VerifyThreshold, err = mount.ParseSize(c.String("verify-threshold")); err != nil {
		return fmt.Errorf("--verify-threshold: %w", err)
	}
	if cfg.CacheSize, err = mount.ParseSize(c.String("cache-size")); err != nil {
		return fmt.Errorf("--cache-size: %w", err)
	}
	if cfg.PartSize, err = mount.ParseSize(c.String("part-size")); err != nil {
		return fmt.Errorf("--part-size: %w", err)
	}
	if err := mount.CheckPartSize(cfg.PartSize, c.String("part-size")); err != nil {
		return fmt.Errorf("--part-size: %w", err)
	}
	if n := c.Int("upload-concurrency"); n < 1 {
		return fmt.Errorf("--upload-concurrency %d: at least 1", n)
	}
	if n := c.Int("key-cache-size"); n < 0 {
		return fmt.Errorf("--key-cache-size %d: 0 (off) or more", n)
	}
	if cfg.MemoryBudget, err = mount.ParseSize(c.String("memory-budget")); err != nil {
		return fmt.Errorf("--memory-budget: %w", err)
	}
	if cfg.StagingLimit, err = mount.ParseSize(c.String("staging-limit")); err != nil {
		return fmt.Errorf("--staging-limit: %w", err)
	}
	if cfg.FileMode, err = parseMode(c.String("file-mode")); err != nil {
		return fmt.Errorf("--file-mode: %w", err)
	}
	if cfg.DirMode, err = parseMode(c.String("dir-mode")); err != nil {
		return fmt.Errorf("--dir-mode: %w", err)
	}
	if !c.Bool("foreground") && !mount.IsDaemonChild() {
		logPath := c.String("log-file")
		if logPath == "" && !mount.UnderSystemd() {
			mnt, _ := filepath.Abs(cfg.Mountpoint)
			logPath = mount.DefaultLogFile(mnt)
		}
		return mount.Daemonize(nil, logPath)
	}
	var out io.Writer = os.Stderr
	if lf := mount.DaemonLogFile(); lf != nil {
		cfg.ReopenLog = lf.Reopen
	} else if p := c.String("log-file"); p != "" {
		lf, err := mount.OpenLogFile(p)
		if err != nil {
			return err
		}
		defer lf.Close()
		out, cfg.ReopenLog = lf, lf.Reopen
	}
	log, err := mount.NewLogger(cfg.LogLevel, c.String("log-format"), out)
	if err != nil {
		return err
	}
	var ready func(error)
	if mount.IsDaemonChild() {
		ready = mount.ReadyFunc()
	}
	return mount.Run(context.Background(), cfg, log, ready)
}

func unmountCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "unmount, after in-flight uploads have finished",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"z"}, Usage: "detach at once, even if busy or dead (\"transport endpoint is not connected\")"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long to wait for open files and uploads to finish"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("unmount needs a mountpoint")
			}
			return mount.UnmountProgress(c.Args().First(), c.Bool("lazy"), c.Duration("timeout"), c.App.ErrWriter)
		},
	}
}

func keyringCommand() *cli.Command {
	return &cli.Command{
		Name:  "keyring",
		Usage: "manage keyring files for --cse custom",
		Subcommands: []*cli.Command{{
			Name:      "create",
			Usage:     "create a keyring with one new random AES-256 key (mode 0600)",
			ArgsUsage: "FILE",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return fmt.Errorf("keyring create needs a file name")
				}
				return mount.CreateKeyring(c.Args().First())
			},
		}, {
			Name:      "add",
			Usage:     "add a key to a keyring (a new random AES-256 key unless a reference is given); the file becomes version 2",
			ArgsUsage: "FILE NAME",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "aes256-file", Usage: "reference a file holding the AES-256 key (32 raw bytes or base64; relative to the keyring)"},
				&cli.StringFlag{Name: "aes256-env", Usage: "reference an environment variable holding the AES-256 key (base64)"},
				&cli.StringFlag{Name: "rsa-pem-file", Usage: "reference a PEM file holding an RSA private key (relative to the keyring)"},
				&cli.StringFlag{Name: "kms-key-id", Usage: "reference a KMS key (key id, key ARN, alias/NAME or alias ARN)"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() != 2 {
					return fmt.Errorf("keyring add needs a file name and a key name")
				}
				spec := cse.KeySpec{AESFile: c.String("aes256-file"), AESEnv: c.String("aes256-env"),
					RSAPEMFile: c.String("rsa-pem-file"), KMSKeyID: c.String("kms-key-id")}
				spec.AES256 = spec == cse.KeySpec{}
				return addKey(c.Args().Get(0), c.Args().Get(1), spec, c.App.Writer)
			},
		}},
	}
}

// addKey adds a key to the keyring file at path, replacing the file
// atomically (mode 0600).
func addKey(path, name string, spec cse.KeySpec, out io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer cse.Zero(data)
	updated, err := cse.AddKey(data, name, spec)
	if err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	defer cse.Zero(updated)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".keyring-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(updated)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	fmt.Fprintf(out, "added key %q to %s; it encrypts nothing until a rule or encrypt_with names it\n", name, path)
	return nil
}

// uploadsCommand lists and aborts the multipart uploads a crashed mount left
// open (see mount/journal.go).
func uploadsCommand() *cli.Command {
	// The mount's connection flags, so a mount's command line can be
	// reused as it is.
	flags := func(extra ...cli.Flag) []cli.Flag { return append(connectionFlags(), extra...) }
	config := func(c *cli.Context) (mount.Config, error) {
		if c.NArg() != 1 {
			return mount.Config{}, fmt.Errorf("%s needs one s3://BUCKET[/PREFIX]", c.Command.FullName())
		}
		return readConfig(c, c.Args().First()), nil
	}
	logger := func() *slog.Logger { l, _ := mount.Logger("info", os.Stderr); return l }
	return &cli.Command{
		Name:  "uploads",
		Usage: "list or abort incomplete multipart uploads (left open by a crashed or killed mount)",
		Description: "Every mount records the multipart uploads it starts in a journal under\n" +
			"$XDG_STATE_HOME/csefs/uploads/ and, before serving, aborts those whose process is gone.\n" +
			"These commands do the same by hand, and also show what ListMultipartUploads finds\n" +
			"(AWS S3 lists a whole prefix; MinIO lists only one exact key, so there the journal is all).",
		Subcommands: []*cli.Command{{
			Name:      "list",
			Usage:     "list incomplete uploads: KEY UPLOAD-ID INITIATED OWNER",
			ArgsUsage: "s3://BUCKET[/PREFIX]",
			Flags:     flags(),
			Action: func(c *cli.Context) error {
				cfg, err := config(c)
				if err != nil {
					return err
				}
				ups, err := mount.ListUploads(c.Context, cfg, logger())
				for _, u := range ups {
					owner := "store-listing"
					switch {
					case u.InJournal && u.Live:
						owner = fmt.Sprintf("running-pid-%d", u.PID)
					case u.InJournal:
						owner = fmt.Sprintf("dead-pid-%d", u.PID)
					}
					fmt.Fprintf(c.App.Writer, "%s\t%s\t%s\t%s\n", u.Key, u.UploadID, u.Initiated.UTC().Format(time.RFC3339), owner)
				}
				return err
			},
		}, {
			Name:      "abort",
			Usage:     "abort incomplete uploads no running csefs on this machine owns",
			ArgsUsage: "s3://BUCKET[/PREFIX]",
			Flags: flags(&cli.DurationFlag{Name: "older-than",
				Usage: "abort uploads found only by listing (perhaps another machine's, still being written) only if initiated this long ago"}),
			Action: func(c *cli.Context) error {
				cfg, err := config(c)
				if err != nil {
					return err
				}
				ups, err := mount.AbortUploads(c.Context, cfg, c.Duration("older-than"), logger())
				for _, u := range ups {
					fmt.Fprintf(c.App.Writer, "aborted\t%s\t%s\n", u.Key, u.UploadID)
				}
				return err
			},
		}},
	}
}

// recoverCommand finishes directory renames a crash cut short (see
// fusefs/intent.go).
func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:      "recover",
		Usage:     "finish directory renames that a crashed or killed mount left half done",
		ArgsUsage: "s3://BUCKET[/PREFIX]|file:///ABS/DIR",
		Description: "A directory rename stores its intent under .csefs-renames/ at the mount's root\n" +
			"before its first copy. Every mount finishes, before serving, the renames of dead\n" +
			"processes of this machine; this command does the same by hand, and with --older-than\n" +
			"also those of other machines, which it cannot see running: make sure none is.",
		Flags: append(connectionFlags(),
			&cli.DurationFlag{Name: "older-than", Usage: "also finish renames of other machines (or containers) begun at least this long ago"},
			&cli.StringFlag{Name: "sse", Usage: "the mount's --sse (the copies carry it)"},
			&cli.StringFlag{Name: "sse-kms-key-id", Usage: "the mount's --sse-kms-key-id"},
			&cli.StringFlag{Name: "sse-c-key-file", Usage: "the mount's --sse-c-key-file (SSE-C objects cannot be copied without it)"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("recover needs one source")
			}
			cfg := readConfig(c, c.Args().First())
			log, _ := mount.Logger("info", os.Stderr)
			done, left, err := mount.RecoverRenames(c.Context, cfg, c.Duration("older-than"), log)
			for _, in := range done {
				fmt.Fprintf(c.App.Writer, "finished\t%s\t%s\n", in.Src, in.Dst)
			}
			for _, in := range left {
				fmt.Fprintf(c.App.Writer, "left\t%s\t%s\t%s pid %d since %s\n", in.Src, in.Dst, in.Host, in.PID, in.Time.Format(time.RFC3339))
			}
			return err
		},
	}
}

func parseMode(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("%q is not an octal mode", s)
	}
	return uint32(n), nil
}

// connectionFlags are the flags that reach the store and KMS; mount and the
// bucket tools share them (readConfig reads them).
func connectionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "endpoint-url", Usage: "S3 endpoint URL (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or AWS)"},
		&cli.StringFlag{Name: "kms-endpoint-url", Usage: "KMS endpoint URL (default: AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, or AWS)"},
		&cli.StringFlag{Name: "region", Usage: "AWS region (default: AWS_REGION, the profile, or us-east-1)"},
		&cli.BoolFlag{Name: "path-style", Usage: "use path-style S3 addressing (MinIO and most non-AWS stores need it)"},
		&cli.DurationFlag{Name: "s3-retry-deadline", Value: objectstore.DefaultRetryDeadline, Usage: "how long one S3 request keeps retrying (backoff with jitter) through an outage, throttling or lost replies before the operation fails with EIO"},
		&cli.DurationFlag{Name: "kms-timeout", Value: 10 * time.Second, Usage: "how long one KMS request may take before it is retried"},
		&cli.DurationFlag{Name: "kms-deadline", Value: 30 * time.Second, Usage: "how long one KMS call keeps retrying before open/create fails with EIO (\"KMS timeout\" in the log)"},
		&cli.StringFlag{Name: "kms-region", Usage: "KMS region when it differs from --region (fs.s3.cse.kms.region)"},
		&cli.StringFlag{Name: "ca-bundle", Usage: "PEM file of certificates trusted for the S3 and KMS endpoints, besides the system's (AWS_CA_BUNDLE is honoured too)"},
		&cli.StringFlag{Name: "tls-artifacts", Usage: "EMR's PEM in-transit artifacts: a zip, a directory or s3://BUCKET/KEY.zip holding privateKey.pem and certificateChain.pem (the client certificate for mutual TLS to S3 and KMS) and, optionally, trustedCertificates.pem (added to the trusted roots)"},
		&cli.BoolFlag{Name: "allow-http", Usage: "allow plain http:// S3 or KMS endpoints that are not loopback (credentials and data in the clear)"},
	}
}

// keyFlags are the flags that choose the keys, the format and the
// configuration files; mount and the bucket tools share them.
func keyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "cse", Usage: "encryption mode: kms, custom or off (default: kms for s3://, custom for file://)"},
		&cli.StringFlag{Name: "kms-key-id", Usage: "KMS key for new objects: key id, key ARN, alias/NAME or alias ARN"},
		&cli.StringFlag{Name: "kms-wrap", Value: "kms+context", Usage: "KMS wrapping for new objects: kms+context, or kms for the legacy EMRFS context {\"kms_cmk_id\": KEY}"},
		&cli.StringFlag{Name: "storage-mode", Value: "object-metadata", Usage: "where new objects keep their envelope: object-metadata or instruction-file"},
		&cli.StringFlag{Name: "commitment-policy", Value: "forbid-encrypt-allow-decrypt", Usage: "key commitment, as the S3 Encryption Clients name it: forbid-encrypt-allow-decrypt writes V2 (EMRFS and every client read it) and reads V2 and V3; require-encrypt-allow-decrypt writes V3 (key-committing, suite 115; Go v4, v3.2.0+, Java v4 read it) and reads both; require-encrypt-require-decrypt writes V3 and refuses objects without commitment (EACCES)"},
		&cli.StringFlag{Name: "keyring", Usage: "keyring file for --cse custom (default for file:// sources: " + mount.DefaultKeyring() + ", created if missing)"},
		&cli.StringFlag{Name: "sse", Usage: "server-side encryption S3 adds to every object written: s3 (SSE-S3), kms (SSE-KMS) or c (SSE-C, key sent with every request; needs https); alone with --cse off, or with CSE as a second layer"},
		&cli.StringFlag{Name: "sse-kms-key-id", Usage: "KMS key for --sse kms (default: the account's aws/s3 key)"},
		&cli.StringFlag{Name: "sse-c-key-file", Usage: "file holding the SSE-C key (32 raw bytes or base64); implies --sse c; the key is never logged"},
		&cli.StringFlag{Name: "emrfs-site", Usage: "read EMRFS settings (fs.s3.cse.*) from this emrfs-site.xml; flags given explicitly win"},
		&cli.StringFlag{Name: "security-configuration", Usage: "read S3 encryption settings from this EMR security configuration JSON (CSE-KMS, CSE-Custom; Overrides for the mounted bucket); flags given explicitly win"},
		&cli.StringFlag{Name: "zones-file", Usage: "encryption zones: JSON {\"zones\":[{\"prefix\":\"finance/\",\"key\":\"kms:alias/fin\"},…]}; renames across zones fail with EXDEV (mv then copies, re-encrypting)"},
		&cli.StringSliceFlag{Name: "zone", Usage: "an encryption zone PREFIX=kms:KEYID or PREFIX=keyring:NAME (repeatable; PREFIX is a bucket key prefix)"},
		&cli.BoolFlag{Name: "materials-description", Usage: "store EMRFS's materials description with new objects: Path (the S3 URI) and JobflowId (with kms+context, part of the KMS encryption context)"},
		&cli.StringFlag{Name: "job-flow-id", Usage: "cluster id for JobflowId (default: jobFlowId of --job-flow-json)"},
		&cli.StringFlag{Name: "job-flow-json", Usage: "EMR's job-flow.json, read for the cluster id (default: " + mount.DefaultJobFlowJSON + " when present)"},
		&cli.StringFlag{Name: "materials-provider", Usage: "exec:/path/to/program: a program that makes and unwraps data keys (--cse custom; protocol in csefs docs)"},
		&cli.DurationFlag{Name: "materials-provider-timeout", Value: 10 * time.Second, Usage: "how long one run of the --materials-provider program may take"},
	}
}

// readConfig reads connectionFlags and keyFlags into a mount.Config.
func readConfig(c *cli.Context, source string) mount.Config {
	return mount.Config{
		Source:                   source,
		EndpointURL:              c.String("endpoint-url"),
		KMSEndpointURL:           c.String("kms-endpoint-url"),
		Region:                   c.String("region"),
		PathStyle:                c.Bool("path-style"),
		S3RetryDeadline:          c.Duration("s3-retry-deadline"),
		KMSTimeout:               c.Duration("kms-timeout"),
		KMSDeadline:              c.Duration("kms-deadline"),
		KMSRegion:                c.String("kms-region"),
		CSE:                      c.String("cse"),
		KMSKeyID:                 c.String("kms-key-id"),
		KMSWrap:                  c.String("kms-wrap"),
		StorageMode:              c.String("storage-mode"),
		CommitmentPolicy:         c.String("commitment-policy"),
		Keyring:                  c.String("keyring"),
		SSE:                      c.String("sse"),
		SSEKMSKeyID:              c.String("sse-kms-key-id"),
		SSECKeyFile:              c.String("sse-c-key-file"),
		CABundle:                 c.String("ca-bundle"),
		TLSArtifacts:             c.String("tls-artifacts"),
		AllowHTTP:                c.Bool("allow-http"),
		EMRFSSite:                c.String("emrfs-site"),
		SecurityConfiguration:    c.String("security-configuration"),
		ZonesFile:                c.String("zones-file"),
		Zones:                    c.StringSlice("zone"),
		MaterialsDescription:     c.Bool("materials-description"),
		JobFlowID:                c.String("job-flow-id"),
		JobFlowJSON:              c.String("job-flow-json"),
		MaterialsProvider:        c.String("materials-provider"),
		MaterialsProviderTimeout: c.Duration("materials-provider-timeout"),
		IsSet:                    c.IsSet,
	}
}
