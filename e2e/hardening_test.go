package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// coreLimit returns the "Max core file size" line of /proc/PID/limits.
func coreLimit(t *testing.T, pid string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max core file size") {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	t.Fatalf("no core size limit in /proc/%s/limits", pid)
	return ""
}

// dumpable reports whether the kernel treats pid as dumpable. /proc shows
// the flag nowhere, and root may inspect any process; but a thread that keeps
// root's uid and drops CAP_SYS_PTRACE from its effective set may inspect a
// process of its own uid (here with kcmp(2), which only compares) exactly
// when that process is dumpable (__ptrace_may_access).
func dumpable(t *testing.T, pid int) bool {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// Capabilities are per thread. The thread gets its capability
		// back before it is unlocked; if that failed, it stays locked and
		// exits with the goroutine. (It must not exit otherwise: children
		// it forked, such as MinIO, die with it through Pdeathsig.)
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		if data[0].Effective&(1<<unix.CAP_SYS_PTRACE) == 0 {
			errc <- fmt.Errorf("the test needs CAP_SYS_PTRACE to drop")
			return
		}
		full := data
		data[0].Effective &^= 1 << unix.CAP_SYS_PTRACE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		const kcmpVM = 1
		_, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(os.Getpid()), uintptr(pid), kcmpVM, 0, 0, 0)
		if err := unix.Capset(&hdr, &full[0]); err == nil {
			runtime.UnlockOSThread()
		}
		if e != 0 {
			errc <- e
			return
		}
		errc <- nil
	}()
	switch err := <-errc; err {
	case nil:
		return true
	case unix.EPERM:
		return false
	default:
		t.Fatalf("probing whether %d is dumpable: %v", pid, err)
		return false
	}
}

// TestDaemonHardening: the mounted daemon has moved to /, has a core size
// limit of 0 and is not dumpable, although it was started from another
// directory with cores allowed; --allow-core-dumps keeps the launcher's
// limit and the dumpable flag (docs/security.md §6a).
func TestDaemonHardening(t *testing.T) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &old); err != nil {
		t.Fatal(err)
	}
	// Start the daemon with cores allowed, so that 0 is its own doing.
	allowed := unix.Rlimit{Cur: old.Max, Max: old.Max}
	if allowed.Cur == 0 {
		t.Fatal("the hard core size limit is 0: cannot tell the daemon's limit from the launcher's")
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &allowed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_CORE, &old) })
	launcher := coreLimit(t, "self")
	if wd, _ := os.Getwd(); wd == "/" {
		t.Fatal("the test runs in /: cannot tell the daemon's chdir")
	}
	if !dumpable(t, os.Getpid()) {
		t.Fatal("the probe says this test process is not dumpable")
	}

	w := newWorld(t)
	for _, tc := range []struct {
		name  string
		extra []string
		core  string
		dump  bool
	}{
		{"default", nil, "Max core file size 0 0 bytes", false},
		{"allow-core-dumps", []string{"--allow-core-dumps"}, launcher, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := w.mount(t, "", tc.extra...)
			pid := m.daemonPid(t)
			p := fmt.Sprint(pid)
			if got := coreLimit(t, p); got != tc.core {
				t.Errorf("daemon: %q, want %q", got, tc.core)
			}
			if cwd, err := os.Readlink("/proc/" + p + "/cwd"); err != nil || cwd != "/" {
				t.Errorf("daemon's working directory %q (%v), want /", cwd, err)
			}
			if got := dumpable(t, pid); got != tc.dump {
				t.Errorf("daemon dumpable: %v, want %v", got, tc.dump)
			}
			// The mount works after all this.
			if err := os.WriteFile(m.path("f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMountNodevNosuid: the mount has nodev and nosuid, so that what a bucket
// writer can store in csefs' unauthenticated attributes (a character device
// node such as 1:1, a setuid mode) gives no local user more power: the device
// cannot be opened and the setuid bit is ignored. docs/security.md §1.
func TestMountNodevNosuid(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var opts string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == m.Dir {
			opts = f[5] // the per-mount options
		}
	}
	if opts == "" {
		t.Fatalf("%s not in /proc/self/mountinfo", m.Dir)
	}
	for _, want := range []string{"nodev", "nosuid"} {
		found := false
		for _, o := range strings.Split(opts, ",") {
			found = found || o == want
		}
		if !found {
			t.Errorf("mount options %q lack %s", opts, want)
		}
	}
}
