package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// checkFUSE says what is missing before a mount is tried: /dev/fuse (the
// kernel module, or a container without the device), or, for a user other
// than root, the fusermount3 program that mounts for it.
func checkFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse: load the fuse kernel module (modprobe fuse) or, in a container, pass the device in (docker run --device /dev/fuse --cap-add SYS_ADMIN): %w", err)
	}
	if os.Geteuid() == 0 {
		return nil // root mounts directly
	}
	for _, name := range []string{"fusermount3", "fusermount"} {
		for _, p := range []string{name, "/bin/" + name} {
			if path, err := exec.LookPath(p); err == nil {
				if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
					return nil
				}
			}
		}
	}
	return errors.New("fusermount3 not found: a user other than root mounts FUSE through it (install fuse3: apt-get install fuse3, dnf install fuse3), or mount as root")
}

// captureStderr runs f with file descriptor 2 going to a temporary file,
// and returns what was written there (also copied to the real stderr
// afterwards). It lets a failed fusermount's reason, which it prints to
// the stderr it inherits, be part of the mount's error. Only for the short
// moment of the mount: anything else the process writes to stderr then is
// captured too, and copied on.
func captureStderr(f func() error) (string, error) {
	tmp, err := os.CreateTemp("", "csefs-fusermount-*")
	if err != nil {
		return "", f()
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	saved, err := unix.Dup(2)
	if err != nil {
		return "", f()
	}
	defer unix.Close(saved)
	if err := unix.Dup3(int(tmp.Fd()), 2, 0); err != nil {
		return "", f()
	}
	ferr := f()
	_ = unix.Dup3(saved, 2, 0)
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", ferr
	}
	b, _ := io.ReadAll(tmp)
	os.Stderr.Write(b)
	return strings.TrimSpace(string(b)), ferr
}
