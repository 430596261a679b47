package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/e2e/testenv"
)

// The remote table: csefs and the SDK against the same MinIO through a
// shaper (shaper.go) that adds -s3-latency of round trip and caps each
// connection at -s3-conn-bandwidth, as S3 looks from a cluster. The SDK runs
// at the concurrency a user would choose for such a link.
const (
	remoteReadConc  = 16       // SDK ranged GETs at once
	remoteWriteConc = 8        // SDK upload parts at once
	remotePart      = 16 << 20 // SDK part and range size
)

// remote is the state of the remote workloads.
type remote struct {
	sdk     *s3.Client     // through the shaper
	counted *s3.Client     // through the counting proxy, then the shaper
	proxy   *countingProxy // in front of the shaper
	m       *mount         // csefs through the shaper
	mc      *mount         // csefs through the counting proxy
	shaper  string
}

// remoteClient is an SDK client like b.s3c with endpoint ep and a
// connection pool as deep as its concurrency (the SDK's default keeps 10
// idle connections per host, and a new one costs a round trip).
func (b *bench) remoteClient(ep string) *s3.Client {
	opts := b.s3c.Options()
	opts.BaseEndpoint = aws.String(ep)
	opts.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = 64
	})
	return s3.New(opts)
}

func (b *bench) runRemote() error {
	u, err := url.Parse(b.s3srv.Endpoint)
	if err != nil {
		return err
	}
	shURL, stop, err := startShaper(u.Host, b.opt.s3Latency, float64(b.opt.s3ConnBW))
	if err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, stop)
	r := &remote{shaper: shURL, sdk: b.remoteClient(shURL)}
	if r.proxy, err = newCountingProxy(shURL, testenv.S3Op); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, r.proxy.close)
	r.counted = b.remoteClient(r.proxy.URL)
	b.rem = r

	if r.m, err = b.mount("remote", shURL); err != nil {
		return err
	}
	if b.opt.wantRemote("seq") {
		for run := range b.opt.remoteRuns {
			if err := b.remoteSeq(run); err != nil {
				return err
			}
		}
	}
	for _, n := range []int{8, 32} {
		if b.opt.wantRemote(fmt.Sprintf("multi%d", n)) {
			if err := b.remoteMulti(n); err != nil {
				return err
			}
		}
	}
	if err := r.m.unmount(); err != nil {
		return err
	}
	if bad := r.m.crashed(); bad != "" {
		return fmt.Errorf("mount log %s contains %q", r.m.log, bad)
	}
	if b.opt.wantRemote("tar") || b.opt.wantRemote("rsync") {
		if err := b.remoteTree(); err != nil {
			return err
		}
	}
	return nil
}

// remoteSeq is one run of the remote sequential write and read.
func (b *bench) remoteSeq(run int) error {
	r := b.rem
	size := b.opt.remoteSize
	src, err := b.source(size)
	if err != nil {
		return err
	}
	key, path := "sdk/rseq", filepath.Join(r.m.dir, "rseq")
	daemon, err := r.m.pid()
	if err != nil {
		return err
	}
	b.logf("remote run %d: write %d bytes", run, size)
	b.drop()
	if err := warm(src.path); err != nil {
		return err
	}
	sdkWrite := func() error {
		t, err := b.cpuTimed("r.sdk.write", 0, func() error {
			return sdkUpload(b.ctx, r.sdk, b.bucket, key, src.path, size, remotePart, remoteWriteConc)
		})
		b.record("r.sdk.write", t)
		return err
	}
	csefsWrite := func() error {
		return b.daemonPhase(r.m, "r.write", run, func() error {
			t, err := b.cpuTimed("r.csefs.write", daemon, func() error { return runCmd(b.ctx, nil, "cp", src.path, path) })
			b.record("r.csefs.write", t)
			return err
		})
	}
	writes := []func() error{sdkWrite, csefsWrite}
	if run%2 == 1 {
		writes[0], writes[1] = writes[1], writes[0]
	}
	for _, w := range writes {
		syscall.Sync()
		if err := w(); err != nil {
			return err
		}
	}
	b.logf("remote run %d: read", run)
	sdkRead := func() error {
		b.drop()
		t, err := b.cpuTimed("r.sdk.read", 0, func() error {
			return sdkRangedGet(b.ctx, r.sdk, b.bucket, key, size, remotePart, remoteReadConc)
		})
		b.record("r.sdk.read", t)
		return err
	}
	csefsRead := func() error {
		b.drop()
		return b.daemonPhase(r.m, "r.read", run, func() error {
			t, err := b.cpuTimed("r.csefs.read", daemon, func() error { return runCmd(b.ctx, nil, "cat", path) })
			b.record("r.csefs.read", t)
			return err
		})
	}
	reads := []func() error{sdkRead, csefsRead}
	if run%2 == 1 {
		reads[0], reads[1] = reads[1], reads[0]
	}
	for _, rd := range reads {
		if err := rd(); err != nil {
			return err
		}
	}
	b.drop()
	sum, n, err := fileSum(path)
	if err != nil {
		return fmt.Errorf("reading back %s: %w", path, err)
	}
	if n != size || sum != src.sum {
		return fmt.Errorf("%w: %s read back %d bytes with sha256 %x, want %d bytes %x", errMismatch, path, n, sum, size, src.sum)
	}
	b.checks++
	return nil
}

// remoteMulti writes n files of multiSize/n bytes at once and reads them
// back at once, csefs (n cp, then n readers) against the SDK (n uploads,
// then n ranged readers, at the same total concurrency as one file gets:
// max(n, 8) parts and max(n, 16) ranges in flight).
func (b *bench) remoteMulti(n int) error {
	r := b.rem
	each := b.opt.multiSize / int64(n)
	src, err := b.source(each)
	if err != nil {
		return err
	}
	daemon, err := r.m.pid()
	if err != nil {
		return err
	}
	name := fmt.Sprintf("r.multi%d", n)
	dir := filepath.Join(r.m.dir, fmt.Sprintf("multi%d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	file := func(i int) string { return filepath.Join(dir, fmt.Sprintf("f%02d", i)) }
	sdkKey := func(i int) string { return fmt.Sprintf("sdk/multi%d/f%02d", n, i) }
	wconc, rconc := max(1, remoteWriteConc/n), max(1, remoteReadConc/n)
	b.logf("remote: %d files of %d bytes", n, each)
	b.drop()
	if err := warm(src.path); err != nil {
		return err
	}
	syscall.Sync()
	t, err := b.cpuTimed(name+".sdk.write", 0, func() error {
		return forEach(b.ctx, n, n, func(ctx context.Context, i int) error {
			if each <= remotePart {
				return sdkPutFile(ctx, r.sdk, b.bucket, sdkKey(i), src.path)
			}
			return sdkUpload(ctx, r.sdk, b.bucket, sdkKey(i), src.path, each, remotePart, wconc)
		})
	})
	if err != nil {
		return err
	}
	b.record(name+".sdk.write", t)
	syscall.Sync()
	if err := b.daemonPhase(r.m, name+".write", 0, func() error {
		t, err := b.cpuTimed(name+".csefs.write", daemon, func() error {
			return forEach(b.ctx, n, n, func(ctx context.Context, i int) error {
				return runCmd(ctx, nil, "cp", src.path, file(i))
			})
		})
		b.record(name+".csefs.write", t)
		return err
	}); err != nil {
		return err
	}
	b.drop()
	if t, err = b.cpuTimed(name+".sdk.read", 0, func() error {
		return forEach(b.ctx, n, n, func(ctx context.Context, i int) error {
			return sdkRangedGet(ctx, r.sdk, b.bucket, sdkKey(i), each, remotePart, rconc)
		})
	}); err != nil {
		return err
	}
	b.record(name+".sdk.read", t)
	b.drop()
	if err := b.daemonPhase(r.m, name+".read", 0, func() error {
		t, err := b.cpuTimed(name+".csefs.read", daemon, func() error {
			return forEach(b.ctx, n, n, func(ctx context.Context, i int) error {
				return runCmd(ctx, nil, "cat", file(i))
			})
		})
		b.record(name+".csefs.read", t)
		return err
	}); err != nil {
		return err
	}
	// Correctness, untimed and cold: every file whole.
	b.drop()
	var mu sync.Mutex
	return forEach(b.ctx, n, n, func(ctx context.Context, i int) error {
		sum, got, err := fileSum(file(i))
		if err != nil {
			return err
		}
		if got != each || sum != src.sum {
			return fmt.Errorf("%w: %s read back %d bytes with sha256 %x, want %d bytes %x", errMismatch, file(i), got, sum, each, src.sum)
		}
		mu.Lock()
		b.checks++
		mu.Unlock()
		return nil
	})
}

// sdkPutFile PUTs the file at path as bucket/key.
func sdkPutFile(ctx context.Context, c *s3.Client, bucket, key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: f, ContentLength: aws.Int64(st.Size())})
	return err
}

// treeFile is a regular file of the small-file tree.
type treeFile struct {
	rel string
	sum [32]byte
}

// remoteTree is the small-file workloads: tar x and a fresh rsync -a of
// -tree onto a mount through the counting proxy, against the SDK PUTting
// the same files one by one through the same proxy; requests counted.
func (b *bench) remoteTree() error {
	r := b.rem
	root := filepath.Clean(b.opt.tree)
	var files []treeFile
	var bytesTotal int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, treeFile{rel: rel, sum: sha256.Sum256(data)})
		bytesTotal += int64(len(data))
		return nil
	})
	if err != nil {
		return fmt.Errorf("-tree: %w", err)
	}
	b.treeFiles, b.treeBytes = len(files), bytesTotal
	tarball := filepath.Join(b.tmp, "tree.tar")
	if err := runCmd(b.ctx, nil, "tar", "-C", root, "-cf", tarball, "."); err != nil {
		return err
	}

	b.logf("remote tree: SDK PUT loop of %d files", len(files))
	syscall.Sync()
	s0 := r.proxy.snapshot()
	t, err := timed(func() error {
		for _, f := range files {
			if err := sdkPutFile(b.ctx, r.counted, b.bucket, "sdk/tree/"+filepath.ToSlash(f.rel), filepath.Join(root, f.rel)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.record("r.tree.sdk", t)
	b.remoteOps = append(b.remoteOps, opsLine("SDK PUT loop", diffCounts(s0, r.proxy.snapshot()), len(files)))

	if r.mc, err = b.mount("rtree", r.proxy.URL); err != nil {
		return err
	}
	for _, w := range []struct {
		name string
		cmd  func(dst string) []string
	}{
		{"tar", func(dst string) []string { return []string{"tar", "-C", dst, "-xf", tarball} }},
		{"rsync", func(dst string) []string { return []string{"rsync", "-a", root + "/", dst + "/"} }},
	} {
		if !b.opt.wantRemote(w.name) {
			continue
		}
		dst := filepath.Join(r.mc.dir, w.name)
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
		b.logf("remote tree: %s", w.name)
		syscall.Sync()
		s0 := r.proxy.snapshot()
		args := w.cmd(dst)
		if err := b.daemonPhase(r.mc, "r."+w.name, 0, func() error {
			t, err := timed(func() error { return runCmd(b.ctx, nil, args[0], args[1:]...) })
			b.record("r.tree."+w.name, t)
			return err
		}); err != nil {
			return err
		}
		b.remoteOps = append(b.remoteOps, opsLine(w.name, diffCounts(s0, r.proxy.snapshot()), len(files)))
		if err := b.checkTree(dst, files); err != nil {
			return err
		}
	}
	if err := r.mc.unmount(); err != nil {
		return err
	}
	if bad := r.mc.crashed(); bad != "" {
		return fmt.Errorf("mount log %s contains %q", r.mc.log, bad)
	}
	return nil
}

// checkTree reads every file of the tree back from dst, cold, and compares
// its SHA-256 with the source's.
func (b *bench) checkTree(dst string, files []treeFile) error {
	b.drop()
	var mu sync.Mutex
	return forEach(b.ctx, len(files), 16, func(ctx context.Context, i int) error {
		f := files[i]
		data, err := os.ReadFile(filepath.Join(dst, f.rel))
		if err != nil {
			return err
		}
		if sha256.Sum256(data) != f.sum {
			return fmt.Errorf("%w: %s read back with other bytes", errMismatch, filepath.Join(dst, f.rel))
		}
		mu.Lock()
		b.treeChecks++
		mu.Unlock()
		return nil
	})
}

// opsLine prints a workload's request counts and their total per file.
func opsLine(name string, d map[string]int, files int) string {
	total := 0
	for _, v := range d {
		total += v
	}
	return fmt.Sprintf("%s: %d requests, %.2f per file (%s)", name, total, float64(total)/float64(files), fmtCounts(d))
}

// reportRemote prints the remote table.
func (b *bench) reportRemote(w io.Writer) {
	if b.rem == nil {
		return
	}
	has := func(k string) bool { return len(b.metrics[k]) > 0 }
	med := func(k string) float64 { return median(b.metrics[k]) }
	tput := func(k string, size int64) string {
		if !has(k) {
			return "—"
		}
		t := med(k)
		return fmt.Sprintf("%.2f s (%.0f MiB/s)", t, float64(size)/(1<<20)/t)
	}
	// tp: SDK throughput / csefs throughput as csefs's share (target ≥ x).
	share := func(a, base string, target float64) string {
		if !has(a) || !has(base) {
			return "—"
		}
		s := med(base) / med(a)
		v := "meets"
		if s < target {
			v = "MISSES"
		}
		return fmt.Sprintf("%.2f× (%s ≥ %.1f×)", s, v, target)
	}
	row := func(cells ...string) { fmt.Fprintf(w, "| %s |\n", joinCells(cells)) }
	var bw string
	if b.opt.s3ConnBW > 0 {
		bw = fmt.Sprintf("%.0f MB/s", float64(b.opt.s3ConnBW)/1e6)
	} else {
		bw = "unlimited"
	}
	fmt.Fprintf(w, "\n## Remote S3: csefs vs aws-sdk-go-v2 through a shaping proxy (%s round trip, %s per connection and direction)\n\n",
		b.opt.s3Latency, bw)
	fmt.Fprintf(w, "The SDK reads with %d ranged GETs of 16 MiB at once and writes %d parts of 16 MiB at once (for many files: "+
		"the same total, at least one per file). Throughput cells are medians of %d run(s), sequential runs alternate which goes first. "+
		"Speed = SDK time / csefs time (csefs's share of the SDK's throughput).\n\n", remoteReadConc, remoteWriteConc, b.opt.remoteRuns)
	row("operation", "csefs", "SDK", "speed vs SDK (target)")
	row("---", "---", "---", "---")
	size := b.opt.remoteSize
	if has("r.csefs.write") {
		row(fmt.Sprintf("%s seq write (`cp`, incl. close)", fmtSize(size)), tput("r.csefs.write", size), tput("r.sdk.write", size), share("r.csefs.write", "r.sdk.write", 0.9))
		row(fmt.Sprintf("%s seq read (`cat`, cold)", fmtSize(size)), tput("r.csefs.read", size), tput("r.sdk.read", size), share("r.csefs.read", "r.sdk.read", 0.9))
	}
	for _, n := range []int{8, 32} {
		k := fmt.Sprintf("r.multi%d", n)
		if !has(k + ".csefs.write") {
			continue
		}
		each := b.opt.multiSize / int64(n)
		row(fmt.Sprintf("%d files × %s written at once (`cp`)", n, fmtSize(each)), tput(k+".csefs.write", b.opt.multiSize), tput(k+".sdk.write", b.opt.multiSize), share(k+".csefs.write", k+".sdk.write", 0.9))
		row(fmt.Sprintf("%d files × %s read at once (`cat`, cold)", n, fmtSize(each)), tput(k+".csefs.read", b.opt.multiSize), tput(k+".sdk.read", b.opt.multiSize), share(k+".csefs.read", k+".sdk.read", 0.9))
	}
	secs := func(k string) string {
		if !has(k) {
			return "—"
		}
		return fmt.Sprintf("%.2f s", med(k))
	}
	ratio := func(a, base string, target float64) string {
		if !has(a) || !has(base) {
			return "—"
		}
		x := med(a) / med(base)
		v := "meets"
		if x > target {
			v = "MISSES"
		}
		return fmt.Sprintf("%.2f× the SDK's time (%s ≤ %.1f×)", x, v, target)
	}
	tree := fmt.Sprintf("%s (%d files, %s)", b.opt.tree, b.treeFiles, fmtSize(b.treeBytes))
	if has("r.tree.tar") {
		row("`tar x` of "+tree, secs("r.tree.tar"), secs("r.tree.sdk")+" PutObject one by one", ratio("r.tree.tar", "r.tree.sdk", 1.5))
	}
	if has("r.tree.rsync") {
		row("fresh `rsync -a` of "+tree, secs("r.tree.rsync"), secs("r.tree.sdk")+" PutObject one by one", ratio("r.tree.rsync", "r.tree.sdk", 3))
	}
	for _, p := range []string{"r.write", "r.read", "r.multi8.write", "r.multi8.read", "r.multi32.write", "r.multi32.read", "r.tar", "r.rsync"} {
		if has("rss." + p) {
			row("peak RSS, "+p[2:], fmt.Sprintf("%.0f MiB (daemon VmHWM)", med("rss."+p)/(1<<20)), "", "")
		}
	}
	if b.treeChecks > 0 {
		fmt.Fprintf(w, "\nCorrectness: %d files of the tree read back cold through the mount with the source's SHA-256.\n", b.treeChecks)
	}
	var cpu []string
	gib := func(n int64) float64 { return float64(n) / (1 << 30) }
	for _, ph := range []struct {
		key  string
		size int64
	}{{"r.%s.write", size}, {"r.%s.read", size}, {"r.multi8.%s.write", b.opt.multiSize}, {"r.multi8.%s.read", b.opt.multiSize},
		{"r.multi32.%s.write", b.opt.multiSize}, {"r.multi32.%s.read", b.opt.multiSize}} {
		c, s := "cpu."+fmt.Sprintf(ph.key, "csefs"), "cpu."+fmt.Sprintf(ph.key, "sdk")
		if !has(c+".daemon") || !has(s+".bench") {
			continue
		}
		cpu = append(cpu, fmt.Sprintf("%s: csefs daemon %.2f core-s/GiB, SDK (bench process) %.2f core-s/GiB (%.2f×); MinIO %.2f vs %.2f",
			fmt.Sprintf(ph.key, "*"), med(c+".daemon")/gib(ph.size), med(s+".bench")/gib(ph.size),
			med(c+".daemon")/med(s+".bench"), med(c+".minio")/gib(ph.size), med(s+".minio")/gib(ph.size)))
	}
	if len(cpu) > 0 {
		fmt.Fprintln(w, "\nCPU per GiB (medians; the shaper runs in its own process and is not counted):")
		for _, l := range cpu {
			fmt.Fprintln(w, "- "+l)
		}
	}
	if len(b.remoteOps) > 0 {
		fmt.Fprintln(w, "\nS3 requests of the small-file workloads (counting proxy in front of the shaper):")
		for _, l := range b.remoteOps {
			fmt.Fprintln(w, "- "+l)
		}
	}
}

func joinCells(cells []string) string {
	var buf bytes.Buffer
	for i, c := range cells {
		if i > 0 {
			buf.WriteString(" | ")
		}
		buf.WriteString(c)
	}
	return buf.String()
}
