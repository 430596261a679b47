package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// errNoDrop is returned by dropCaches where the kernel refuses (not root, or
// a read-only /proc/sys): the bench then reports its cold figures as warm.
var errNoDrop = errors.New("cannot drop the page cache")

// dropCaches syncs and drops the page cache, dentries and inodes.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("%w: %v", errNoDrop, err)
	}
	return nil
}

// resetHWM resets pid's peak RSS (VmHWM) to its current RSS.
func resetHWM(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5\n"), 0)
}

// peakRSS returns pid's VmHWM in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// moduleDir is the csefs module root: found from this source file when the
// bench runs from a source tree (go run), else the working directory.
func moduleDir() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	wd, _ := os.Getwd()
	return wd
}

// buildCSEFS builds the csefs binary into dir and returns its path.
func buildCSEFS(dir string) (string, error) {
	bin := filepath.Join(dir, "csefs")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/csefs/csefs")
	cmd.Dir = moduleDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build csefs: %v\n%s", err, out)
	}
	return bin, nil
}

// goNetSource is the Go distribution's net package source, the default
// -tree: a tree of small files that is there wherever the bench can build
// csefs. It asks the go tool (runtime.GOROOT is deprecated); it is "" if
// that fails, and so does buildCSEFS then.
func goNetSource() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	root := strings.TrimSpace(string(out))
	if err != nil || root == "" {
		return ""
	}
	return filepath.Join(root, "src", "net")
}

// cleanEnv is the environment without the host's AWS settings, with a
// private runtime directory (pid files) and home under dir.
func cleanEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "XDG_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+filepath.Join(dir, "home"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"AWS_CONFIG_FILE="+filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "no-aws-credentials"),
	)
}

// mount is one running csefs mount.
type mount struct {
	bin, dir, log, pidFile string
	env                    []string
	mounted                bool
}

// mountCSEFS mounts source at mnt (absolute) with args, in the background,
// and returns once the mount is ready (csefs mount returns then).
func mountCSEFS(bin string, env []string, runDir, source, mnt, log string, args ...string) (*mount, error) {
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	full := append([]string{"mount", "--log-file", log}, args...)
	full = append(full, source, mnt)
	cmd := exec.Command(bin, full...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("csefs mount %s: %v\n%s", source, err, out)
	}
	// mount/run.go's pidFile: $XDG_RUNTIME_DIR/csefs/<mnt, / → _>.pid.
	r := strings.NewReplacer("/", "_", " ", "_")
	pf := filepath.Join(runDir, "csefs", r.Replace(strings.Trim(mnt, "/"))+".pid")
	return &mount{bin: bin, dir: mnt, log: log, pidFile: pf, env: env, mounted: true}, nil
}

// pid is the mount daemon's pid, from its pid file.
func (m *mount) pid() (int, error) {
	b, err := os.ReadFile(m.pidFile)
	if err != nil {
		return 0, fmt.Errorf("daemon pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// unmount runs csefs unmount (which waits for the daemon), falling back to a
// lazy unmount. It is safe to call more than once.
func (m *mount) unmount() error {
	if !m.mounted {
		return nil
	}
	m.mounted = false
	cmd := exec.Command(m.bin, "unmount", m.dir)
	cmd.Env = m.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		lazy := exec.Command(m.bin, "unmount", "--lazy", m.dir)
		lazy.Env = m.env
		_ = lazy.Run()
		return fmt.Errorf("csefs unmount %s: %v: %s", m.dir, err, out)
	}
	return nil
}

// crashed reports whether the mount's log shows a panic or fatal error.
func (m *mount) crashed() string {
	b, _ := os.ReadFile(m.log)
	for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
		if bytes.Contains(b, []byte(bad)) {
			return bad
		}
	}
	return ""
}

// mountsUnder returns the mountpoints at or below dir, from
// /proc/self/mountinfo. If mountinfo cannot be read it reports that as a
// mount, so that callers err on the side of not deleting.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return []string{"(cannot read mountinfo: " + err.Error() + ")"}
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mnt := mountinfoUnescape.Replace(f[4])
		if mnt == dir || strings.HasPrefix(mnt, dir+"/") {
			out = append(out, mnt)
		}
	}
	return out
}

// mountinfoUnescape undoes the kernel's octal escapes in mountinfo paths.
var mountinfoUnescape = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// loadAvg returns the first three fields of /proc/loadavg ("0.52 1.10 2.03"),
// or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// cpuSnap is CPU time so far, in seconds: the whole machine (busy, of all
// cores), and the processes named by pid.
type cpuSnap struct {
	busy  float64
	procs map[string]float64
}

// clockTick is USER_HZ, the unit of /proc's CPU times on Linux.
const clockTick = 100

// takeCPU reads /proc/stat and /proc/PID/stat of each process in pids.
func takeCPU(pids map[string]int) cpuSnap {
	s := cpuSnap{procs: map[string]float64{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		var u, n, sy, id, io, irq, sirq, steal float64
		fmt.Sscanf(string(b), "cpu %f %f %f %f %f %f %f %f", &u, &n, &sy, &id, &io, &irq, &sirq, &steal)
		s.busy = (u + n + sy + irq + sirq) / clockTick
	}
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) end with ")".
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 12 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			s.procs[name] = (ut + st) / clockTick
		}
	}
	return s
}

// pidByName returns the pid of the first process whose comm is name, or 0.
func pidByName(name string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == name {
			return pid
		}
	}
	return 0
}
