package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// vmHWM is a process's peak resident set, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestMemoryBudget: many files written and read at once all come back
// whole with the shared memory budget spent, and the budget keeps the
// daemon's peak memory well under what the same work takes unbounded
// (each file then reads ahead its full window).
func TestMemoryBudget(t *testing.T) {
	w := newWorld(t)
	const files, size = 6, 48 << 20
	bodies := make([][]byte, files)
	for i := range bodies {
		bodies[i] = randBytes(t, size)
	}
	peak := map[string]int64{}
	for _, budget := range []string{"1", "0"} {
		m := w.mount(t, "", "--memory-budget", budget, "--memory-target", "0")
		dir := m.path("b" + budget)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range files {
			wg.Go(func() {
				if err := os.WriteFile(fmt.Sprintf("%s/f%d", dir, i), bodies[i], 0o644); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		m.Unmount(t)
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			t.Fatal(err) // a cached read would never reach the daemon
		}
		m = w.mount(t, "", "--memory-budget", budget, "--memory-target", "0")
		for i := range files {
			wg.Go(func() {
				got, err := os.ReadFile(fmt.Sprintf("%s/f%d", m.path("b"+budget), i))
				if err != nil {
					t.Error(err)
				} else if !bytes.Equal(got, bodies[i]) {
					t.Errorf("budget %s: file %d read back wrong (%d bytes)", budget, i, len(got))
				}
			})
		}
		wg.Wait()
		peak[budget] = vmHWM(t, m.daemonPid(t))
		m.Unmount(t)
	}
	t.Logf("daemon peak RSS reading %d files of %d MiB at once: %d MiB with the budget spent, %d MiB unbounded",
		files, size>>20, peak["1"]>>20, peak["0"]>>20)
	if peak["1"] >= peak["0"]*3/4 {
		t.Errorf("budget of 1 byte: peak RSS %d MiB, not well under the unbounded %d MiB", peak["1"]>>20, peak["0"]>>20)
	}
}
