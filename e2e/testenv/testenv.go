// Package testenv starts the real servers csefs's tests run against — MinIO
// for S3 and local-kms for KMS — as subprocesses of the test binary, once per
// package, on free 127.0.0.1 ports.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// and from tests:
//
//	s3srv := testenv.MinIO(t)     // skips (or fails when CI=true) if unavailable
//	bucket := s3srv.NewBucket(t)
//	kmssrv := testenv.KMS(t)
//
// The server binaries are built from the pins in e2e/tools into a cache
// directory (see ToolsBin). Servers are killed when Main returns, on SIGINT or
// SIGTERM, and by the kernel (Pdeathsig) if the test binary dies without
// cleaning up. Server output goes to a log file whose path is reported
// whenever a server fails to start and when the tests fail.
package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Fixed test credentials and region. local-kms accepts any credentials, so
// the KMS environment carries the same ones as MinIO: subprocess environments
// built from both Env lists never conflict.
const (
	testAccessKey = "csefs-test-access"
	testSecretKey = "csefs-test-secret-key"
	testRegion    = "us-east-1"
	testAccountID = "111122223333"
)

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 60 * time.Second

// ErrUnavailable is wrapped by every error this package returns when a server
// or binary cannot be provided.
var ErrUnavailable = errors.New("testenv: unavailable")

// Unavailable skips the test, or fails it when the environment variable CI is
// "true": in CI a missing FUSE, MinIO or local-kms is a failure, never a skip.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("required test dependency unavailable (CI=true): %s", msg)
		return
	}
	t.Skipf("test dependency unavailable: %s", msg)
}

// Main wraps m.Run for TestMain: it runs the tests, stops every server this
// binary started, removes their temporary directories (kept, with their logs
// listed on stderr, when the tests failed) and exits with m.Run's code.
func Main(m *testing.M) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		stopAll(false)
		if sig, isSys := s.(syscall.Signal); isSys {
			os.Exit(128 + int(sig))
		}
		os.Exit(1)
	}()
	code := m.Run()
	signal.Stop(sigs)
	stopAll(code != 0)
	os.Exit(code)
}

// proc is one running server.
type proc struct {
	name    string
	cmd     *exec.Cmd
	dir     string // temp dir holding data and log
	logPath string
	exited  chan struct{} // closed when the process has been reaped
	waitErr error         // valid after exited is closed
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// stopAll kills every started server (its whole process group) and reaps it.
// With keepLogs the temp dirs stay and their log paths are printed.
func stopAll(keepLogs bool) {
	procsMu.Lock()
	ps := procs
	procs = nil
	procsMu.Unlock()
	for _, p := range ps {
		p.kill()
		if keepLogs {
			fmt.Fprintf(os.Stderr, "testenv: %s log: %s\n", p.name, p.logPath)
			continue
		}
		os.RemoveAll(p.dir)
	}
}

// stop kills p, forgets it (so stopAll does not see it again) and removes
// its directory unless keepLogs, when it prints the log path instead. It is
// safe to call more than once.
func (p *proc) stop(keepLogs bool) {
	procsMu.Lock()
	found := false
	for i, q := range procs {
		if q == p {
			procs = append(procs[:i], procs[i+1:]...)
			found = true
			break
		}
	}
	procsMu.Unlock()
	if !found {
		return // already stopped, here or by stopAll
	}
	p.kill()
	if keepLogs {
		fmt.Fprintf(os.Stderr, "testenv: %s log: %s\n", p.name, p.logPath)
		return
	}
	os.RemoveAll(p.dir)
}

func (p *proc) kill() {
	if p.cmd.Process != nil {
		// Negative pid: the whole process group (Setpgid below).
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.exited
}

// startProc starts bin with args and env in its own process group, output to
// dir/<name>.log. The child gets SIGKILL if this process dies (Pdeathsig).
func startProc(name, dir, bin string, args, env []string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the creating *thread* exits; pin this goroutine to
	// its thread while forking. After UnlockOSThread the thread returns to the
	// runtime's pool and lives as long as the process.
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	logf.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, dir: dir, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

// waitReady polls ready until it returns nil, the process exits, or the
// deadline passes. Polling with a short pause between attempts is the point:
// readiness is observed, never assumed after a fixed sleep.
func (p *proc) waitReady(ready func() error) error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s not ready after %v (last error: %v; log %s)", ErrUnavailable, p.name, startTimeout, last, p.logPath)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%w: %s exited before becoming ready: %v (log %s)", ErrUnavailable, p.name, p.waitErr, p.logPath)
		case <-tick.C:
		}
	}
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
