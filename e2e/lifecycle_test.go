package e2e

// The life of a mount: unmount while a file is being written, signals,
// lazy unmount of a dead mount, --help, --read-only, foreground mode.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// isMounted reports whether mnt is a mount point in this mount namespace.
func isMounted(t testing.TB, mnt string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mnt {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline. Polling a condition is not a timing assertion: the deadline only
// turns a hang into a failure.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// daemonPid reads the pid file the daemon serving m wrote under
// $XDG_RUNTIME_DIR/csefs/ of the mount's environment.
func (m *mounted) daemonPid(t *testing.T) int {
	t.Helper()
	var runDir string
	for _, kv := range m.env {
		if v, ok := strings.CutPrefix(kv, "XDG_RUNTIME_DIR="); ok {
			runDir = v
		}
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(strings.Trim(m.Dir, "/")) + ".pid"
	b, err := os.ReadFile(filepath.Join(runDir, "csefs", name))
	if err != nil {
		t.Fatalf("daemon pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !alive(pid) {
		t.Fatalf("daemon pid file holds %q (%v), not a live process", b, err)
	}
	return pid
}

// csefsCmd is the csefs binary with the mount's environment.
func (m *mounted) csefsCmd(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(csefsBin(t), args...)
	cmd.Env = m.env
	return cmd
}

// TestUnmountWaitsForWriter: csefs unmount of a mount with a file open for
// writing keeps retrying while the file is open, returns only after it was
// closed and its upload finished, and the object is then complete.
//
// Ordering is forced, not timed. The writer is a dd process fed through a
// pipe (a separate process, so that no fork of the test binary holds the
// file). Once dd has the file open and has written half, csefs unmount starts
// under strace (when available), so the test sees its umount2 refused with
// EBUSY; then the second half is written, the test checks that the mount is
// still there and unmount still running while dd holds the file, and only
// then lets dd finish.
func TestUnmountWaitsForWriter(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	const half = 24 << 20
	plain := randBytes(t, 2*half)
	want := filepath.Join(t.TempDir(), "want")
	if err := os.WriteFile(want, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	daemon := m.daemonPid(t)

	dd := exec.Command("dd", "of="+m.path("big"), "bs=1M", "iflag=fullblock", "status=none")
	ddIn, err := dd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var ddOut bytes.Buffer
	dd.Stdout, dd.Stderr = &ddOut, &ddOut
	if err := dd.Start(); err != nil {
		t.Fatal(err)
	}
	ddDone := make(chan error, 1)
	go func() { ddDone <- dd.Wait() }()
	ddReaped := false
	t.Cleanup(func() {
		if !ddReaped {
			ddIn.Close()
			_ = dd.Process.Kill()
			<-ddDone
		}
	})
	if _, err := ddIn.Write(plain[:half]); err != nil {
		t.Fatalf("feeding dd: %v", err)
	}
	// dd holds the file open (it waits for more input).
	waitFor(t, "dd to hold the file open", func() bool { return holds(dd.Process.Pid, m.path("big")) })

	// Start csefs unmount; with strace, learn when its umount2 was refused.
	var cmd *exec.Cmd
	busy := make(chan struct{})
	var trace bytes.Buffer
	var traceMu sync.Mutex
	traceText := func() string { traceMu.Lock(); defer traceMu.Unlock(); return trace.String() }
	strace, serr := exec.LookPath("strace")
	if serr == nil {
		cmd = exec.Command(strace, "-f", "-qq", "-e", "trace=umount2", csefsBin(t), "unmount", m.Dir)
	} else {
		t.Logf("no strace: cannot observe the first refused umount2 (%v)", serr)
		close(busy)
		cmd = exec.Command(csefsBin(t), "unmount", m.Dir)
	}
	cmd.Env = m.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			traceMu.Lock()
			trace.WriteString(line + "\n")
			traceMu.Unlock()
			if serr == nil && strings.Contains(line, "umount2(") && strings.Contains(line, "EBUSY") {
				once.Do(func() { close(busy) })
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		<-readDone // read everything before Wait closes the pipe
		done <- cmd.Wait()
	}()
	unmountReaped := false
	t.Cleanup(func() {
		if !unmountReaped {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	select {
	case <-busy:
	case err := <-done:
		unmountReaped = true
		t.Fatalf("csefs unmount returned (%v) while a file was open for writing:\n%s", err, traceText())
	}

	// Unmount has been refused at least once; the file is still writable.
	if _, err := ddIn.Write(plain[half:]); err != nil {
		t.Fatalf("feeding dd after unmount started: %v", err)
	}
	if !isMounted(t, m.Dir) {
		t.Fatal("the mount went away while a file was open for writing")
	}
	select {
	case err := <-done:
		unmountReaped = true
		t.Fatalf("csefs unmount returned (%v) while dd still held the file:\n%s", err, traceText())
	case err := <-ddDone:
		ddReaped = true
		t.Fatalf("dd exited before its input ended: %v\n%s", err, ddOut.String())
	default:
	}
	ddIn.Close()
	err = <-ddDone
	ddReaped = true
	if err != nil {
		t.Fatalf("dd: %v\n%s", err, ddOut.String())
	}
	err = <-done
	unmountReaped = true
	if err != nil {
		t.Fatalf("csefs unmount: %v\n%s", err, traceText())
	}
	m.Gone()
	if tr := traceText(); strings.Contains(tr, "MNT_DETACH") {
		t.Errorf("csefs unmount detached lazily:\n%s", tr)
	}
	// When unmount returns, the daemon (and so every upload) has finished.
	if alive(daemon) {
		t.Errorf("csefs unmount returned while the daemon %d still runs", daemon)
	}
	if isMounted(t, m.Dir) {
		t.Error("still mounted after csefs unmount")
	}
	if size, _ := w.head(t, "big"); size != 2*half+16 {
		t.Errorf("stored object of %d bytes, want %d", size, 2*half+16)
	}
	m2 := w.mount(t, "")
	run(t, "cmp", want, m2.path("big"))
}

// holds reports whether process pid has path open.
func holds(pid int, path string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == path {
			return true
		}
	}
	return false
}

// TestWriteSurvivesFork: a process writing a file may fork (every exec from
// Go, a shell running a command) while the file is open. The child's copy of
// the descriptor is closed at exec, and the kernel sends FLUSH for it; that
// must not end the upload, or the parent's next write fails with EBADF.
func TestWriteSurvivesFork(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	plain := randBytes(t, 3<<20)
	f, err := os.Create(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(plain[:1<<20]); err != nil {
		t.Fatal(err)
	}
	// exec.Command forks; the child closes its copy of f (O_CLOEXEC).
	run(t, "true")
	if _, err := f.Write(plain[1<<20:]); err != nil {
		t.Fatalf("write after a fork+exec: %v (log:\n%s)", err, m.logText(t))
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	got, err := os.ReadFile(m.path("f"))
	checkSame(t, "mount", "f", got, err, plain)
}

// TestSignalUnmounts: SIGTERM and SIGINT to the daemon unmount cleanly, and
// what was written before is intact on remount.
func TestSignalUnmounts(t *testing.T) {
	w := newWorld(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			prefix := strings.ReplaceAll(sig.String(), " ", "-")
			m := w.mount(t, prefix)
			p := randomFile(t, t.TempDir(), "a", 3<<20+1)
			run(t, "cp", p, m.path("a"))
			pid := m.daemonPid(t)
			if err := syscall.Kill(pid, sig); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the daemon to exit", func() bool { return !alive(pid) })
			m.Gone()
			if isMounted(t, m.Dir) {
				t.Fatalf("%s: the daemon exited but %s is still mounted", sig, m.Dir)
			}
			if !strings.Contains(m.logText(t), "unmounted") {
				t.Errorf("log has no clean unmount:\n%s", m.logText(t))
			}
			m2 := w.mount(t, prefix)
			run(t, "cmp", p, m2.path("a"))
		})
	}
}

// TestLazyUnmountOfDeadMount: after kill -9 of the daemon the mount is dead
// (ENOTCONN); csefs unmount --lazy removes it and the mountpoint takes a new
// mount.
func TestLazyUnmountOfDeadMount(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	if err := os.WriteFile(m.path("x"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := m.daemonPid(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the daemon to die", func() bool { return !alive(pid) })
	m.Gone()
	// A dead FUSE connection answers ENOTCONN ("transport endpoint is not
	// connected"), or ECONNABORTED when the kernel aborted it with a request
	// in flight.
	_, err := os.Stat(m.Dir)
	if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("stat of a dead mount: %v, want ENOTCONN or ECONNABORTED", err)
	}
	out, err := m.csefsCmd(t, "unmount", "--lazy", m.Dir).CombinedOutput()
	if err != nil {
		t.Fatalf("csefs unmount --lazy: %v\n%s", err, out)
	}
	if isMounted(t, m.Dir) {
		t.Fatal("still mounted after csefs unmount --lazy")
	}
	if _, err := os.Stat(m.Dir); err != nil {
		t.Fatalf("mountpoint after lazy unmount: %v", err)
	}
	out2, err := mountAt(t, w.env, "s3://"+w.Bucket, m.Dir, w.s3Args()...)
	if err != nil {
		t.Fatalf("mount on the freed mountpoint: %v\n%s", err, out2)
	}
	got, err := os.ReadFile(m.path("x"))
	if err != nil || string(got) != "before" {
		t.Fatalf("read through the new mount: %q, %v", got, err)
	}
}

// TestMountHelp: csefs mount --help lists every flag of the issue with a
// help text.
func TestMountHelp(t *testing.T) {
	out, err := exec.Command(csefsBin(t), "mount", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("csefs mount --help: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	for _, flag := range []string{
		"endpoint-url", "kms-endpoint-url", "region", "path-style", "cse", "kms-key-id",
		"kms-wrap", "storage-mode", "keyring", "foreground", "read-only", "allow-other",
		"uid", "gid", "file-mode", "dir-mode", "log-level", "plaintext",
	} {
		found := false
		for _, l := range lines {
			l = strings.TrimSpace(l)
			rest, ok := strings.CutPrefix(l, "--"+flag+" ")
			if !ok {
				rest, ok = strings.CutPrefix(l, "--"+flag+", ")
			}
			if !ok {
				continue
			}
			// "--flag value  help" or "--flag, -f  help": text after two spaces.
			if i := strings.Index(rest, "  "); i >= 0 && len(strings.TrimSpace(rest[i:])) >= 10 {
				found = true
				if flag == "foreground" && !strings.Contains(l, "-f ") {
					t.Errorf("--foreground has no -f alias: %q", l)
				}
			}
		}
		if !found {
			t.Errorf("no help line for --%s:\n%s", flag, out)
		}
	}
}

// TestReadOnly: on a --read-only mount reads work and every write fails with
// EROFS.
func TestReadOnly(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	if err := os.WriteFile(m.path("a"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mkdir", m.path("d"))
	m.Unmount(t)
	ro := w.mount(t, "", "--read-only")
	got, err := os.ReadFile(ro.path("a"))
	if err != nil || string(got) != "content" {
		t.Fatalf("read on a read-only mount: %q, %v", got, err)
	}
	for name, op := range map[string]func() error{
		"create":   func() error { return os.WriteFile(ro.path("new"), []byte("x"), 0o644) },
		"truncate": func() error { return os.WriteFile(ro.path("a"), []byte("y"), 0o644) },
		"append": func() error {
			f, err := os.OpenFile(ro.path("a"), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		"mkdir":  func() error { return os.Mkdir(ro.path("e"), 0o755) },
		"rmdir":  func() error { return os.Remove(ro.path("d")) },
		"remove": func() error { return os.Remove(ro.path("a")) },
		"rename": func() error { return os.Rename(ro.path("a"), ro.path("b")) },
		"chmod":  func() error { return os.Chmod(ro.path("a"), 0o600) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", name, err)
		}
	}
	got, err = os.ReadFile(ro.path("a"))
	if err != nil || string(got) != "content" {
		t.Fatalf("file after refused writes: %q, %v", got, err)
	}
}

// TestForeground: csefs mount -f stays in the foreground serving the mount,
// and SIGTERM ends it with exit code 0 after unmounting.
func TestForeground(t *testing.T) {
	w := newWorld(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	cmd := exec.Command(csefsBin(t), append(append([]string{"mount", "-f"}, w.s3Args()...), "s3://"+w.Bucket, mnt)...)
	cmd.Env = w.env
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	reaped := false // set when the test received from exited
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		}
		if isMounted(t, mnt) {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	var early error
	exitedEarly := false
	waitFor(t, "the foreground mount", func() bool {
		select {
		case early = <-exited:
			exitedEarly, reaped = true, true
			return true
		default:
		}
		return isMounted(t, mnt)
	})
	if exitedEarly {
		t.Fatalf("csefs mount -f exited (%v) before mounting:\n%s", early, logBuf.String())
	}
	plain := make([]byte, 100_000)
	if _, err := io.ReadFull(rand.Reader, plain); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "f"))
	checkSame(t, "foreground mount", "f", got, err, plain)
	select {
	case err := <-exited:
		reaped = true
		t.Fatalf("csefs mount -f exited while serving: %v", err)
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = <-exited
	reaped = true
	if err != nil {
		t.Fatalf("csefs mount -f after SIGTERM: %v, want exit 0\n%s", err, logBuf.String())
	}
	if isMounted(t, mnt) {
		t.Error("still mounted after the foreground process exited")
	}
	if size, _ := w.head(t, "f"); size != int64(len(plain))+16 {
		t.Errorf("stored %d bytes", size)
	}
}
