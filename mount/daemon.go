package mount

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// The daemon protocol: the parent re-executes itself with envDaemon set and
// a pipe as fd 3. The child mounts and writes "ok\n", or "error: <message>\n",
// to the pipe, then closes it. The parent exits 0 or prints the message and
// exits non-zero; if the pipe closes with nothing on it the child died.
const envDaemon = "CSEFS_DAEMON_READY_FD"

// IsDaemonChild reports whether this process is the background child.
func IsDaemonChild() bool { return os.Getenv(envDaemon) == "3" }

// Daemonize starts this program again in the background with the same
// arguments plus extraArgs, and waits until the child reports that the mount
// is ready (nil) or why it is not. The child's stdout and stderr go to
// logPath (appended to, reopened by the child on SIGHUP), or with "" stay
// this process's (systemd's journal). A log file this call created is
// removed again when the mount fails with a reason, which the error
// carries: a failed mount leaves no log behind. When the child dies without
// one, the error names the log.
func Daemonize(extraArgs []string, logPath string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	env := append(os.Environ(), envDaemon+"=3")
	var logf *os.File
	created := false
	if logPath != "" {
		if _, err := os.Stat(logPath); errors.Is(err, os.ErrNotExist) {
			created = true
		}
		lf, err := OpenLogFile(logPath)
		if err != nil {
			w.Close()
			return err
		}
		logf = lf.f
		defer logf.Close()
		env = append(env, envLogFile+"="+logPath)
	}
	args := append(append([]string{}, os.Args[1:]...), extraArgs...)
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if logf != nil {
		cmd.Stdout, cmd.Stderr = logf, logf
	} else {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	msg, _ := bufio.NewReader(r).ReadString('\n')
	msg = strings.TrimSpace(msg)
	switch {
	case msg == "ok":
		_ = cmd.Process.Release()
		return nil
	case strings.HasPrefix(msg, "error: "):
		_ = cmd.Wait()
		if created {
			os.Remove(logPath)
		}
		return errors.New(strings.TrimPrefix(msg, "error: "))
	}
	err = cmd.Wait()
	where := "stderr"
	if logPath != "" {
		where = logPath
	}
	return fmt.Errorf("csefs daemon exited before the mount was ready (%v); see its log: %s", err, where)
}

// ReadyFunc returns the function the child calls once with the mount's
// readiness, writing it to the pipe from the parent.
func ReadyFunc() func(error) {
	f := os.NewFile(3, "ready")
	return func(err error) {
		if f == nil {
			return
		}
		if err != nil {
			io.WriteString(f, "error: "+strings.ReplaceAll(err.Error(), "\n", " ")+"\n")
		} else {
			io.WriteString(f, "ok\n")
		}
		f.Close()
		f = nil
	}
}
