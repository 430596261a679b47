package e2e

// Running csefs as a service: --version, the mount(8) helper and fstab,
// systemd readiness, logs and metrics (docs/operations.md).

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: csefs --version names the module version, the VCS revision
// the binary was built from (when the build recorded one) and the Go
// toolchain, and a mount logs the same string.
func TestVersion(t *testing.T) {
	bin := csefsBin(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("csefs --version: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if !strings.HasPrefix(got, "csefs version ") || !strings.Contains(got, runtime.Version()) || strings.Count(got, "\n") != 0 {
		t.Errorf("csefs --version = %q, want one line \"csefs version V (revision R, %s …)\"", got, runtime.Version())
	}
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], "vcs.revision=") {
			if rev := strings.TrimPrefix(f[1], "vcs.revision="); !strings.Contains(got, rev) {
				t.Errorf("csefs --version = %q lacks the build's revision %s", got, rev)
			}
		}
	}
	ver := strings.TrimPrefix(got, "csefs version ")

	w := newWorld(t)
	m := w.mount(t, "")
	m.Unmount(t)
	if log := m.logText(t); !strings.Contains(log, ver) {
		t.Errorf("mount log lacks the version %q:\n%s", ver, log)
	}
}
