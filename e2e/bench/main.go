// Command bench measures csefs against the aws-sdk-go-v2 talking straight to
// the same MinIO, in one run, and prints a markdown table of the figures and
// their ratios (csefs / baseline) plus the raw numbers. It exits non-zero if
// any byte read back through the mount differs from what was written.
//
// Usage (as root, on a machine with /dev/fuse, from the repository):
//
//	go run ./e2e/bench [-size 1GiB] [-big 10GiB] [-runs 3] [-files 10000]
//	                   [-creates 1000] [-preads 500] [-rclone auto|off]
//	                   [-only write,read,create,ls,pread,rclone] [-csefs BIN] [-keep] [-v]
//	                   [-remote both|off|only] [-s3-latency 20ms] [-s3-conn-bandwidth 50MB]
//	                   [-remote-size 1GiB] [-remote-runs 2] [-multi-size 512MiB]
//	                   [-tree DIR] [-remote-only seq,multi8,multi32,tar,rsync]
//	                   [-mount-args "--memory-budget 256MiB"]
//
// It builds csefs into a temporary directory, starts its own MinIO and
// local-kms (e2e/testenv, binaries built from the pins in e2e/tools on first
// use), creates a bucket and mounts s3://BUCKET/fs with --cse kms. KMS
// traffic always passes through a counting reverse proxy on 127.0.0.1, so
// every workload reports its KMS calls; the create and ls workloads also
// mount through a counting S3 proxy and report their S3 requests (the
// throughput workloads talk to MinIO directly, as the SDK baseline does).
//
// The workloads (-only selects some; write, read and pread share the test
// file):
//
//   - write: a -size file of random bytes, page-cached, is uploaded by the
//     SDK (CreateMultipartUpload/UploadPart/Complete, 16 MiB parts, 8 at
//     once, read straight from the file) and copied into the mount with cp
//     (the time includes close, which commits the upload).
//   - read: after dropping the page cache (echo 3 > /proc/sys/vm/drop_caches),
//     the SDK reads the object with 16 MiB ranged GETs, 8 at once, and then,
//     caches dropped again, with one GET; each to io.Discard. csefs: cat of
//     the file to /dev/null, caches dropped. Then, untimed and cold again,
//     the file is read back through the mount and its SHA-256 compared with
//     the source's.
//   - create: -creates × cp of a 4 KiB file in a loop into a local directory
//     (the fork/exec floor), into the mount, and -creates PutObject calls by
//     the SDK at concurrency 1 and 16.
//   - ls: -files empty files (one made through the mount, the rest
//     server-side copies of it, envelope included); ls -l after dropping
//     caches and remounting (cold) and at once again (warm), against the
//     SDK's paginated ListObjectsV2 of the prefix (cold).
//   - pread: -preads random 4 KiB-aligned 4 KiB preads of the test file,
//     one at a time, cold, p50/p99, every block checked against the source;
//     against single 4 KiB ranged GETs by the SDK at the same offsets.
//   - reread: the -size file read twice with cat through a mount with
//     --cache-dir (S3 through the counting proxy, page cache dropped before
//     each): the first read fills the encrypted read cache, the second is
//     served from it; against the SDK's ranged GETs of the object. The GETs
//     of each read are in the notes.
//
// The rclone+crypt column (-rclone auto, the default, when rclone is on
// PATH; Debian's rclone package): the bench writes an rclone config into
// its temporary directory (RCLONE_CONFIG) with an s3 remote of the same
// MinIO (provider Minio, path style) and a crypt remote over
// BUCKET/rclone of it (random password and salt, obscured with rclone
// obscure), and runs `rclone mount crypt: DIR --vfs-cache-mode off` (so
// close returns once the data is in S3 and reads come from S3, as with
// csefs; rclone's defaults otherwise) as its child, ready once the mount
// shows in /proc/self/mountinfo. Write, read and pread run on that mount
// (each write/read run right after csefs's), the same cp/cat/pread commands
// on the same source file, read back cold and checksummed; create and ls
// mount a second crypt remote through the counting S3 proxy. The ls entries
// are made with rclone copy of empty local files (untimed). Peak RSS is the
// rclone process's VmHWM, measured as for csefs. The table adds the rclone
// cells and csefs/rclone ratios with issue 6's target (csefs ≥ 2× rclone:
// ratio ≤ 0.50×). rclone is unmounted with fusermount3 -u on every exit
// path, a Ctrl-C included (rclone runs in its own process group, so the
// terminal's SIGINT reaches only the bench, which then unmounts).
//
// -only takes workload names (write, read, create, ls, pread, fleet; write and
// read always run together) and "rclone", which runs the rclone column
// alone, without csefs or the SDK: -only rclone,ls measures rclone's ls -l.
//
// The remote table (remote.go, -remote both, the default, or only): the
// bench runs a copy of itself as a shaping TCP proxy (shaper.go) in front
// of the same MinIO, which delays every byte by half of -s3-latency each
// way (and a connection's first by a round trip, its handshake) and paces
// each connection to -s3-conn-bandwidth per direction. Through it, csefs
// (a mount with --endpoint-url at the shaper) and the SDK (at 16 ranged
// GETs and 8 parts of 16 MiB in flight) run: a -remote-size write and cold
// read (-remote-runs, alternating which goes first); 8 and 32 files of
// -multi-size in all written at once (cp) and read at once (cat), the SDK
// at the same total concurrency; tar x and a fresh rsync -a of -tree onto
// a mount through a counting proxy in front of the shaper, against the SDK
// PUTting the same files one by one through that proxy, with requests per
// file. Every file read back is checked by SHA-256. CPU per GiB is the
// daemon's against the bench process's (the SDK's; the shaper is a child
// process, not counted). CSEFS_BENCH_TRACE=1 prints every request the
// counting proxies see.
//
// Duration: the local table (1 GiB, 4 runs, 10k entries, with rclone)
// took 3m40s on the project's 2-vCPU machine (load average 2.5–4.2 from
// other work), plus the build; rclone's share is about 1.5 minutes, which
// -rclone off saves. The remote table adds 6–8 minutes, most of it tar x
// and rsync -a of the tree (round trips); -remote off saves it. The notes give each run's duration and load average.
//
// Peak RSS is the mount daemon's VmHWM, reset with echo 5 > /proc/PID/clear_refs
// before each workload and read after it; for the SDK it is this process's own
// VmHWM, measured the same way around the upload. Throughput is in MiB/s
// (2^20 bytes per second). Each cell of write and read is the median of
// -runs runs; min and max are in the raw numbers. Without root (no
// drop_caches) the "cold" figures are warm, and the output says so.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/e2e/testenv"
)

// errMismatch marks a checksum or content mismatch: the bench's one failure
// that is about csefs's correctness rather than its environment.
var errMismatch = errors.New("content mismatch")

type options struct {
	size, big     int64
	runs          int
	files         int
	creates       int
	preads        int
	fleet         int // objects of the fleet workload
	rclone        string
	only          map[string]bool // workloads; nil: all
	rcloneOnly    bool            // -only named rclone: the rclone column alone
	keep, verbose bool
	csefsBin      string

	// The remote table (remote.go).
	remote     string          // both, off, only
	s3Latency  time.Duration   // round trip added by the shaper
	s3ConnBW   int64           // bytes/s per connection and direction
	remoteSize int64           // the remote sequential file
	remoteRuns int             // runs of the remote sequential workload
	multiSize  int64           // total bytes of each many-files workload
	tree       string          // the small-file tree
	remoteOnly map[string]bool // remote workloads; nil: all
	mountArgs  []string        // extra csefs mount flags (-mount-args)
}

func (o *options) wantRemote(w string) bool { return len(o.remoteOnly) == 0 || o.remoteOnly[w] }

func (o *options) want(phase string) bool { return len(o.only) == 0 || o.only[phase] }

// parseOnly parses -only: workload names select workloads (none: all), and
// "rclone" restricts the run to the rclone+crypt column (no csefs, no SDK).
func parseOnly(s string) (only map[string]bool, rcloneOnly bool, err error) {
	for _, p := range strings.Split(s, ",") {
		switch p = strings.TrimSpace(p); p {
		case "write", "read", "create", "ls", "pread", "reread", "fleet":
			if only == nil {
				only = map[string]bool{}
			}
			only[p] = true
		case "rclone":
			rcloneOnly = true
		default:
			return nil, false, fmt.Errorf("unknown workload %q", p)
		}
	}
	return only, rcloneOnly, nil
}

func main() {
	if spec := os.Getenv(shaperEnv); spec != "" {
		shaperChild(spec)
		return
	}
	var o options
	var size, big, only string
	var remoteSize, multiSize, connBW, remoteOnly, mountArgs string
	flag.StringVar(&o.remote, "remote", "both", "remote-S3 table: both (local table, then remote), off (local only), only (remote only)")
	flag.DurationVar(&o.s3Latency, "s3-latency", 20*time.Millisecond, "remote mode: round trip the shaping proxy adds")
	flag.StringVar(&connBW, "s3-conn-bandwidth", "50MB", "remote mode: bandwidth per connection and direction, per second (0: unlimited)")
	flag.IntVar(&o.remoteRuns, "remote-runs", 2, "remote mode: runs of the sequential write and read (alternating which goes first)")
	flag.StringVar(&remoteSize, "remote-size", "1GiB", "remote mode: size of the sequential test file")
	flag.StringVar(&multiSize, "multi-size", "512MiB", "remote mode: total size of the 8- and 32-file workloads (split evenly)")
	flag.StringVar(&o.tree, "tree", goNetSource(), "remote mode: the tree of small files for tar x and rsync -a")
	flag.StringVar(&remoteOnly, "remote-only", "", "comma-separated remote workloads: seq,multi8,multi32,tar,rsync (default all)")
	flag.StringVar(&mountArgs, "mount-args", "", "extra csefs mount flags, space-separated (e.g. \"--memory-budget 512MiB\")")
	flag.StringVar(&size, "size", "1GiB", "size of the sequential test file (B, KiB, MiB, GiB, TiB; KB, MB, GB are powers of 10)")
	flag.StringVar(&big, "big", "", "also run write and read once with a file of this size (e.g. 10GiB); off by default")
	flag.IntVar(&o.runs, "runs", 4, "runs of the write and read workloads; cells are medians (the writes alternate which goes first, so keep it even)")
	flag.IntVar(&o.files, "files", 10000, "entries in the ls -l directory")
	flag.IntVar(&o.creates, "creates", 1000, "4 KiB files created in the create workload")
	flag.IntVar(&o.preads, "preads", 500, "random 4 KiB preads in the pread workload")
	flag.IntVar(&o.fleet, "fleet", 1000, "4 KiB objects for the fleet workload (csefs encrypt, verify, rewrap)")
	flag.StringVar(&o.rclone, "rclone", "auto", "rclone+crypt column: auto (when rclone is installed) or off")
	flag.StringVar(&only, "only", "", "comma-separated workloads: write,read,create,ls,pread,reread,rclone (default all)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (mount logs)")
	flag.BoolVar(&o.verbose, "v", false, "print progress")
	flag.StringVar(&o.csefsBin, "csefs", "", "use this csefs binary instead of building one from the module")
	flag.Parse()
	var err error
	if o.size, err = parseSize(size); err != nil || o.size <= 0 {
		fatalf("-size %q: %v", size, err)
	}
	if big != "" {
		if o.big, err = parseSize(big); err != nil || o.big <= 0 {
			fatalf("-big %q: %v", big, err)
		}
	}
	if o.remoteRuns < 1 {
		fatalf("-remote-runs must be positive")
	}
	if o.runs < 1 || o.files < 1 || o.creates < 1 || o.preads < 1 || o.fleet < 1 {
		fatalf("-runs, -files, -creates, -preads and -fleet must be positive")
	}
	if o.rclone != "auto" && o.rclone != "off" {
		fatalf("-rclone must be auto or off")
	}
	if o.remote != "both" && o.remote != "off" && o.remote != "only" {
		fatalf("-remote must be both, off or only")
	}
	if o.s3ConnBW, err = parseSize(connBW); err != nil {
		fatalf("-s3-conn-bandwidth %q: %v", connBW, err)
	}
	if o.remoteSize, err = parseSize(remoteSize); err != nil || o.remoteSize <= 0 {
		fatalf("-remote-size %q: %v", remoteSize, err)
	}
	if o.multiSize, err = parseSize(multiSize); err != nil || o.multiSize < 32 {
		fatalf("-multi-size %q: %v", multiSize, err)
	}
	for _, w := range strings.Split(remoteOnly, ",") {
		switch w = strings.TrimSpace(w); w {
		case "":
		case "seq", "multi8", "multi32", "tar", "rsync":
			if o.remoteOnly == nil {
				o.remoteOnly = map[string]bool{}
			}
			o.remoteOnly[w] = true
		default:
			fatalf("-remote-only: unknown workload %q", w)
		}
	}
	o.mountArgs = strings.Fields(mountArgs)
	if only != "" {
		if o.only, o.rcloneOnly, err = parseOnly(only); err != nil {
			fatalf("-only: %v", err)
		}
		if o.rcloneOnly && o.rclone == "off" {
			fatalf("-only rclone contradicts -rclone off")
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	b := &bench{opt: o, ctx: ctx, metrics: map[string][]float64{}}
	err = b.run()
	stop()
	if err == nil { // after run's deferred notes
		b.report(os.Stdout)
	}
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if errors.Is(err, errMismatch) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// parseSize parses "1GiB", "512MiB", "4KiB", "10GB", "123".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mul    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mul = strings.TrimSpace(rest), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > (1<<62)/mul {
		return 0, fmt.Errorf("out of range")
	}
	return n * mul, nil
}

// bench is one run of the command: servers, mounts and results.
type bench struct {
	opt options
	ctx context.Context

	tmp, runDir, bin string
	env              []string
	s3srv            *testenv.S3Server
	kmssrv           *testenv.KMSServer
	s3c              *s3.Client
	bucket           string
	kmsProxy         *countingProxy
	s3Proxy          *countingProxy
	direct           *mount // s3 direct, KMS through kmsProxy
	rcloneBin        string // rclone on PATH, when the column runs
	rcloneVersion    string // first line of rclone version
	rcEnv            []string
	rc               *rcloneMount // crypt: (S3 direct), for write, read, pread
	cleanups         []func()

	noDrop   bool
	checks   int                  // whole-file SHA-256 comparisons that passed, csefs
	rcChecks int                  // the same through rclone
	metrics  map[string][]float64 // name → one value per run
	kmsOps   []string             // "workload: counts" lines
	s3Ops    []string
	notes    []string
	src      map[int64]*source // by size

	rem                   *remote  // the remote workloads' clients and mounts
	remoteOps             []string // request counts of the remote small-file workloads
	treeFiles, treeChecks int
	treeBytes             int64
}

// source is a local test file of random bytes and its SHA-256.
type source struct {
	path string
	size int64
	sum  [32]byte
}

func (b *bench) logf(format string, args ...any) {
	if b.opt.verbose {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
}

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

func (b *bench) record(name string, v float64) { b.metrics[name] = append(b.metrics[name], v) }

func (b *bench) cleanup() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// drop drops the page cache, or notes once that it cannot.
func (b *bench) drop() {
	if b.noDrop {
		return
	}
	if err := dropCaches(); err != nil {
		b.noDrop = true
		b.note("page cache NOT dropped (%v): every \"cold\" figure is warm", err)
	}
}

func (b *bench) run() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no FUSE: %v", err)
	}
	t0, load0 := time.Now(), loadAvg()
	defer func() {
		b.note("machine load (1/5/15-min load average, %d CPUs): %s at the start, %s at the end; the bench took %s",
			runtime.NumCPU(), load0, loadAvg(), time.Since(t0).Round(time.Second))
	}()
	var err error
	if b.tmp, err = os.MkdirTemp("", "csefs-bench-"); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() {
		if b.opt.keep {
			fmt.Fprintln(os.Stderr, "bench: kept", b.tmp)
			return
		}
		// Never recurse into a mount that failed to unmount: that would
		// delete objects from the bucket, through csefs.
		if mnts := mountsUnder(b.tmp); len(mnts) > 0 {
			fmt.Fprintf(os.Stderr, "bench: still mounted, not removing %s: %v\n", b.tmp, mnts)
			return
		}
		os.RemoveAll(b.tmp)
	})
	if b.bin = b.opt.csefsBin; b.bin == "" && !b.opt.rcloneOnly {
		b.logf("building csefs")
		if b.bin, err = buildCSEFS(b.tmp); err != nil {
			return err
		}
	}
	b.logf("starting MinIO and local-kms")
	var stopS3, stopKMS func()
	if b.s3srv, stopS3, err = testenv.StartMinIO(); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, stopS3)
	if b.kmssrv, stopKMS, err = testenv.StartKMS(); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, stopKMS)
	if b.kmsProxy, err = newCountingProxy(b.kmssrv.Endpoint, testenv.KMSOp); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, b.kmsProxy.close)
	if b.s3Proxy, err = newCountingProxy(b.s3srv.Endpoint, testenv.S3Op); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, b.s3Proxy.close)
	b.s3c = b.s3srv.NewClient()
	b.bucket = "csefs-bench"
	if _, err := b.s3c.CreateBucket(b.ctx, &s3.CreateBucketInput{Bucket: &b.bucket}); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	b.runDir = filepath.Join(b.tmp, "run")
	b.env = cleanEnv(b.tmp)
	b.env = append(b.env, b.s3srv.Env()...)
	b.env = append(b.env, b.kmssrv.Env()...)
	b.src = map[int64]*source{}

	if b.opt.remote != "only" {
		if err := b.runLocal(); err != nil {
			return err
		}
	}
	if b.opt.remote != "off" && !b.opt.rcloneOnly {
		return b.runRemote()
	}
	return nil
}

// runLocal runs the local table's workloads: csefs, the SDK and rclone
// straight to MinIO.
func (b *bench) runLocal() error {
	var err error
	csefs := !b.opt.rcloneOnly
	if csefs {
		if b.direct, err = b.mount("direct", b.s3srv.Endpoint); err != nil {
			return err
		}
	}
	if b.opt.rclone == "auto" {
		if b.rcloneBin, err = exec.LookPath("rclone"); err != nil {
			if b.opt.rcloneOnly {
				return fmt.Errorf("-only rclone: %w", err)
			}
			b.note("rclone+crypt: skipped, rclone is not installed (Debian: apt-get install rclone)")
		} else {
			var out strings.Builder
			if err := runCmd(b.ctx, &out, b.rcloneBin, "version"); err != nil {
				return err
			}
			b.rcloneVersion, _, _ = strings.Cut(out.String(), "\n")
			if err := b.rcloneSetup(); err != nil {
				return err
			}
			if b.rc, err = b.rcloneMountRemote("crypt:", "rdirect"); err != nil {
				return err
			}
		}
	}
	rc := b.rc != nil

	if b.opt.want("write") || b.opt.want("read") {
		for r := range b.opt.runs {
			if csefs {
				if err := b.seq(b.opt.size, "", r); err != nil {
					return err
				}
			}
			if rc {
				if err := b.rcloneSeq(b.opt.size, r); err != nil {
					return err
				}
			}
		}
		if b.opt.big > 0 && csefs {
			if err := b.seq(b.opt.big, "big.", 0); err != nil {
				return err
			}
		}
	}
	for _, w := range []struct {
		name      string
		csefs, rc func() error
	}{
		{"create", b.creates, b.rcloneCreates},
		{"ls", b.ls, b.rcloneLs},
		{"pread", b.pread, b.rclonePread},
		{"reread", b.reread, nil},
		{"fleet", b.fleetTools, nil},
	} {
		if !b.opt.want(w.name) {
			continue
		}
		if csefs {
			if err := w.csefs(); err != nil {
				return err
			}
		}
		if rc && w.rc != nil {
			if err := w.rc(); err != nil {
				return err
			}
		}
	}
	if rc {
		if err := b.rc.unmount(); err != nil {
			return err
		}
		if bad := b.rc.crashed(); bad != "" {
			return fmt.Errorf("rclone log %s contains %q", b.rc.log, bad)
		}
	}
	if csefs {
		if err := b.direct.unmount(); err != nil {
			return err
		}
		if bad := b.direct.crashed(); bad != "" {
			return fmt.Errorf("mount log %s contains %q", b.direct.log, bad)
		}
	}
	return nil
}

// mount mounts s3://bucket/fs at tmp/name with KMS through the counting
// proxy and S3 at s3Endpoint.
func (b *bench) mount(name, s3Endpoint string, extra ...string) (*mount, error) {
	args := append([]string{"--endpoint-url", s3Endpoint, "--path-style", "--region", b.s3srv.Region,
		"--kms-endpoint-url", b.kmsProxy.URL, "--cse", "kms", "--kms-key-id", b.kmssrv.KeyID}, b.opt.mountArgs...)
	args = append(args, extra...)
	m, err := mountCSEFS(b.bin, b.env, b.runDir, "s3://"+b.bucket+"/fs",
		filepath.Join(b.tmp, "mnt-"+name), filepath.Join(b.tmp, "csefs-"+name+".log"), args...)
	if err != nil {
		return nil, err
	}
	b.cleanups = append(b.cleanups, func() { _ = m.unmount() })
	return m, nil
}

// source returns the local random test file of size bytes, creating it.
func (b *bench) source(size int64) (*source, error) {
	if s := b.src[size]; s != nil {
		return s, nil
	}
	s := &source{path: filepath.Join(b.tmp, fmt.Sprintf("src-%d", size)), size: size}
	f, err := os.Create(s.path)
	if err != nil {
		return nil, err
	}
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(seed), size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	copy(s.sum[:], h.Sum(nil))
	b.src[size] = s
	return s, nil
}

// warm reads a file whole so that it is in the page cache.
func warm(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// fileSum returns the SHA-256 and length of a file.
func fileSum(path string) ([32]byte, int64, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

// timed runs fn and returns its wall time in seconds.
func timed(fn func() error) (float64, error) {
	t0 := time.Now()
	err := fn()
	return time.Since(t0).Seconds(), err
}

// runCmd runs a command, killed if ctx ends, with stdout to out (nil:
// /dev/null) and returns an error carrying its stderr.
func runCmd(ctx context.Context, out io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = out
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

// daemonPhase runs fn with the direct mount daemon's VmHWM reset before and
// read after, recorded as rss.<name>, and the KMS calls of run 0 noted.
func (b *bench) daemonPhase(m *mount, name string, run int, fn func() error) error {
	pid, err := m.pid()
	if err != nil {
		return err
	}
	k0 := b.kmsProxy.snapshot()
	if err := b.rssPhase(pid, name, fn); err != nil {
		return err
	}
	if run == 0 {
		b.kmsOps = append(b.kmsOps, fmt.Sprintf("%s: %s", name, fmtCounts(diffCounts(k0, b.kmsProxy.snapshot()))))
	}
	return nil
}

// rssPhase runs fn with pid's VmHWM reset before and read after, recorded
// as rss.<name>.
func (b *bench) rssPhase(pid int, name string, fn func() error) error {
	if err := resetHWM(pid); err != nil {
		return fmt.Errorf("clear_refs: %w", err)
	}
	if err := fn(); err != nil {
		return err
	}
	rss, err := peakRSS(pid)
	if err != nil {
		return err
	}
	b.record("rss."+name, float64(rss))
	return nil
}

// seq is one run of the write and read workloads at size; pfx prefixes the
// metric names (the -big run).
func (b *bench) seq(size int64, pfx string, run int) error {
	src, err := b.source(size)
	if err != nil {
		return err
	}
	sdkKey := "sdk/" + pfx + "seq"
	mntPath := filepath.Join(b.direct.dir, pfx+"seq")
	b.logf("run %d: write %d bytes", run, size)

	// write: source page-cached; SDK then csefs, the other way round on
	// odd runs (the second writer finds MinIO's disk busier).
	b.drop()
	if err := warm(src.path); err != nil {
		return err
	}
	self := os.Getpid()
	if err := resetHWM(self); err != nil {
		return err
	}
	daemon, _ := b.direct.pid()
	sdkWrite := func() error {
		t, err := b.cpuTimed(pfx+"sdk.write", 0, func() error {
			return sdkUpload(b.ctx, b.s3c, b.bucket, sdkKey, src.path, size, sdkPartSize, sdkConcurrency)
		})
		if err != nil {
			return err
		}
		b.record(pfx+"sdk.write", t)
		if rss, err := peakRSS(self); err == nil {
			b.record("rss."+pfx+"sdk.write", float64(rss))
		}
		return nil
	}
	csefsWrite := func() error {
		return b.daemonPhase(b.direct, pfx+"write", run, func() error {
			t, err := b.cpuTimed(pfx+"csefs.write", daemon, func() error { return runCmd(b.ctx, nil, "cp", src.path, mntPath) })
			b.record(pfx+"csefs.write", t)
			return err
		})
	}
	writes := []func() error{sdkWrite, csefsWrite}
	if run%2 == 1 {
		writes[0], writes[1] = writes[1], writes[0]
	}
	for _, write := range writes {
		// Each write starts with no dirty pages left by the one before,
		// so that neither pays for the other's writeback; the source
		// stays in the page cache.
		syscall.Sync()
		if err := write(); err != nil {
			return err
		}
	}
	head, err := b.s3c.HeadObject(b.ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: aws.String("fs/" + pfx + "seq")})
	if err != nil {
		return fmt.Errorf("HEAD after cp: %w", err)
	}
	if got := aws.ToInt64(head.ContentLength); got != size+16 {
		return fmt.Errorf("%w: stored object is %d bytes, want %d (plaintext + GCM tag)", errMismatch, got, size+16)
	}

	// read: each cold.
	b.logf("run %d: read", run)
	b.drop()
	var t float64
	if t, err = b.cpuTimed(pfx+"sdk.read.ranged", 0, func() error {
		return sdkRangedGet(b.ctx, b.s3c, b.bucket, sdkKey, size, sdkPartSize, sdkConcurrency)
	}); err != nil {
		return err
	}
	b.record(pfx+"sdk.read.ranged", t)
	b.drop()
	var n int64
	if t, err = timed(func() error { n, err = sdkGet(b.ctx, b.s3c, b.bucket, sdkKey); return err }); err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("SDK GET returned %d bytes, want %d", n, size)
	}
	b.record(pfx+"sdk.read.single", t)
	b.drop()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	if err := b.daemonPhase(b.direct, pfx+"read", run, func() error {
		t, err := b.cpuTimed(pfx+"csefs.read", daemon, func() error { return runCmd(b.ctx, devnull, "cat", mntPath) })
		b.record(pfx+"csefs.read", t)
		return err
	}); err != nil {
		return err
	}

	// correctness, untimed and cold.
	b.drop()
	sum, n, err := fileSum(mntPath)
	if err != nil {
		return fmt.Errorf("reading back %s: %w", mntPath, err)
	}
	if n != size || sum != src.sum {
		return fmt.Errorf("%w: %s read back %d bytes with sha256 %x, want %d bytes %x", errMismatch, mntPath, n, sum, size, src.sum)
	}
	b.checks++
	return nil
}

// cpuTimed times fn and records the CPU it took, in core-seconds: the whole
// machine's (cpu.NAME.machine, against cpu.NAME.cores of capacity), MinIO's
// and, if daemon is not 0, the csefs daemon's.
func (b *bench) cpuTimed(name string, daemon int, fn func() error) (float64, error) {
	pids := map[string]int{"minio": pidByName("minio"), "bench": os.Getpid()}
	if daemon != 0 {
		pids["daemon"] = daemon
	}
	c0 := takeCPU(pids)
	t, err := timed(fn)
	if err != nil {
		return t, err
	}
	c1 := takeCPU(pids)
	b.record("cpu."+name+".machine", c1.busy-c0.busy)
	b.record("cpu."+name+".cores", t*float64(runtime.NumCPU()))
	for k := range pids {
		if _, ok := c1.procs[k]; ok {
			b.record("cpu."+name+"."+k, c1.procs[k]-c0.procs[k])
		}
	}
	return t, nil
}

// creates is the create workload.
func (b *bench) creates() error {
	n := b.opt.creates
	loop := func(dir string) (float64, error) { return b.cpLoop(dir, n) }
	b.logf("create: local floor")
	b.drop()
	t, err := loop(filepath.Join(b.tmp, "local-creates"))
	if err != nil {
		return err
	}
	b.record("local.create", t)

	// Timed on a mount that talks to MinIO directly, like the SDK
	// baseline; the S3 requests are counted in a second pass through the
	// counting proxy.
	for i, pass := range []struct{ name, endpoint, dir string }{
		{"createdirect", b.s3srv.Endpoint, "creates"}, {"counted", b.s3Proxy.URL, "creates-counted"},
	} {
		b.logf("create: csefs (%s)", pass.name)
		m, err := b.mount(pass.name, pass.endpoint)
		if err != nil {
			return err
		}
		s0 := b.s3Proxy.snapshot()
		if err := b.daemonPhase(m, "create", i, func() error {
			t, err := loop(filepath.Join(m.dir, pass.dir))
			if i == 0 {
				b.record("csefs.create", t)
			}
			return err
		}); err != nil {
			return err
		}
		if i == 1 {
			b.s3Ops = append(b.s3Ops, "create: "+fmtCounts(diffCounts(s0, b.s3Proxy.snapshot())))
		}
		if err := m.unmount(); err != nil {
			return err
		}
	}
	// Spot-check one file's content through a fresh mount later (ls remounts);
	// here through S3: the stored size is 4096 + 16.
	head, err := b.s3c.HeadObject(b.ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: aws.String(fmt.Sprintf("fs/creates/f%05d", n-1))})
	if err != nil {
		return err
	}
	if aws.ToInt64(head.ContentLength) != 4096+16 {
		return fmt.Errorf("%w: created object is %d bytes, want 4112", errMismatch, aws.ToInt64(head.ContentLength))
	}

	b.logf("create: SDK")
	body := randomBytes(4096)
	for _, conc := range []int{1, 16} {
		syscall.Sync()
		t, err := timed(func() error {
			return sdkPuts(b.ctx, b.s3c, b.bucket, fmt.Sprintf("sdk/creates-c%d/f", conc), body, n, conc)
		})
		if err != nil {
			return err
		}
		b.record(fmt.Sprintf("sdk.create.c%d", conc), t)
	}
	return nil
}

// smallFile returns the path of the create workload's local 4 KiB file of
// random bytes, writing it on first use.
func (b *bench) smallFile() (string, error) {
	small := filepath.Join(b.tmp, "small")
	if _, err := os.Stat(small); err == nil {
		return small, nil
	}
	return small, os.WriteFile(small, randomBytes(4096), 0o644)
}

// cpLoop times n runs of cp of the small file to dir/f%05d, one after
// another; dir is made first, untimed.
func (b *bench) cpLoop(dir string, n int) (float64, error) {
	small, err := b.smallFile()
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	// PUTs are fsync'd by MinIO: a loop must not start behind the
	// writeback of an earlier workload (the 10 GiB copy leaves gigabytes).
	syscall.Sync()
	return timed(func() error {
		for i := range n {
			if err := b.ctx.Err(); err != nil {
				return err
			}
			if err := runCmd(b.ctx, nil, "cp", small, filepath.Join(dir, fmt.Sprintf("f%05d", i))); err != nil {
				return err
			}
		}
		return nil
	})
}

func randomBytes(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rand.Uint32())
	}
	return p
}

// ls is the ls -l workload.
func (b *bench) ls() error {
	n := b.opt.files
	b.logf("ls: making %d files", n)
	m, err := b.mount("counted", b.s3Proxy.URL)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(m.dir, "many"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(m.dir, "many", "seed"), nil, 0o644); err != nil {
		return err
	}
	if err := m.unmount(); err != nil {
		return err
	}
	if err := sdkCopies(b.ctx, b.s3c, b.bucket, "fs/many/seed", "fs/many/f", n-1, 16); err != nil {
		return err
	}
	// Timed on a mount that talks to MinIO directly, like the SDK
	// baselines; the requests are then counted in a second cold and warm
	// pass through the counting proxy, which costs CPU on the same cores.
	// The --attrs-from-list passes (lsfast) answer ls -l from the LIST alone.
	for i, pass := range []struct {
		name, endpoint, phase, rec string
		counted                    bool
		extra                      []string
	}{
		{"lsdirect", b.s3srv.Endpoint, "ls", "csefs.ls", false, nil},
		{"counted", b.s3Proxy.URL, "ls", "", true, nil},
		{"lsfast", b.s3srv.Endpoint, "lsfast", "csefs.lsfast", false, []string{"--attrs-from-list"}},
		{"counted", b.s3Proxy.URL, "lsfast", "", true, []string{"--attrs-from-list"}},
	} {
		b.logf("ls: cold (%s %v)", pass.name, pass.extra)
		b.drop()
		// Warm means served from the metadata caches: the TTL must outlast
		// the cold listing, which takes longer than the default 5 s here.
		if m, err = b.mount(pass.name, pass.endpoint, append([]string{"--metadata-ttl", lsTTL}, pass.extra...)...); err != nil {
			return err
		}
		lsl := func() (float64, error) { return b.timedLs(filepath.Join(m.dir, "many"), n) }
		counted, label := pass.counted, "ls -l"
		if len(pass.extra) > 0 {
			label += " " + strings.Join(pass.extra, " ")
		}
		s0 := b.s3Proxy.snapshot()
		if err := b.daemonPhase(m, pass.phase, i%2, func() error {
			t, err := lsl()
			if !counted {
				b.record(pass.rec+".cold", t)
			}
			return err
		}); err != nil {
			return err
		}
		if counted {
			b.s3Ops = append(b.s3Ops, label+" cold: "+fmtCounts(diffCounts(s0, b.s3Proxy.snapshot())))
		}
		s0 = b.s3Proxy.snapshot()
		t, err := lsl()
		if err != nil {
			return err
		}
		if counted {
			b.s3Ops = append(b.s3Ops, label+" warm: "+fmtCounts(diffCounts(s0, b.s3Proxy.snapshot())))
		} else {
			b.record(pass.rec+".warm", t)
		}
		if err := m.unmount(); err != nil {
			return err
		}
		if bad := m.crashed(); bad != "" {
			return fmt.Errorf("mount log %s contains %q", m.log, bad)
		}
	}
	b.drop()
	var got int
	t, err := timed(func() error { got, err = sdkList(b.ctx, b.s3c, b.bucket, "fs/many/"); return err })
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("SDK LIST saw %d keys, want %d", got, n)
	}
	b.record("sdk.list", t)
	b.drop()
	if t, err = timed(func() error { got, err = sdkListHead(b.ctx, b.s3c, b.bucket, "fs/many/", 32); return err }); err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("SDK LIST+HEAD saw %d keys, want %d", got, n)
	}
	b.record("sdk.listhead", t)
	return nil
}

// lsTTL is the --metadata-ttl of the ls -l workload's mounts.
const lsTTL = "60s"

// timedLs times ls -l of dir and checks that it lists n empty regular
// files.
func (b *bench) timedLs(dir string, n int) (float64, error) {
	var out strings.Builder
	t, err := timed(func() error { return runCmd(b.ctx, &out, "ls", "-l", dir) })
	if err != nil {
		return 0, err
	}
	return t, checkLs(out.String(), n)
}

// checkLs checks ls -l output: "total N" and then n lines, each an empty
// regular file.
func checkLs(out string, n int) error {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n+1 || !strings.HasPrefix(lines[0], "total ") {
		return fmt.Errorf("%w: ls -l printed %d lines, want \"total\" and %d entries", errMismatch, len(lines), n)
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) < 5 || f[4] != "0" || !strings.HasPrefix(f[0], "-") {
			return fmt.Errorf("%w: ls -l line %q: want an empty regular file", errMismatch, l)
		}
	}
	return nil
}

// pread is the random 4 KiB read workload on the test file.
func (b *bench) pread() error {
	const blk = 4096
	size := b.opt.size
	src, err := b.source(size)
	if err != nil {
		return err
	}
	mntPath := filepath.Join(b.direct.dir, "seq")
	sdkKey := "sdk/seq"
	if len(b.metrics["csefs.write"]) == 0 { // write not run: store the file untimed
		if err := runCmd(b.ctx, nil, "cp", src.path, mntPath); err != nil {
			return err
		}
		if err := sdkUpload(b.ctx, b.s3c, b.bucket, sdkKey, src.path, size, sdkPartSize, sdkConcurrency); err != nil {
			return err
		}
	}
	offs := randomOffsets(b.opt.preads, size, blk)
	var lat []time.Duration
	b.logf("pread: csefs")
	b.drop()
	if err := b.daemonPhase(b.direct, "pread", 0, func() error {
		lat, err = preads(mntPath, src.path, offs, blk)
		return err
	}); err != nil {
		return err
	}
	b.recordLatencies("csefs.pread", lat)
	b.logf("pread: SDK")
	b.drop()
	sdkLat, err := sdkPreads(b.ctx, b.s3c, b.bucket, sdkKey, offs, blk)
	if err != nil {
		return err
	}
	b.recordLatencies("sdk.pread", sdkLat)
	return nil
}

// preads times a pread of blk bytes of path at each offset, one at a time,
// and checks each block against the same range of src.
func preads(path, src string, offs []int64, blk int) ([]time.Duration, error) {
	srcf, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer srcf.Close()
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := make([]byte, blk)
	got := make([]byte, blk)
	lat := make([]time.Duration, len(offs))
	for i, off := range offs {
		t0 := time.Now()
		if _, err := f.ReadAt(got, off); err != nil {
			return nil, fmt.Errorf("pread %s at %d: %w", path, off, err)
		}
		lat[i] = time.Since(t0)
		if _, err := srcf.ReadAt(want, off); err != nil {
			return nil, err
		}
		if string(got) != string(want) {
			return nil, fmt.Errorf("%w: pread of %s at %d returned other bytes than were written", errMismatch, path, off)
		}
	}
	return lat, nil
}

// recordLatencies records p50 and p99 in seconds.
func (b *bench) recordLatencies(name string, lat []time.Duration) {
	s := slices.Clone(lat)
	slices.Sort(s)
	b.record(name+".p50", percentile(s, 50).Seconds())
	b.record(name+".p99", percentile(s, 99).Seconds())
}

// percentile returns the p-th percentile (nearest rank) of sorted s.
func percentile(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100 // ceil(n·p/100), 1-based
	return s[max(i, 1)-1]
}
