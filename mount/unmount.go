package mount

import (
	"errors"
	"fmt"
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
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return err
	}
	pid := readPid(abs)
	deadline := time.Now().Add(timeout)
	delay := 50 * time.Millisecond
	for {
		err = unmountOnce(abs, lazy)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("unmount %s: %w", abs, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
	if pid > 0 {
		for processAlive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("unmount %s: unmounted, but the csefs process %d is still finishing", abs, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
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
