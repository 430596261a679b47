package mount

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// protectMemory keeps the daemon's memory, which holds data keys and
// plaintext, out of core dumps and away from other processes of its user: the
// core size limit becomes 0 and the process undumpable (PR_SET_DUMPABLE 0,
// which also makes /proc/PID/mem, environ and ptrace attach root-only and
// needing CAP_SYS_PTRACE). allowCore (--allow-core-dumps, for debugging)
// leaves both as the launcher set them. docs/security.md §6a.
func protectMemory(allowCore bool) error {
	if allowCore {
		return nil
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("setting the core size limit to 0: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	if d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); err != nil || d != 0 {
		return fmt.Errorf("the daemon is still dumpable (%d, %v)", d, err)
	}
	return nil
}

// leaveCwd moves the daemon to /, so that it holds no directory of its
// launcher busy (and a core dump, if allowed, goes where core_pattern says,
// not into the launcher's directory). Every path it uses later is absolute
// by then.
func leaveCwd() error {
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}
