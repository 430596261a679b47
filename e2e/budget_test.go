package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csefs/csefs/e2e/testenv"
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
// daemon's peak memory well under what the same reads take unbounded
// (each file then reads ahead its full window).
//
// The reads go through a proxy that delays every ranged GET, as a distant
// store does: a stream's window grows only while its reader waits for
// ranges, and a range holds memory only once its reply has come. On a fast
// local store an unbounded reader keeps up with its few ranges and never
// holds many, and the two peaks come out close (CI saw 629 MiB against 835,
// a quiet machine 166 against 214, with 48 MiB files). With the delay, a
// wide window's ranges land together and wait for the reader: the
// unbounded peak is several ranges per file, the bounded one two.
func TestMemoryBudget(t *testing.T) {
	w := newWorld(t)
	p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	p.Add(testenv.Rule{Op: "GetObject(range)", Fault: testenv.Latency, Delay: 100 * time.Millisecond})
	const files, size = 6, 96 << 20
	bodies := make([][]byte, files)
	for i := range bodies {
		bodies[i] = randBytes(t, size)
	}
	var wg sync.WaitGroup
	m := w.mount(t, "", "--memory-budget", "1", "--memory-target", "0")
	for i := range files {
		wg.Go(func() {
			if err := os.WriteFile(m.path(fmt.Sprintf("f%d", i)), bodies[i], 0o644); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	t.Logf("daemon peak RSS writing %d files of %d MiB at once with the budget spent: %d MiB", files, size>>20, vmHWM(t, m.daemonPid(t))>>20)
	m.Unmount(t)
	peak := map[string]int64{}
	for _, budget := range []string{"1", "0"} {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			t.Fatal(err) // a cached read would never reach the daemon
		}
		m := mountWith(t, w.env, "s3://"+w.Bucket, w.faultArgs(p, nil, "--memory-budget", budget, "--memory-target", "0")...)
		for i := range files {
			wg.Go(func() {
				got, err := os.ReadFile(m.path(fmt.Sprintf("f%d", i)))
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
	if peak["1"] >= peak["0"]*2/3 {
		t.Errorf("budget of 1 byte: peak RSS %d MiB, not well under the unbounded %d MiB", peak["1"]>>20, peak["0"]>>20)
	}
}
