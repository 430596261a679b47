package main

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"
)

// median returns the median of vs (the mean of the middle two for an even
// count).
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// fmtSize prints bytes in binary units ("1 GiB", "4 KiB", "1.5 MiB").
func fmtSize(n int64) string {
	for _, u := range []struct {
		name string
		mul  int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mul {
			if n%u.mul == 0 {
				return fmt.Sprintf("%d %s", n/u.mul, u.name)
			}
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.mul), u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// fmtCounts prints counts as "Decrypt 1, GenerateDataKey 3", or "none".
func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// report prints the markdown table, the call counts, the notes and the raw
// numbers.
func (b *bench) report(w io.Writer) {
	has := func(k string) bool { return len(b.metrics[k]) > 0 }
	med := func(k string) float64 { return median(b.metrics[k]) }
	secs := func(k string) string { return fmt.Sprintf("%.2f s", med(k)) }
	tput := func(k string, size int64) string {
		t := med(k)
		return fmt.Sprintf("%.2f s (%.0f MiB/s)", t, float64(size)/(1<<20)/t)
	}
	ratio := func(a, base string) string { return fmt.Sprintf("%.2f×", med(a)/med(base)) }
	mib := func(k string) string { return fmt.Sprintf("%.0f MiB", med(k)/(1<<20)) }
	ms := func(k string) string { return fmt.Sprintf("%.2f ms", med(k)*1000) }
	cold := "after drop_caches"
	if b.noDrop {
		cold = "WARM: caches could not be dropped"
	}

	fmt.Fprintf(w, "## csefs vs aws-sdk-go-v2 direct to the same MinIO (%d CPUs, %s)\n\n", runtime.NumCPU(), time.Now().Format("2006-01-02"))
	fmt.Fprintf(w, "Times are wall-clock; 1 MiB = 2^20 bytes; write/read cells are the median of %d run(s). "+
		"Ratio = csefs time / baseline time (above 1 means csefs is slower).\n\n", b.opt.runs)
	fmt.Fprintln(w, "| operation | csefs | baseline: SDK → MinIO | ratio (time) |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, s := range []struct {
		pfx  string
		size int64
	}{{"", b.opt.size}, {"big.", b.opt.big}} {
		p, label := s.pfx, fmtSize(s.size)
		if has(p + "csefs.write") {
			fmt.Fprintf(w, "| %s seq write (`cp` from page-cached file, incl. close) | %s | %s multipart, 16 MiB parts × 8 | %s |\n",
				label, tput(p+"csefs.write", s.size), tput(p+"sdk.write", s.size), ratio(p+"csefs.write", p+"sdk.write"))
		}
		if has(p + "csefs.read") {
			fmt.Fprintf(w, "| %s seq read (`cat` to /dev/null, %s) | %s | %s ranged GETs 16 MiB × 8; %s one GET | %s vs ranged; %s vs one GET |\n",
				label, cold, tput(p+"csefs.read", s.size), tput(p+"sdk.read.ranged", s.size), tput(p+"sdk.read.single", s.size),
				ratio(p+"csefs.read", p+"sdk.read.ranged"), ratio(p+"csefs.read", p+"sdk.read.single"))
		}
		if has("rss." + p + "write") {
			sdk := "—"
			if has("rss." + p + "sdk.write") {
				sdk = mib("rss."+p+"sdk.write") + " (bench process VmHWM during the SDK upload)"
			}
			fmt.Fprintf(w, "| peak RSS, %s write | %s (daemon VmHWM) | %s | |\n", label, mib("rss."+p+"write"), sdk)
		}
		if has("rss." + p + "read") {
			fmt.Fprintf(w, "| peak RSS, %s read | %s (daemon VmHWM) | — | |\n", label, mib("rss."+p+"read"))
		}
	}
	if has("csefs.create") {
		n := b.opt.creates
		rate := func(k string) string { return fmt.Sprintf("%s (%.0f PUT/s)", secs(k), float64(n)/med(k)) }
		fmt.Fprintf(w, "| %d × 4 KiB create (`for` loop of `cp`) | %s | %d PutObject: %s at conc 1; %s at conc 16. Local-disk `cp` loop (fork/exec floor): %s | %s vs conc 1 |\n",
			n, secs("csefs.create"), n, rate("sdk.create.c1"), rate("sdk.create.c16"), secs("local.create"), ratio("csefs.create", "sdk.create.c1"))
	}
	if has("csefs.ls.cold") {
		fmt.Fprintf(w, "| `ls -l` of %d entries, cold (%s + remount) / warm | %s / %s | paginated ListObjectsV2 of the prefix: %s (cold) | %s (cold vs LIST) |\n",
			b.opt.files, cold, secs("csefs.ls.cold"), secs("csefs.ls.warm"), secs("sdk.list"), ratio("csefs.ls.cold", "sdk.list"))
	}
	if has("csefs.pread.p50") {
		fmt.Fprintf(w, "| %d random 4 KiB preads in the %s file, one at a time, cold: p50 / p99 | %s / %s | 4 KiB ranged GET: %s / %s | %s / %s |\n",
			b.opt.preads, fmtSize(b.opt.size), ms("csefs.pread.p50"), ms("csefs.pread.p99"), ms("sdk.pread.p50"), ms("sdk.pread.p99"),
			ratio("csefs.pread.p50", "sdk.pread.p50"), ratio("csefs.pread.p99", "sdk.pread.p99"))
	}
	if has("rss.create") || has("rss.ls") || has("rss.pread") {
		var parts []string
		for _, k := range []string{"create", "ls", "pread"} {
			if has("rss." + k) {
				parts = append(parts, k+" "+mib("rss."+k))
			}
		}
		fmt.Fprintf(w, "| peak RSS, other workloads | %s (daemon VmHWM) | — | |\n", strings.Join(parts, ", "))
	}
	if b.checks > 0 {
		fmt.Fprintf(w, "\nCorrectness: every file read back through the mount (cold) had the source's SHA-256 (%d whole-file checks).\n", b.checks)
	}
	if len(b.kmsOps) > 0 {
		fmt.Fprintln(w, "\nKMS calls by workload (counting proxy in front of local-kms; first run only):")
		for _, l := range b.kmsOps {
			fmt.Fprintln(w, "- "+l)
		}
	}
	if len(b.s3Ops) > 0 {
		fmt.Fprintln(w, "\nS3 requests by the mount (counting proxy in front of MinIO):")
		for _, l := range b.s3Ops {
			fmt.Fprintln(w, "- "+l)
		}
	}
	if len(b.notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, l := range b.notes {
			fmt.Fprintln(w, "- "+l)
		}
	}
	fmt.Fprintln(w, "\nRaw numbers (seconds, bytes for rss.*; one value per run):")
	fmt.Fprintln(w, "```")
	for _, k := range slices.Sorted(maps.Keys(b.metrics)) {
		vs := b.metrics[k]
		var parts []string
		for _, v := range vs {
			parts = append(parts, fmt.Sprintf("%.4g", v))
		}
		fmt.Fprintf(w, "%-22s %s  (median %.4g, min %.4g, max %.4g)\n", k, strings.Join(parts, " "), median(vs), slices.Min(vs), slices.Max(vs))
	}
	fmt.Fprintln(w, "```")
}
