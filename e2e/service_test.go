package e2e

// Running csefs as a service: --version, the mount(8) helper and fstab,
// systemd readiness, logs and metrics (docs/operations.md).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/csefs/csefs/e2e/testenv"
)

// TestVersion: csefs --version names the module version, the VCS revision
// the binary was built from (when the build recorded one) and the Go
// toolchain, and a mount logs the same string.
func TestVersion(t *testing.T) {
	bin := csefsBin(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("csefs --version: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if !strings.HasPrefix(got, "csefs version ") || !strings.Contains(got, runtime.Version()) || strings.Count(got, "\n") != 0 {
		t.Errorf("csefs --version = %q, want one line \"csefs version V (revision R, %s …)\"", got, runtime.Version())
	}
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], "vcs.revision=") {
			if rev := strings.TrimPrefix(f[1], "vcs.revision="); !strings.Contains(got, rev) {
				t.Errorf("csefs --version = %q lacks the build's revision %s", got, rev)
			}
		}
	}
	ver := strings.TrimPrefix(got, "csefs version ")

	w := newWorld(t)
	m := w.mount(t, "")
	m.Unmount(t)
	if log := m.logText(t); !strings.Contains(log, ver) {
		t.Errorf("mount log lacks the version %q:\n%s", ver, log)
	}
}

// s3Options is w.s3Args as one -o list.
func (w *world) s3Options(extra ...string) string {
	return strings.Join(append([]string{
		"endpoint-url=" + w.S3.Endpoint, "path-style", "region=" + w.S3.Region,
		"kms-endpoint-url=" + w.KMS.Endpoint, "cse=kms", "kms-key-id=" + w.KMS.KeyID,
	}, extra...), ",")
}

// inMountNamespace runs script with sh in a private mount namespace where
// csefs is installed as /usr/local/bin/csefs (a bind mount of the test's
// build), as an operator installs it: mount(8) runs helpers with no PATH,
// so mount.fuse3 finds csefs only in the shell's default one. Mounts made
// in the namespace are invisible outside it; the script unmounts them.
func inMountNamespace(t *testing.T, env []string, script string) string {
	t.Helper()
	bin := csefsBin(t)
	if _, err := exec.LookPath("mount.fuse3"); err != nil {
		if _, err := os.Stat("/sbin/mount.fuse3"); err != nil {
			testenv.Unavailable(t, "no mount.fuse3 (apt-get install fuse3)")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("mount(8) of a FUSE type from a test needs root")
	}
	full := "set -e\nmount --bind " + filepath.Dir(bin) + " /usr/local/bin\n" + script
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", full)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a mount namespace: %v\nscript:\n%s\noutput:\n%s", err, script, out)
	}
	return string(out)
}

// TestMountHelper: `mount -t fuse.csefs -o OPTIONS SOURCE DIR` (mount(8)
// runs mount.fuse3, which runs `csefs SOURCE DIR -o OPTIONS`) and an fstab
// line mounted with `mount DIR` (from a private fstab, mount -T) both mount
// and serve encrypted files; ro and uid=NAME are honoured, _netdev, nofail,
// x-systemd.*, defaults, dev and suid are accepted; the mount is nosuid and
// nodev whatever the options. With a mount.fuse.csefs link in /sbin (and
// no mount.fuse3 beside it), mount(8) runs the link, as
// `mount.fuse.csefs SOURCE DIR -o OPTIONS`, and that mounts too.
func TestMountHelper(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	mnt, mnt2, mnt3 := filepath.Join(dir, "mnt"), filepath.Join(dir, "mnt2"), filepath.Join(dir, "mnt3")
	for _, d := range []string{mnt, mnt2, mnt3} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := "s3://" + w.Bucket + "/data"
	fstab := filepath.Join(dir, "fstab")
	line := fmt.Sprintf("%s %s fuse.csefs _netdev,nofail,noauto,x-systemd.requires=network-online.target,defaults,ro,uid=nobody,%s 0 0\n",
		src, mnt2, w.s3Options("log-file="+filepath.Join(dir, "fstab.log")))
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory to stand in for /sbin with only a mount.fuse.csefs link:
	// mount(8) then runs that link, not mount.fuse3 (hidden with the rest).
	sbin := filepath.Join(dir, "sbin")
	if err := os.Mkdir(sbin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(csefsBin(t), filepath.Join(sbin, "mount.fuse.csefs")); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`
trap 'set +e; csefs unmount %[1]s 2>/dev/null; csefs unmount %[2]s 2>/dev/null; csefs unmount %[3]s 2>/dev/null; true' EXIT
mount -t fuse.csefs -o _netdev,nofail,%[4]s %[5]s %[1]s
echo hello > %[1]s/a.txt
cat %[1]s/a.txt
grep " %[1]s " /proc/self/mounts
mount -T %[6]s %[2]s
echo "fstab: $(cat %[2]s/a.txt) owner $(stat -c %%u %[2]s/a.txt)"
if touch %[2]s/b.txt 2>/dev/null; then echo "ro mount is writable"; exit 1; fi
grep " %[2]s " /proc/self/mounts
mount --bind %[7]s /usr/sbin
ls /sbin/
mount -t fuse.csefs -o %[4]s %[5]s %[3]s
echo "helper: $(cat %[3]s/a.txt)"
csefs unmount %[1]s
csefs unmount %[2]s
csefs unmount %[3]s
`, mnt, mnt2, mnt3, w.s3Options("log-file="+filepath.Join(dir, "mount.log")), src, fstab, sbin)
	out := inMountNamespace(t, w.env, script)
	t.Logf("output:\n%s", out)
	for _, want := range []string{"hello\n", "fstab: hello owner 65534", "mount.fuse.csefs\nhelper: hello"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[2] == "fuse.csefs" {
			opts := "," + f[3] + ","
			if !strings.Contains(opts, ",nosuid,") || !strings.Contains(opts, ",nodev,") {
				t.Errorf("mount is not nosuid,nodev: %s", l)
			}
			if f[1] == mnt2 && !strings.Contains(opts, ",ro,") {
				t.Errorf("fstab mount with ro is not read-only: %s", l)
			}
		}
	}
	if _, meta := w.head(t, "data/a.txt"); meta["x-amz-key-v2"] == "" {
		t.Errorf("data/a.txt is not encrypted: %v", meta)
	}
}

// notifySocket listens on a unix datagram socket for sd_notify messages, as
// systemd does for a Type=notify service; messages arrive on the channel.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// waitNotify waits up to a minute for a message containing want, failing
// the test if the process exits first or the time passes.
func waitNotify(t *testing.T, ch <-chan string, want string, exited <-chan error) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(m, want) {
				return m
			}
		case err := <-exited:
			t.Fatalf("csefs exited (%v) before sending %q", err, want)
		case <-timeout:
			t.Fatalf("no %q on NOTIFY_SOCKET within a minute", want)
		}
	}
}

// TestSystemdNotify runs the ExecStart and ExecStop lines of the example
// unit contrib/systemd/csefs-data.service (pointed at the test servers) as
// systemd would for Type=notify: READY=1 (with MAINPID) arrives on
// NOTIFY_SOCKET, by then the mount serves, logs go to stderr, ExecStop
// unmounts, STOPPING=1 arrives and the process exits 0. The unit passes
// systemd-analyze verify.
func TestSystemdNotify(t *testing.T) {
	w := newWorld(t)
	bin := csefsBin(t)
	unit, err := os.ReadFile("../contrib/systemd/csefs-data.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	r := strings.NewReplacer("/usr/local/bin/csefs", bin, "/mnt/data", mnt,
		"s3://my-bucket/data", "s3://"+w.Bucket+"/data",
		"--cse kms --kms-key-id alias/my-key", strings.Join(w.s3Args(), " "))
	text := r.Replace(string(unit))
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		f := filepath.Join(dir, "csefs-data.service")
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(path, "verify", f).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
	lines := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "Exec") {
			lines[k] = v
		}
	}
	if !strings.Contains(text, "Type=notify") || lines["ExecStart"] == "" || lines["ExecStop"] == "" {
		t.Fatalf("unit lacks Type=notify, ExecStart or ExecStop:\n%s", text)
	}
	sock, msgs := notifySocket(t)
	env := append(withEnv(w.env, "NOTIFY_SOCKET", sock), "INVOCATION_ID=test")

	run(t, "sh", "-c", lines["ExecStartPre"])
	start := exec.Command("sh", "-c", "exec "+lines["ExecStart"])
	start.Env = env
	var stderr strings.Builder
	start.Stderr = &stderr
	if err := start.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- start.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			start.Process.Signal(syscall.SIGTERM)
			<-exited
		}
	})
	ready := waitNotify(t, msgs, "READY=1", exited)
	if !strings.Contains(ready, fmt.Sprintf("MAINPID=%d", start.Process.Pid)) {
		t.Errorf("READY message %q lacks MAINPID=%d", ready, start.Process.Pid)
	}
	// Ready means serving: no polling needed.
	if err := os.WriteFile(filepath.Join(mnt, "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatalf("write right after READY=1: %v", err)
	}
	stop := exec.Command("sh", "-c", lines["ExecStop"])
	stop.Env = env
	if out, err := stop.CombinedOutput(); err != nil {
		t.Fatalf("ExecStop: %v\n%s", err, out)
	}
	waitNotify(t, msgs, "STOPPING=1", nil)
	if err := <-exited; err != nil {
		t.Errorf("csefs exited with %v", err)
	}
	exited <- nil
	if log := stderr.String(); !strings.Contains(log, "msg=mounted") || !strings.Contains(log, "msg=unmounted") {
		t.Errorf("stderr (the journal) lacks the mounted and unmounted lines:\n%s", log)
	}
	if _, meta := w.head(t, "data/a.txt"); meta["x-amz-key-v2"] == "" {
		t.Errorf("data/a.txt is not encrypted: %v", meta)
	}
}

// pollFile waits up to a minute for the file at path to contain want.
func pollFile(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lacks %q after a minute:\n%s", path, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLogs: a background mount without --log-file logs to
// /var/log/csefs/NAME.log as root (the state directory otherwise);
// --log-format json writes one JSON object per line; after logrotate's
// rename and SIGHUP the daemon writes to a new file at the old path; a
// mount that fails leaves no log behind, neither the default one nor a
// --log-file it would have created, and under systemd ($JOURNAL_STREAM
// naming stderr) a background mount logs to its stderr, while a
// JOURNAL_STREAM naming another file (inherited by a shell) is ignored.
func TestLogs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the default log directory of root")
	}
	w := newWorld(t)
	bin := csefsBin(t)
	src := "s3://" + w.Bucket + "/logs"
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	defLog := filepath.Join("/var/log/csefs", strings.ReplaceAll(strings.Trim(mnt, "/"), "/", "_")+".log")
	t.Cleanup(func() { os.Remove(defLog) })
	csefs := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// A failed mount (no such bucket) leaves no log.
	bad := append([]string{"mount"}, w.s3Args()...)
	if out, err := csefs(w.env, append(bad, "s3://no-such-bucket-csefs", mnt)...); err == nil || !strings.Contains(out, "no such bucket") {
		t.Fatalf("mount of a missing bucket: %v\n%s", err, out)
	}
	given := filepath.Join(dir, "logs", "given.log")
	if out, err := csefs(w.env, append(bad, "--log-file", given, "s3://no-such-bucket-csefs", mnt)...); err == nil {
		t.Fatalf("mount of a missing bucket succeeded:\n%s", out)
	}
	for _, p := range []string{defLog, given} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("failed mount left %s behind (%v)", p, err)
		}
	}

	// The default log, in JSON.
	if out, err := csefs(w.env, append(append([]string{"mount"}, w.s3Args("--log-format", "json")...), src, mnt)...); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	m := &mounted{Dir: mnt, env: w.env}
	t.Cleanup(func() { csefs(w.env, "unmount", mnt) })
	text := pollFile(t, defLog, `"msg":"mounted"`)
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil || v["level"] == nil || v["msg"] == nil {
			t.Errorf("log line is not a JSON object with level and msg: %q (%v)", l, err)
		}
	}
	// logrotate: rename, SIGHUP, the old path gets a new file.
	rotated := defLog + ".1"
	t.Cleanup(func() { os.Remove(rotated) })
	if err := os.Rename(defLog, rotated); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(m.daemonPid(t), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	pollFile(t, defLog, "log file reopened")
	if out, err := csefs(w.env, "unmount", mnt); err != nil {
		t.Fatalf("unmount: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(defLog); !strings.Contains(string(b), `"msg":"unmounted"`) {
		t.Errorf("after SIGHUP the unmounted line is not in the new %s:\n%s", defLog, b)
	}
	if b, _ := os.ReadFile(rotated); strings.Contains(string(b), "unmounted") {
		t.Errorf("the rotated log still got lines after SIGHUP:\n%s", b)
	}

	// Under systemd: stderr, no file; and, as in a system unit, no
	// XDG_RUNTIME_DIR: the pid file goes to /run/csefs. JOURNAL_STREAM
	// names stderr's device and inode, as systemd sets it.
	os.Remove(defLog)
	f, err := os.Create(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range withEnv(w.env, "JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino)) {
		if !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(bin, append(append([]string{"mount"}, w.s3Args()...), src, mnt)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		t.Fatalf("mount under systemd: %v", err)
	}
	pid := filepath.Join("/run/csefs", strings.ReplaceAll(strings.Trim(mnt, "/"), "/", "_")+".pid")
	if _, err := os.Stat(pid); err != nil {
		t.Errorf("no pid file in /run/csefs without XDG_RUNTIME_DIR: %v", err)
	}
	if out, err := csefs(env, "unmount", mnt); err != nil {
		t.Fatalf("unmount: %v\n%s", err, out)
	}
	pollFile(t, f.Name(), "msg=unmounted")
	f.Close()
	if _, err := os.Stat(defLog); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("under systemd a log file was written: %v", err)
	}

	// A shell started by a service inherits JOURNAL_STREAM with another
	// stderr: that is not the journal, the default log file is used.
	out, err := csefs(withEnv(w.env, "JOURNAL_STREAM", "1:2"), append(append([]string{"mount"}, w.s3Args()...), src, mnt)...)
	if err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	if out, err := csefs(w.env, "unmount", mnt); err != nil {
		t.Fatalf("unmount: %v\n%s", err, out)
	}
	pollFile(t, defLog, "msg=unmounted")
}

// scrape reads /metrics into series -> value ("name{labels}" as printed).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	out := map[string]float64{"_text": 0}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q", l)
		}
		out[l[:i]] = v
	}
	metricsText[url] = string(body)
	return out
}

var metricsText = map[string]string{}

// sum adds the series of family name whose labels contain every one of
// labels (`op="GetObject"`).
func sum(m map[string]float64, name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		fam, rest, _ := strings.Cut(k, "{")
		if fam != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			s += v
		}
	}
	return s
}

// TestMetrics scrapes /metrics of a mount before and after a cold read (a
// KMS Decrypt, a key cache miss), a warm read (a hit, no KMS call), a write
// and a read of a tampered object, and checks each counter moved as it
// should; the families are all there, with the Go runtime's, and the text
// names no object and no key.
func TestMetrics(t *testing.T) {
	w := newWorld(t)
	const size = 300 << 10
	// The objects are written by another mount, so that this one's key
	// cache starts cold.
	writer := w.mount(t, "m")
	src := randomFile(t, t.TempDir(), "secret-name-a", size)
	run(t, "cp", src, writer.path("secret-name-a"))
	run(t, "cp", src, writer.path("secret-name-tampered"))
	writer.Unmount(t)
	body, meta := w.getRaw(t, "m/secret-name-tampered")
	body[100] ^= 1
	w.putRaw(t, "m/secret-name-tampered", body, meta)

	m := w.mount(t, "m", "--metrics-addr", "127.0.0.1:0", "--kms-key-ahead", "0")
	url := ""
	for _, l := range strings.Split(pollFile(t, m.Log, "serving metrics"), "\n") {
		if i := strings.Index(l, "url=http://"); i >= 0 {
			url = strings.Fields(l[i+len("url="):])[0]
		}
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("no loopback metrics url in the log:\n%s", m.logText(t))
	}
	before := scrape(t, url)
	for _, fam := range []string{"csefs_kms_requests_total", "csefs_kms_request_seconds", "csefs_keycache_hits_total",
		"csefs_keycache_misses_total", "csefs_s3_requests_total", "csefs_s3_request_seconds", "csefs_read_bytes_total",
		"csefs_written_bytes_total", "csefs_auth_failures_total", "csefs_uploads_in_flight", "csefs_staging_bytes",
		"csefs_memory_budget_bytes", "go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes"} {
		if !strings.Contains(metricsText[url], "# TYPE "+fam+" ") {
			t.Errorf("/metrics lacks the family %s", fam)
		}
	}
	if got := sum(before, "csefs_memory_budget_bytes", `state="free"`); got != 128<<20 {
		t.Errorf("memory budget free = %v, want 128 MiB", got)
	}

	delta := func(a, b map[string]float64, name string, labels ...string) float64 {
		return sum(b, name, labels...) - sum(a, name, labels...)
	}
	// Cold read.
	run(t, "cat", m.path("secret-name-a"))
	cold := scrape(t, url)
	if d := delta(before, cold, "csefs_read_bytes_total"); d != size {
		t.Errorf("cold read: read bytes +%v, want +%d", d, size)
	}
	if d := delta(before, cold, "csefs_keycache_misses_total"); d != 1 {
		t.Errorf("cold read: key cache misses +%v, want +1", d)
	}
	if d := delta(before, cold, "csefs_kms_requests_total", `op="Decrypt"`, `result="ok"`); d != 1 {
		t.Errorf("cold read: KMS Decrypt ok +%v, want +1", d)
	}
	if d := delta(before, cold, "csefs_kms_request_seconds_count", `op="Decrypt"`); d != 1 {
		t.Errorf("cold read: KMS Decrypt timings +%v, want +1", d)
	}
	if d := delta(before, cold, "csefs_s3_requests_total", `op="GetObject"`, `result="ok"`); d < 1 {
		t.Errorf("cold read: S3 GetObject ok +%v, want at least 1", d)
	}
	// Warm read: the key comes from the cache.
	run(t, "cat", m.path("secret-name-a"))
	warm := scrape(t, url)
	if d := delta(cold, warm, "csefs_read_bytes_total"); d != size {
		t.Errorf("warm read: read bytes +%v, want +%d", d, size)
	}
	if d := delta(cold, warm, "csefs_keycache_hits_total"); d < 1 {
		t.Errorf("warm read: key cache hits +%v, want at least 1", d)
	}
	if d := delta(cold, warm, "csefs_kms_requests_total"); d != 0 {
		t.Errorf("warm read: KMS requests +%v, want none", d)
	}
	// A write: bytes, a data key from KMS, a PUT.
	run(t, "cp", src, m.path("secret-name-new"))
	wrote := scrape(t, url)
	if d := delta(warm, wrote, "csefs_written_bytes_total"); d != size {
		t.Errorf("write: written bytes +%v, want +%d", d, size)
	}
	if d := delta(warm, wrote, "csefs_kms_requests_total", `op="GenerateDataKey"`, `result="ok"`); d != 1 {
		t.Errorf("write: KMS GenerateDataKey +%v, want +1", d)
	}
	if d := delta(warm, wrote, "csefs_s3_requests_total", `op="PutObject"`, `result="ok"`); d < 1 {
		t.Errorf("write: S3 PutObject ok +%v, want at least 1", d)
	}
	if got := sum(wrote, "csefs_uploads_in_flight"); got != 0 {
		t.Errorf("uploads in flight after cp = %v, want 0", got)
	}
	// A tampered object.
	if out, err := exec.Command("cat", m.path("secret-name-tampered")).Output(); err == nil {
		t.Fatalf("cat of a tampered object succeeded (%d bytes)", len(out))
	}
	bad := scrape(t, url)
	if d := delta(wrote, bad, "csefs_auth_failures_total", `reason="authentication"`); d < 1 {
		t.Errorf("tampered read: auth failures +%v, want at least 1", d)
	}
	if d := delta(wrote, bad, "csefs_auth_failures_total", `reason="truncated"`); d != 0 {
		t.Errorf("tampered read: truncated +%v, want 0", d)
	}
	for u, text := range metricsText {
		for _, secret := range []string{"secret-name", w.KMS.KeyID, w.Bucket} {
			if strings.Contains(text, secret) {
				t.Errorf("%s names %q", u, secret)
			}
		}
	}
}

// blackHole listens on loopback, accepts every connection and never
// answers: an endpoint behind a firewall that drops replies, or a hung
// server.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + ln.Addr().String()
}

// closedPort is a loopback URL where nothing listens: port 1 (tcpmux),
// which no test server takes (a port just closed can be taken again by
// any server of the machine).
func closedPort(t *testing.T) string {
	c, err := net.Dial("tcp", "127.0.0.1:1")
	if err == nil {
		c.Close()
		t.Skip("something listens on 127.0.0.1:1")
	}
	return "http://127.0.0.1:1"
}

// TestMountTimeToFail: each bad endpoint fails mount with a message that
// says what happened and names the endpoint, in bounded time (logged; the
// bound checked is only that the mount-time deadline, not the 60 s retry
// deadline of normal operations, ended it).
func TestMountTimeToFail(t *testing.T) {
	w := newWorld(t)
	src := "s3://" + w.Bucket
	notS3 := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		rw.WriteHeader(404)
		io.WriteString(rw, "<html><body>Not Found</body></html>")
	}))
	t.Cleanup(notS3.Close)
	flags := func(s3, kms string) []string {
		return []string{"--endpoint-url", s3, "--path-style", "--region", w.S3.Region,
			"--kms-endpoint-url", kms, "--cse", "kms", "--kms-key-id", w.KMS.KeyID}
	}
	hole, refused := blackHole(t), closedPort(t)
	for _, tc := range []struct {
		name  string
		args  []string
		words []string
	}{
		{"s3-black-hole", flags(hole, w.KMS.Endpoint), []string{"S3 endpoint " + hole + " accepted the connection but did not answer within 10s"}},
		{"s3-refused", flags(refused, w.KMS.Endpoint), []string{"S3 endpoint " + refused + " is unreachable: connection refused"}},
		{"not-s3-404", flags(notS3.URL, w.KMS.Endpoint), []string{notS3.URL + " is not an S3 endpoint"}},
		{"kms-black-hole", flags(w.S3.Endpoint, hole), []string{"KMS endpoint " + hole + " accepted the connection but did not answer within 10s"}},
		{"kms-refused", flags(w.S3.Endpoint, refused), []string{"KMS endpoint " + refused + " is unreachable"}},
		{"not-kms-404", flags(w.S3.Endpoint, notS3.URL), []string{notS3.URL + " is not a KMS endpoint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // most wait out the 10 s check deadline
			mnt := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			out, err := mountAt(t, w.env, src, mnt, tc.args...)
			took := time.Since(start)
			t.Logf("failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
			wantMountError(t, out, err, tc.words...)
			if strings.Contains(strings.ToLower(out), "denied") || strings.Contains(out, "no such bucket") {
				t.Errorf("message blames access or the bucket: %s", out)
			}
			if took > 45*time.Second {
				t.Errorf("took %v: the mount-time check deadline did not apply", took)
			}
		})
	}
}

// TestMountFUSEMissing: without /dev/fuse (a private mount namespace with
// a /dev that lacks it), and, for a user other than root, without
// fusermount3 or with fusermount3 refusing, mount says exactly that; the
// refusal carries fusermount3's own reason.
func TestMountFUSEMissing(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to build the namespaces and switch users")
	}
	bin := csefsBin(t)
	// A world-readable copy of the binary and directories owned by nobody.
	base, err := os.MkdirTemp("", "csefs-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(base, "csefs")
	run(t, "cp", bin, exe)
	for _, d := range []string{"home", "run", "store", "mnt"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if d != "mnt" { // the mountpoint stays root's: fusermount3 refuses it
			if err := os.Chown(filepath.Join(base, d), 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + filepath.Join(base, "home"),
		"XDG_RUNTIME_DIR=" + filepath.Join(base, "run")}
	mountCmd := exe + " mount --foreground file://" + filepath.Join(base, "store") + " " + filepath.Join(base, "mnt")
	asNobody := "setpriv --reuid=65534 --regid=65534 --clear-groups "
	for _, tc := range []struct {
		name, script, want string
	}{
		{"no-dev-fuse", "mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && " + mountCmd,
			"no /dev/fuse: load the fuse kernel module"},
		{"no-fusermount3", "for f in /usr/bin/fusermount3 /usr/bin/fusermount /bin/fusermount3 /bin/fusermount; do [ -e $f ] && mount --bind /dev/null $f; done; " + asNobody + mountCmd,
			"fusermount3 not found"},
		// fusermount3's reason: here it cannot open /dev/fuse (mode 0600
		// in some containers) or has no write access to the mountpoint.
		{"fusermount3-refuses", asNobody + mountCmd, "fusermount3: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", tc.script)
			cmd.Env = env
			start := time.Now()
			out, err := cmd.CombinedOutput()
			t.Logf("failed after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
			if err == nil {
				exec.Command("umount", "-l", filepath.Join(base, "mnt")).Run()
				t.Fatalf("mount succeeded")
			}
			last := ""
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.HasPrefix(l, "csefs: ") {
					last = l
				}
			}
			if !strings.Contains(last, tc.want) {
				t.Errorf("error line %q lacks %q", last, tc.want)
			}
			if tc.name == "fusermount3-refuses" && !strings.Contains(last, "failed to open /dev/fuse") && !strings.Contains(last, "no write access to mountpoint") {
				t.Errorf("error line %q lacks fusermount3's reason", last)
			}
		})
	}
}

// TestKeyringNewForOldStore: a file:// store with encrypted objects, mounted
// by a user (another $HOME) whose default keyring does not exist yet, is
// refused with a message naming the store and the keyring, and no keyring
// is created; --keyring with the keyring that wrote them mounts and reads.
func TestKeyringNewForOldStore(t *testing.T) {
	requireFUSE(t)
	store := t.TempDir()
	env := cleanEnv(t)
	m := mountWith(t, env, "file://"+store)
	if err := os.WriteFile(m.path("a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	var home string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			home = v
		}
	}
	first := filepath.Join(home, ".config", "csefs", "keyring.json")
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("the first mount's keyring: %v", err)
	}

	other := cleanEnv(t) // another $HOME: as another user, or with sudo
	var otherHome string
	for _, kv := range other {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			otherHome = v
		}
	}
	second := filepath.Join(otherHome, ".config", "csefs", "keyring.json")
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := mountAt(t, other, "file://"+store, mnt)
	wantMountError(t, out, err, "already holds encrypted objects")
	for _, want := range []string{"file://" + store, second, "--keyring"} {
		if !strings.Contains(out, want) {
			t.Errorf("message lacks %q: %s", want, out)
		}
	}
	if _, err := os.Stat(second); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a keyring was created at %s (%v)", second, err)
	}
	m2 := mountWith(t, other, "file://"+store, "--keyring", first)
	if b, err := os.ReadFile(m2.path("a.txt")); err != nil || string(b) != "hello" {
		t.Errorf("read with --keyring: %q, %v", b, err)
	}
}

// csefsOut runs csefs with args and returns its combined output and exit
// code.
func csefsOut(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(csefsBin(t), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestCLI: flags after the positional arguments work (a real mount); bad
// values and unknown flags print one line with a hint, sizes echoed as
// typed; --help is grouped and has examples; completion scripts are
// printed and the bash one completes; uploads takes the mount's connection
// flags.
func TestCLI(t *testing.T) {
	w := newWorld(t)
	src := "s3://" + w.Bucket + "/cli"
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// Flags anywhere, including -o.
	args := append([]string{"mount", src, mnt, "--log-file", filepath.Join(t.TempDir(), "log")}, w.s3Args()...)
	if out, code := csefsOut(t, w.env, append(args, "-o", "ro")...); code != 0 {
		t.Fatalf("mount with flags after the arguments: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(filepath.Join(mnt, "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("-o ro after the arguments: write gave %v, want EROFS", err)
	}
	if out, code := csefsOut(t, w.env, "unmount", mnt, "--timeout", "1m"); code != 0 {
		t.Fatalf("unmount with a flag after the mountpoint: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mount", "--part-size", "1", src, mnt}, `--part-size: "1" is outside S3's part size limits, 5MiB to 5GiB`},
		{[]string{"mount", src, mnt, "--part-size", "10TiB"}, `--part-size: "10TiB" is outside S3's part size limits`},
		{[]string{"mount", src, mnt, "--part-size", "10XB"}, `--part-size: "10XB" is not a size (units: B, K or KiB, M or MiB, G or GiB, T or TiB`},
		{[]string{"mount", "--upload-concurrency", "0", src, mnt}, "--upload-concurrency 0: at least 1"},
		{[]string{"mount", "--bogus", src, mnt}, "unknown flag --bogus (see csefs mount --help)"},
		{[]string{"mount", src}, "mount needs a source and a mountpoint"},
		{[]string{"uploads", "list", "--no-such", "s3://b"}, "unknown flag --no-such (see csefs uploads list --help)"},
		{[]string{"frobnicate"}, `no command "frobnicate"`},
	} {
		out, code := csefsOut(t, w.env, append(tc.args, w.s3Args()...)...)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("csefs %s: exit %d, output %q, want %q", strings.Join(tc.args, " "), code, out, tc.want)
		}
		if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
			t.Errorf("csefs %s: %d lines, want one:\n%s", strings.Join(tc.args, " "), n+1, out)
		}
	}

	help, _ := csefsOut(t, w.env, "mount", "--help")
	for _, want := range []string{"Connection", "Encryption and keys", "Writing and memory", "Logs, metrics and debugging", "EXAMPLES:", "mount -t fuse.csefs"} {
		if !strings.Contains(help, want) {
			t.Errorf("csefs mount --help lacks %q", want)
		}
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if out, code := csefsOut(t, w.env, "completion", sh); code != 0 || !strings.Contains(out, "csefs") || !strings.Contains(out, "mount") && sh == "fish" {
			t.Errorf("csefs completion %s: exit %d\n%s", sh, code, out)
		}
	}
	script, _ := csefsOut(t, w.env, "completion", "bash")
	f := filepath.Join(t.TempDir(), "c.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	got := run(t, "bash", "-c", `source `+f+`; COMP_WORDS=(`+csefsBin(t)+` mou); COMP_CWORD=1; _csefs; echo "${COMPREPLY[@]}"; COMP_WORDS=(`+csefsBin(t)+` mount --metrics); COMP_CWORD=2; _csefs; echo "${COMPREPLY[@]}"`)
	if got != "mount\n--metrics-addr\n" {
		t.Errorf("bash completion of \"csefs mou\" and \"csefs mount --metrics\" = %q", got)
	}

	// uploads list with the mount's flags, --kms-endpoint-url included.
	if out, code := csefsOut(t, w.env, append([]string{"uploads", "list", src}, w.s3Args()[:7]...)...); code != 0 {
		t.Errorf("uploads list with the mount's connection flags: exit %d\n%s", code, out)
	}
}

// TestUnmountProgress: unmount of a busy mount says, once a second at most,
// what it waits for (a file open for writing is an upload to come), and
// names what is left when it gives up.
func TestUnmountProgress(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "busy")
	if err := os.WriteFile(m.path("r.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	wf, err := os.Create(m.path("w.txt"))
	if err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(m.path("r.txt"))
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sleep", "600")
	holder.Stdout, holder.Stdin = wf, rf
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	wf.Close()
	rf.Close()
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })

	out, code := csefsOut(t, w.env, "unmount", "--timeout", "2500ms", m.Dir)
	t.Logf("unmount of a busy mount (exit %d):\n%s", code, out)
	if code == 0 {
		t.Fatal("unmount of a busy mount succeeded")
	}
	want := fmt.Sprintf("1 upload, 1 open file (pid %d sleep)", holder.Process.Pid)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.Contains(lines[0], "waiting for "+want) {
		t.Errorf("first line %q lacks %q", lines[0], "waiting for "+want)
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "still "+want) {
		t.Errorf("last line %q lacks %q", last, "still "+want)
	}
	if len(lines) > 4 { // 2.5 s: two or three progress lines and the error
		t.Errorf("%d lines in 2.5 s, want one a second at most", len(lines))
	}
	holder.Process.Kill()
	holder.Wait()
	m.Unmount(t)
	if n, _ := w.head(t, "busy/w.txt"); n < 0 {
		t.Errorf("w.txt not uploaded")
	}
}

// TestSignalRightAfterMount: a SIGHUP sent the moment mount has returned
// (logrotate at the wrong time) reopens the log and never kills the
// daemon: signals are caught before readiness is reported. 20 rounds; on
// the code that registered the handler after reporting readiness it failed
// in 3 runs of 3, within the first 3 rounds.
func TestSignalRightAfterMount(t *testing.T) {
	requireFUSE(t)
	env := cleanEnv(t)
	store := t.TempDir()
	for i := 0; i < 20; i++ {
		m := mountWith(t, env, "file://"+store)
		pid := m.daemonPid(t)
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); !strings.Contains(m.logText(t), "log file reopened"); {
			if !alive(pid) {
				m.Gone()
				exec.Command("umount", "-l", m.Dir).Run()
				t.Fatalf("round %d: the daemon died of SIGHUP", i)
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no \"log file reopened\" after a minute:\n%s", i, m.logText(t))
			}
			time.Sleep(10 * time.Millisecond)
		}
		m.Unmount(t)
	}
}
