package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
)

// toolPkgs maps a server name to the package in e2e/tools that builds it.
var toolPkgs = map[string]string{
	"minio":     "github.com/minio/minio",
	"local-kms": "github.com/nsmithuk/local-kms",
}

// binDir is where pinned server binaries are cached: $CSEFS_TOOLS_BIN, else
// $XDG_CACHE_HOME/csefs/bin, else ~/.cache/csefs/bin (os.UserCacheDir).
func binDir() (string, error) {
	if d := os.Getenv("CSEFS_TOOLS_BIN"); d != "" {
		return d, nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(c, "csefs", "bin"), nil
}

// toolsModDir is the e2e/tools module directory, found from this source
// file's location (tests always run from a source tree).
func toolsModDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("%w: cannot locate testenv source", ErrUnavailable)
	}
	d := filepath.Join(filepath.Dir(file), "..", "tools")
	if _, err := os.Stat(filepath.Join(d, "go.mod")); err != nil {
		return "", fmt.Errorf("%w: e2e/tools module not found: %v", ErrUnavailable, err)
	}
	return d, nil
}

// ToolsBin returns the path of a pinned server binary ("minio" or
// "local-kms"), building it from e2e/tools into the cache directory if it is
// missing (see binDir). Building minio takes minutes; an exclusive flock on
// <dir>/.build.lock makes concurrent test binaries build each tool once, and
// the binary is renamed into place only when complete. It returns an error
// wrapping ErrUnavailable rather than failing, so callers decide.
func ToolsBin(name string) (string, error) {
	pkg, ok := toolPkgs[name]
	if !ok {
		return "", fmt.Errorf("testenv: unknown tool %q", name)
	}
	dir, err := binDir()
	if err != nil {
		return "", fmt.Errorf("%w: tools cache dir: %v", ErrUnavailable, err)
	}
	bin := filepath.Join(dir, name)
	if isExecutable(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("%w: lock %s: %v", ErrUnavailable, lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if isExecutable(bin) { // another process built it while we waited
		return bin, nil
	}
	mod, err := toolsModDir()
	if err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.Command("go", "build", "-o", tmp, pkg)
	cmd.Dir = mod
	// The tools module is separate from csefs's: never inherit a workspace.
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if len(out) > 4096 {
			out = out[len(out)-4096:]
		}
		return "", fmt.Errorf("%w: go build %s: %v\n%s", ErrUnavailable, pkg, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return bin, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
