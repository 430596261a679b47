package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Unmount unmounts mnt. A busy mount (files open, uploads in progress) is
// retried until timeout; then the daemon is waited for, so that when Unmount
// returns every upload has finished. lazy detaches the mount at once, which
// is how a dead mount ("transport endpoint is not connected") is removed.
func Unmount(mnt string, lazy bool, timeout time.Duration) error {
	return UnmountProgress(mnt, lazy, timeout, nil)
}

// UnmountProgress is Unmount, writing to progress (if not nil), once a
// second at most, what it is waiting for: "waiting for 2 uploads, 1 open
// file (pid 123 cp, pid 456 cat)", then the daemon finishing.
func UnmountProgress(mnt string, lazy bool, timeout time.Duration, progress io.Writer) error {
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return err
	}
	pid := readPid(abs)
	deadline := time.Now().Add(timeout)
	delay := 50 * time.Millisecond
	var said time.Time
	say := func(msg func() string) {
		if progress != nil && time.Since(said) >= time.Second {
			said = time.Now()
			if m := msg(); m != "" {
				fmt.Fprintf(progress, "csefs: unmount %s: %s\n", abs, m)
			}
		}
	}
	said = time.Now() // the first line after a second: quick unmounts say nothing
	for {
		err = unmountOnce(abs, lazy)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			if errors.Is(err, syscall.EBUSY) {
				if u := usersOf(abs); u.String() != "" {
					return fmt.Errorf("unmount %s: %w: still %s", abs, err, u)
				}
			}
			return fmt.Errorf("unmount %s: %w", abs, err)
		}
		say(func() string {
			if u := usersOf(abs); u.String() != "" {
				return "waiting for " + u.String()
			}
			return "waiting: busy"
		})
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
	if pid > 0 {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("unmount %s: unmounted, but the csefs process %d is still finishing", abs, pid)
			}
			say(func() string { return fmt.Sprintf("unmounted; waiting for csefs (pid %d) to finish its uploads", pid) })
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// mountUsers is what keeps a mount busy, from /proc.
type mountUsers struct {
	uploads, files, cwds int      // files open for writing, open for reading, working directories
	procs                []string // "pid 123 cp"
}

// String is "2 uploads, 1 open file, 1 working directory (pid 123 cp, …)",
// or "" for none.
func (u mountUsers) String() string {
	var parts []string
	plural := func(n int, one, many string) {
		if n == 1 {
			parts = append(parts, "1 "+one)
		} else if n > 1 {
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	plural(u.uploads, "upload", "uploads")
	plural(u.files, "open file", "open files")
	plural(u.cwds, "working directory", "working directories")
	if len(parts) == 0 {
		return ""
	}
	s := strings.Join(parts, ", ")
	if len(u.procs) > 0 {
		procs := u.procs
		if len(procs) > 5 {
			procs = append(procs[:5:5], "…")
		}
		s += " (" + strings.Join(procs, ", ") + ")"
	}
	return s
}

// usersOf scans /proc for the processes using files under mnt (as fuser
// does): files open for writing (each becomes an upload at close), files
// open otherwise, and working directories. Processes it may not inspect
// are not counted.
func usersOf(mnt string) mountUsers {
	var u mountUsers
	under := func(p string) bool { return p == mnt || strings.HasPrefix(p, mnt+"/") }
	procs, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == self {
			continue
		}
		base := filepath.Join("/proc", d.Name())
		using := false
		if cwd, err := os.Readlink(base + "/cwd"); err == nil && under(cwd) {
			u.cwds++
			using = true
		}
		fds, _ := os.ReadDir(base + "/fd")
		for _, fd := range fds {
			target, err := os.Readlink(base + "/fd/" + fd.Name())
			if err != nil || !under(target) {
				continue
			}
			using = true
			if writable(base + "/fdinfo/" + fd.Name()) {
				u.uploads++
			} else {
				u.files++
			}
		}
		if using {
			comm, _ := os.ReadFile(base + "/comm")
			u.procs = append(u.procs, fmt.Sprintf("pid %d %s", pid, strings.TrimSpace(string(comm))))
		}
	}
	return u
}

// writable reports whether the fd described by the fdinfo file at path is
// open for writing.
func writable(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&syscall.O_ACCMODE != syscall.O_RDONLY
		}
	}
	return false
}

func unmountOnce(mnt string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		err := syscall.Unmount(mnt, flags)
		if errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("%s is not mounted: %w", mnt, err)
		}
		return err
	}
	bin := "fusermount3"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "fusermount"
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	out, err := exec.Command(bin, append(args, mnt)...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("%s: %w", msg, syscall.EBUSY)
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	return nil
}

func readPid(mnt string) int {
	b, err := os.ReadFile(pidFile(mnt))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func processAlive(pid int) bool {
	// A zombie (exited, not yet reaped) has finished its work.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
