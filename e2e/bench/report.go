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

	rc := has("rclone.write") || has("rclone.read") || has("rclone.create") || has("rclone.ls.cold") || has("rclone.pread.p50")
	// or "—" for a missing cell; vs: csefs/rclone time with the issue 6
	// target (csefs at least twice as fast).
	or := func(k, cell string) string {
		if !has(k) {
			return "—"
		}
		return cell
	}
	maybe := func(k, cell string) string { // an optional part of a cell
		if !has(k) {
			return ""
		}
		return cell
	}
	vsSDK := func(a, base string) string {
		if !has(a) || !has(base) {
			return "—"
		}
		return ratio(a, base)
	}
	vs := func(a, base string, target bool) string {
		if !has(a) || !has(base) {
			return "—"
		}
		r := med(a) / med(base)
		if !target {
			return fmt.Sprintf("%.2f×", r)
		}
		return fmt.Sprintf("%.2f× (%s)", r, verdict(r))
	}
	row := func(cells ...string) {
		if !rc {
			cells = cells[:4]
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}

	if b.opt.remote != "only" {
		title := "csefs vs aws-sdk-go-v2 direct to the same MinIO"
		if rc {
			title += " and rclone+crypt"
		}
		fmt.Fprintf(w, "## %s (%d CPUs, %s)\n\n", title, runtime.NumCPU(), time.Now().Format("2006-01-02"))
		fmt.Fprintf(w, "Times are wall-clock; 1 MiB = 2^20 bytes; write/read cells are the median of %d run(s). "+
			"Ratio = csefs time / baseline time (above 1 means csefs is slower).", b.opt.runs)
		if rc {
			fmt.Fprintf(w, " rclone+crypt is `rclone mount` (%s) of a crypt remote over an s3 remote of the same MinIO, "+
				"`--vfs-cache-mode off`, defaults otherwise. Issue 6's target: csefs ≥ 2× rclone+crypt (ratio ≤ 0.50×) "+
				"for the 1 GiB write and read, the creates and `ls -l`.", strings.TrimSpace(b.rcloneVersion))
		}
		fmt.Fprint(w, "\n\n")
		row("operation", "csefs", "baseline: SDK → MinIO", "ratio vs SDK (time)", "rclone+crypt, vfs-cache off", "csefs / rclone (target ≤ 0.50×)")
		row("---", "---", "---", "---", "---", "---")
		for _, s := range []struct {
			pfx  string
			size int64
		}{{"", b.opt.size}, {"big.", b.opt.big}} {
			p, label := s.pfx, fmtSize(s.size)
			rp := "rclone."
			if p != "" {
				rp = "rclone." + p // never measured: the rclone cells stay empty
			}
			if has(p+"csefs.write") || has(rp+"write") {
				row(fmt.Sprintf("%s seq write (`cp` from page-cached file, incl. close)", label),
					or(p+"csefs.write", tput(p+"csefs.write", s.size)),
					or(p+"sdk.write", tput(p+"sdk.write", s.size)+" multipart, 16 MiB parts × 8"),
					vsSDK(p+"csefs.write", p+"sdk.write"),
					or(rp+"write", tput(rp+"write", s.size)),
					vs(p+"csefs.write", rp+"write", true))
			}
			if has(p+"csefs.read") || has(rp+"read") {
				sdk, r := "—", "—"
				if has(p + "sdk.read.ranged") {
					sdk = fmt.Sprintf("%s ranged GETs 16 MiB × 8; %s one GET", tput(p+"sdk.read.ranged", s.size), tput(p+"sdk.read.single", s.size))
				}
				if has(p+"csefs.read") && has(p+"sdk.read.ranged") {
					r = fmt.Sprintf("%s vs ranged; %s vs one GET", ratio(p+"csefs.read", p+"sdk.read.ranged"), ratio(p+"csefs.read", p+"sdk.read.single"))
				}
				row(fmt.Sprintf("%s seq read (`cat` to /dev/null, %s)", label, cold),
					or(p+"csefs.read", tput(p+"csefs.read", s.size)), sdk, r,
					or(rp+"read", tput(rp+"read", s.size)),
					vs(p+"csefs.read", rp+"read", true))
			}
			if has("rss."+p+"write") || has("rss."+rp+"write") {
				sdk := "—"
				if has("rss." + p + "sdk.write") {
					sdk = mib("rss."+p+"sdk.write") + " (bench process VmHWM during the SDK upload)"
				}
				row(fmt.Sprintf("peak RSS, %s write", label), or("rss."+p+"write", mib("rss."+p+"write")+" (daemon VmHWM)"), sdk, "",
					or("rss."+rp+"write", mib("rss."+rp+"write")+" (rclone VmHWM)"), vs("rss."+p+"write", "rss."+rp+"write", false))
			}
			if has("rss."+p+"read") || has("rss."+rp+"read") {
				row(fmt.Sprintf("peak RSS, %s read", label), or("rss."+p+"read", mib("rss."+p+"read")+" (daemon VmHWM)"), "—", "",
					or("rss."+rp+"read", mib("rss."+rp+"read")+" (rclone VmHWM)"), vs("rss."+p+"read", "rss."+rp+"read", false))
			}
		}
		if has("csefs.reread.first") {
			row(fmt.Sprintf("%s re-read with `--cache-dir` (`cat`, %s): first read (fills the cache) / cached re-read", fmtSize(b.opt.size), cold),
				fmt.Sprintf("%s / %s", tput("csefs.reread.first", b.opt.size), tput("csefs.reread.cached", b.opt.size)),
				or("sdk.reread.ranged", tput("sdk.reread.ranged", b.opt.size)+" ranged GETs 16 MiB × 8"),
				or("sdk.reread.ranged", vsSDK("csefs.reread.first", "sdk.reread.ranged")+" first; "+vsSDK("csefs.reread.cached", "sdk.reread.ranged")+" cached"),
				"—", "—")
		}
		if has("csefs.create") || has("rclone.create") {
			n := b.opt.creates
			rate := func(k string) string { return fmt.Sprintf("%s (%.0f PUT/s)", secs(k), float64(n)/med(k)) }
			sdk := "—"
			if has("sdk.create.c1") {
				sdk = fmt.Sprintf("%d PutObject: %s at conc 1; %s at conc 16. Local-disk `cp` loop (fork/exec floor): %s",
					n, rate("sdk.create.c1"), rate("sdk.create.c16"), secs("local.create"))
			}
			row(fmt.Sprintf("%d × 4 KiB create (`for` loop of `cp`)", n), or("csefs.create", secs("csefs.create")), sdk,
				or("csefs.create", vsSDK("csefs.create", "sdk.create.c1")+" vs conc 1"),
				or("rclone.create", secs("rclone.create")), vs("csefs.create", "rclone.create", true))
		}
		if has("csefs.ls.cold") || has("rclone.ls.cold") {
			both := func(p string) string { return fmt.Sprintf("%s / %s", secs(p+".ls.cold"), secs(p+".ls.warm")) }
			warm := ""
			if has("csefs.ls.warm") && has("rclone.ls.warm") {
				warm = fmt.Sprintf("; warm %.2f×", med("csefs.ls.warm")/med("rclone.ls.warm"))
			}
			row(fmt.Sprintf("`ls -l` of %d entries, cold (%s + remount) / warm (csefs with --metadata-ttl %s)", b.opt.files, cold, lsTTL),
				or("csefs.ls.cold", both("csefs")), or("sdk.list", "paginated ListObjectsV2 of the prefix: "+secs("sdk.list")+" (cold)"+
					maybe("sdk.listhead", "; LIST and a HEAD of every key, 32 at once: "+secs("sdk.listhead"))),
				or("csefs.ls.cold", vsSDK("csefs.ls.cold", "sdk.list")+" (cold vs LIST)"+
					maybe("sdk.listhead", "; "+vsSDK("csefs.ls.cold", "sdk.listhead")+" vs LIST+HEAD")),
				or("rclone.ls.cold", both("rclone")), or("rclone.ls.cold", or("csefs.ls.cold", vs("csefs.ls.cold", "rclone.ls.cold", true)+" cold"+warm)))
		}
		if has("csefs.lsfast.cold") {
			row(fmt.Sprintf("`ls -l` of %d entries with `--attrs-from-list` (no HEAD per file), cold / warm", b.opt.files),
				fmt.Sprintf("%s / %s", secs("csefs.lsfast.cold"), secs("csefs.lsfast.warm")),
				or("sdk.list", "paginated ListObjectsV2: "+secs("sdk.list")),
				or("sdk.list", vsSDK("csefs.lsfast.cold", "sdk.list")+" (cold vs LIST)"),
				or("rclone.ls.cold", secs("rclone.ls.cold")+" cold"), or("rclone.ls.cold", vs("csefs.lsfast.cold", "rclone.ls.cold", true)+" cold"))
		}
		if has("csefs.pread.p50") || has("rclone.pread.p50") {
			pp := func(p string) string { return fmt.Sprintf("%s / %s", ms(p+".p50"), ms(p+".p99")) }
			pr := func(a, base string) string {
				if !has(a+".p50") || !has(base+".p50") {
					return "—"
				}
				return fmt.Sprintf("%s / %s", ratio(a+".p50", base+".p50"), ratio(a+".p99", base+".p99"))
			}
			row(fmt.Sprintf("%d random 4 KiB preads in the %s file, one at a time, cold: p50 / p99", b.opt.preads, fmtSize(b.opt.size)),
				or("csefs.pread.p50", pp("csefs.pread")), or("sdk.pread.p50", "4 KiB ranged GET: "+pp("sdk.pread")),
				pr("csefs.pread", "sdk.pread"), or("rclone.pread.p50", pp("rclone.pread")), pr("csefs.pread", "rclone.pread"))
		}
		other := func(pfx string) string {
			var parts []string
			for _, k := range []string{"create", "ls", "pread"} {
				if has("rss." + pfx + k) {
					parts = append(parts, k+" "+mib("rss."+pfx+k))
				}
			}
			return strings.Join(parts, ", ")
		}
		if o, r := other(""), other("rclone."); o != "" || r != "" {
			if o != "" {
				o += " (daemon VmHWM)"
			} else {
				o = "—"
			}
			if r != "" {
				r += " (rclone VmHWM)"
			} else {
				r = "—"
			}
			row("peak RSS, other workloads", o, "—", "", r, "")
		}
	}
	b.reportRemote(w)
	if b.checks > 0 || b.rcChecks > 0 {
		fmt.Fprintf(w, "\nCorrectness: every file read back through the mount (cold) had the source's SHA-256 "+
			"(%d whole-file checks through csefs, %d through rclone).\n", b.checks, b.rcChecks)
	}
	var cpuLines []string
	for _, ph := range []struct{ key, label string }{
		{"sdk.write", "SDK upload"}, {"csefs.write", "csefs cp in"},
		{"sdk.read.ranged", "SDK ranged GETs"}, {"csefs.read", "csefs cat out"},
		{"big.sdk.write", "big SDK upload"}, {"big.csefs.write", "big csefs cp in"},
		{"big.sdk.read.ranged", "big SDK ranged GETs"}, {"big.csefs.read", "big csefs cat out"},
	} {
		k := "cpu." + ph.key
		if !has(k + ".machine") {
			continue
		}
		l := fmt.Sprintf("%s: machine %.2f of %.2f core-s (%.0f%% busy), MinIO %.2f", ph.label,
			med(k+".machine"), med(k+".cores"), 100*med(k+".machine")/med(k+".cores"), med(k+".minio"))
		if has(k + ".daemon") {
			l += fmt.Sprintf(", csefs daemon %.2f", med(k+".daemon"))
		}
		cpuLines = append(cpuLines, l)
	}
	if len(cpuLines) > 0 {
		fmt.Fprintln(w, "\nCPU during the throughput workloads (medians; the rest of the machine's time is the client: cp, cat, the kernel's FUSE and page-cache work, or the SDK):")
		for _, l := range cpuLines {
			fmt.Fprintln(w, "- "+l)
		}
	}
	if len(b.kmsOps) > 0 {
		fmt.Fprintln(w, "\nKMS calls by workload (counting proxy in front of local-kms; first run only):")
		for _, l := range b.kmsOps {
			fmt.Fprintln(w, "- "+l)
		}
	}
	if len(b.s3Ops) > 0 {
		fmt.Fprintln(w, "\nS3 requests by the mount (counting proxy in front of MinIO, in a second, untimed pass of each workload):")
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

// verdict says how a csefs/rclone time ratio r compares with issue 6's
// target, csefs at least twice as fast (r ≤ 0.5).
func verdict(r float64) string {
	speed := fmt.Sprintf("%.1f× faster", 1/r)
	if r > 1 {
		speed = fmt.Sprintf("%.1f× slower", r)
	}
	if r <= 0.5 {
		return speed + ": meets ≥ 2×"
	}
	return speed + ": MISSES ≥ 2×"
}
