package e2e

// Unmodified tools through a real mount: cp -r, tar x, rsync -a (temp file
// + rename) and rsync --inplace of a mixed tree, each checked with diff -r
// before and after a remount; >> appends, dd conv=notrunc edits and
// truncation, each checked with cmp against the same operation on a local
// copy.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// mkMixedTree fills dir with empty files, nested and empty directories and
// files from 0 B to 20 MB (random content).
func mkMixedTree(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"empty", "a/b/c/d", "a/b/empty", "a/e", "sizes"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []struct {
		name string
		size int64
	}{
		{"zero", 0}, {"a/zero", 0}, {"a/b/c/d/zero", 0},
		{"one", 1}, {"a/b/c/d/deep.txt", 4095}, {"a/e/block", 4096},
		{"sizes/64k", 64 << 10}, {"sizes/64k+1", 64<<10 + 1}, {"sizes/1M-1", 1<<20 - 1},
		{"sizes/5M+3", 5<<20 + 3}, {"sizes/9M", 9 << 20}, {"a/b/20M", 20 << 20},
		{"name with spaces", 100}, {"a/ünïcødé", 77},
	} {
		randomFile(t, filepath.Dir(filepath.Join(dir, f.name)), filepath.Base(f.name), f.size)
	}
}

// diffTrees fails the test unless diff -r finds a and b identical (names,
// types, contents; empty directories included).
func diffTrees(t *testing.T, a, b string) {
	t.Helper()
	out, err := exec.Command("diff", "-r", a, b).CombinedOutput()
	if err != nil {
		t.Errorf("diff -r %s %s: %v\n%s", a, b, err, out)
	}
}

// needTool skips (fails in CI) when a tool is not installed.
func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI=true)", name)
		}
		t.Skipf("%s is not installed", name)
	}
}

// needRoot skips (fails in CI) when the test does not run as root; why
// says what root is needed for. The permission and special-file items
// of issue 11 must not silently skip in CI.
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root %s (CI=true)", why)
		}
		t.Skipf("needs root %s", why)
	}
}

// pollUntil polls cond until it holds; the deadline only turns a hang into a
// failure (no timing is asserted). cond returns what it saw, for the message.
func pollUntil(t *testing.T, what string, deadline time.Duration, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("after %v still waiting for %s; last saw: %s", deadline, what, saw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// csefsIn runs the csefs binary with env and fails the test on error.
func csefsIn(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(csefsBin(t), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("csefs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestToolsCopyTree copies a mixed tree into the mount with cp -r, tar x,
// rsync -a and rsync --inplace, diffs each against the source, and diffs
// them all again through a fresh mount.
func TestToolsCopyTree(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	src := filepath.Join(t.TempDir(), "src")
	mkMixedTree(t, src)
	archive := filepath.Join(t.TempDir(), "src.tar")
	run(t, "tar", "-C", src, "-cf", archive, ".")

	tools := []struct {
		name string
		need string
		copy func(t *testing.T, dst string)
	}{
		{"cp-r", "cp", func(t *testing.T, dst string) { run(t, "cp", "-r", src, dst) }},
		{"tar-x", "tar", func(t *testing.T, dst string) {
			run(t, "mkdir", dst)
			run(t, "tar", "-C", dst, "-xf", archive)
		}},
		{"rsync-a", "rsync", func(t *testing.T, dst string) {
			run(t, "rsync", "-a", src+"/", dst+"/")
		}},
		{"rsync-inplace", "rsync", func(t *testing.T, dst string) {
			run(t, "rsync", "-a", "--inplace", src+"/", dst+"/")
		}},
	}
	var done []string
	for _, tool := range tools {
		t.Run(tool.name, func(t *testing.T) {
			needTool(t, tool.need)
			dst := m.path(tool.name)
			tool.copy(t, dst)
			diffTrees(t, src, dst)
			if !t.Failed() {
				done = append(done, tool.name)
			}
		})
	}
	m.Unmount(t)
	m2 := w.mount(t, "")
	for _, name := range done {
		t.Run(name+"-after-remount", func(t *testing.T) { diffTrees(t, src, m2.path(name)) })
	}
	// A second rsync of an unchanged tree has nothing to send: sizes and
	// mtimes survived the round trip (rsync -a sets them; csefs stores them).
	if slices.Contains(done, "rsync-inplace") {
		t.Run("rsync-again-is-a-no-op", func(t *testing.T) {
			out := run(t, "rsync", "-a", "--inplace", "--itemize-changes", src+"/", m2.path("rsync-inplace")+"/")
			var changed []string
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, ">f") { // a file would be transferred
					changed = append(changed, line)
				}
			}
			if len(changed) > 0 {
				t.Errorf("rsync would transfer again (mtime or size not kept):\n%s", strings.Join(changed, "\n"))
			}
		})
	}
}

// TestToolsEdits: >> appends, dd conv=notrunc in the middle of a 3 MB file,
// and truncate that shrinks and grows, each compared (cmp) with the same
// operation on a local copy, also after a remount.
func TestToolsEdits(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	local := t.TempDir()
	patch := randomFile(t, t.TempDir(), "patch", 10000)
	type edit struct {
		name string
		size int64
		op   func(t *testing.T, path string)
	}
	sh := func(t *testing.T, script string, args ...string) {
		t.Helper()
		run(t, "sh", append([]string{"-c", script, "sh"}, args...)...)
	}
	edits := []edit{
		{"append-small", 1000, func(t *testing.T, p string) { sh(t, `printf 'appended line\n' >> "$1"`, p) }},
		{"append-twice", 3 << 20, func(t *testing.T, p string) {
			sh(t, `cat "$2" >> "$1"; echo tail >> "$1"`, p, patch)
		}},
		{"append-to-empty", 0, func(t *testing.T, p string) { sh(t, `cat "$2" >> "$1"`, p, patch) }},
		{"dd-notrunc-middle", 3 << 20, func(t *testing.T, p string) {
			run(t, "dd", "if="+patch, "of="+p, "bs=4096", "seek=1500123", "oflag=seek_bytes", "conv=notrunc", "status=none")
		}},
		{"dd-notrunc-across-end", 3 << 20, func(t *testing.T, p string) {
			run(t, "dd", "if="+patch, "of="+p, "bs=1000", "seek="+fmt.Sprint(3<<20-4000), "oflag=seek_bytes", "conv=notrunc", "status=none")
		}},
		{"truncate-shrink", 3 << 20, func(t *testing.T, p string) { run(t, "truncate", "-s", "1234567", p) }},
		{"truncate-shrink-to-zero", 3 << 20, func(t *testing.T, p string) { run(t, "truncate", "-s", "0", p) }},
		{"truncate-grow", 3 << 20, func(t *testing.T, p string) { run(t, "truncate", "-s", fmt.Sprint(5<<20+7), p) }},
		{"truncate-grow-empty", 0, func(t *testing.T, p string) { run(t, "truncate", "-s", "100000", p) }},
	}
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			lp := randomFile(t, local, e.name, e.size)
			run(t, "cp", lp, m.path(e.name))
			e.op(t, lp)
			e.op(t, m.path(e.name))
			run(t, "cmp", lp, m.path(e.name))
		})
	}
	m.Unmount(t)
	m2 := w.mount(t, "")
	for _, e := range edits {
		t.Run(e.name+"-after-remount", func(t *testing.T) {
			run(t, "cmp", filepath.Join(local, e.name), m2.path(e.name))
		})
	}
}
