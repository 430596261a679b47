package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// listKeys lists the bucket's keys under prefix, straight from S3.
func (w *world) listKeys(t *testing.T, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(w.S3.Client(t), &s3.ListObjectsV2Input{Bucket: aws.String(w.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	return keys
}

// readTree returns every regular file under dir, by path relative to it.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRenameDirKill9: the daemon is killed with SIGKILL during `mv src dst`
// of a directory of 24 files, in its copies (the 12th CopyObject is held at
// a proxy) or in its deletes (the 6th DeleteObject of a source key is held).
// Before the remount both trees exist in the bucket. The new mount finishes
// the rename before serving: dst holds the whole tree, src is gone, no intent
// is left; and the same mv run again fails (no src) instead of nesting src
// under dst.
func TestRenameDirKill9(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		phase string
		nth   int64
		match func(*http.Request) bool
	}{
		{"copying", 12, func(r *http.Request) bool {
			return r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != ""
		}},
		{"deleting", 6, func(r *http.Request) bool {
			return r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/src-")
		}},
	} {
		t.Run(tc.phase, func(t *testing.T) {
			src, dst := "src-"+tc.phase, "dst-"+tc.phase
			p := newHoldProxy(t, w.S3.Endpoint)
			m := w.mountVia(t, p.URL)
			want := map[string][]byte{}
			for i := range 24 {
				rel := fmt.Sprintf("f%02d", i)
				if i%3 == 0 {
					rel = filepath.Join("sub", rel)
				}
				want[rel] = bytes.Repeat([]byte{byte(i)}, 1000+i)
				if err := os.MkdirAll(filepath.Dir(m.path(src, rel)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(m.path(src, rel), want[rel], 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var seen atomic.Int64
			p.arm(func(r *http.Request) bool { return tc.match(r) && seen.Add(1) == tc.nth })
			mv := exec.Command("mv", m.path(src), m.path(dst))
			if err := mv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Logf("held at the crash: %s", p.waitArrived(t))
			killMount(t, m)
			if err := mv.Wait(); err == nil {
				t.Fatal("mv succeeded although its daemon was killed")
			}
			srcKeys, dstKeys := w.listKeys(t, src+"/"), w.listKeys(t, dst+"/")
			t.Logf("after the crash: %d keys under %s/, %d under %s/, intents %v", len(srcKeys), src, len(dstKeys), dst, w.listKeys(t, ".csefs-renames/"))
			if len(srcKeys) == 0 || len(dstKeys) == 0 {
				t.Fatalf("the crash did not leave both trees: %v / %v", srcKeys, dstKeys)
			}

			m2 := w.mount(t, "")
			if _, err := os.Stat(m2.path(src)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after the remount %s: %v, want it gone", src, err)
			}
			checkTree(t, m2.path(dst), want)
			if left := w.listKeys(t, ".csefs-renames/"); len(left) != 0 {
				t.Errorf("intents left: %v", left)
			}
			// The user runs the same mv again.
			out, err := exec.Command("mv", m2.path(src), m2.path(dst)).CombinedOutput()
			if err == nil {
				t.Errorf("mv again succeeded: %s", out)
			}
			if _, err := os.Stat(m2.path(dst, src)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mv again nested %s under %s: %v", src, dst, err)
			}
			checkTree(t, m2.path(dst), want)
			if !strings.Contains(m2.logText(t), "directory rename finished") {
				t.Errorf("the new mount did not log the finished rename:\n%s", m2.logText(t))
			}
		})
	}
}

func checkTree(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	got := readTree(t, dir)
	for rel, b := range want {
		if !bytes.Equal(got[rel], b) {
			t.Errorf("%s/%s: %d bytes, want %d", dir, rel, len(got[rel]), len(b))
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s/%s: not in the moved tree", dir, rel)
		}
	}
}

// TestRecoverCommand: an intent another machine left (its owner cannot be
// seen from here) is not finished by a mount or by csefs recover, and a
// rename of its tree is refused with EBUSY; csefs recover --older-than
// finishes it.
func TestRecoverCommand(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	want := map[string][]byte{"a": []byte("1"), "s/b": []byte("22")}
	for rel, b := range want {
		os.MkdirAll(filepath.Dir(m.path("src", rel)), 0o755)
		if err := os.WriteFile(m.path("src", rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.Unmount(t)
	w.putRaw(t, ".csefs-renames/20260101T000000Z-0123456789abcdef", []byte(`{"op":"rename-dir","src":"src/","dst":"dst/",`+
		`"host":"elsewhere","machine":"m","boot":"b","pidns":"pid:[1]","pid":4242,"start":"99","time":"2026-01-01T00:00:00Z"}`), nil)

	m2 := w.mount(t, "")
	if err := os.Rename(m2.path("src"), m2.path("moved")); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rename of a tree another machine is moving: %v, want EBUSY", err)
	}
	flags := []string{"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region}
	out := csefsIn(t, w.env, append(append([]string{"recover"}, flags...), "s3://"+w.Bucket)...)
	if !strings.Contains(out, "left\tsrc/\tdst/\telsewhere pid 4242") {
		t.Errorf("csefs recover without --older-than:\n%s", out)
	}
	if len(w.listKeys(t, "src/")) == 0 || len(w.listKeys(t, "dst/")) != 0 {
		t.Fatal("csefs recover without --older-than moved something")
	}
	out = csefsIn(t, w.env, append(append([]string{"recover", "--older-than", "1h"}, flags...), "s3://"+w.Bucket)...)
	if !strings.Contains(out, "finished\tsrc/\tdst/") {
		t.Errorf("csefs recover --older-than 1h:\n%s", out)
	}
	if left := w.listKeys(t, "src/"); len(left) != 0 {
		t.Errorf("left under src/: %v", left)
	}
	if left := w.listKeys(t, ".csefs-renames/"); len(left) != 0 {
		t.Errorf("intents left: %v", left)
	}
	m2.Unmount(t)
	m3 := w.mount(t, "")
	checkTree(t, m3.path("dst"), want)
}

// TestRecoverKeepsEditedDestination: a file under the destination of an
// interrupted directory rename that was changed after the crash (both
// trees are visible until the rename is finished) is not overwritten by
// the recovery: csefs recover keeps it, leaves its source in place and
// says so; the rest of the tree is moved and the intent is deleted.
func TestRecoverKeepsEditedDestination(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	for rel, b := range map[string]string{"src/a": "1", "src/s/b": "22", "dst/a": "edited after the crash"} {
		os.MkdirAll(filepath.Dir(m.path(rel)), 0o755)
		if err := os.WriteFile(m.path(rel), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.Unmount(t)
	w.putRaw(t, ".csefs-renames/20260101T000000Z-0123456789abcdef", []byte(`{"op":"rename-dir","src":"src/","dst":"dst/",`+
		`"host":"elsewhere","machine":"m","boot":"b","pidns":"pid:[1]","pid":4242,"start":"99","time":"2026-01-01T00:00:00Z"}`), nil)
	flags := []string{"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region}
	out := csefsIn(t, w.env, append(append([]string{"recover", "--older-than", "1h"}, flags...), "s3://"+w.Bucket)...)
	if !strings.Contains(out, "finished\tsrc/\tdst/") || !strings.Contains(out, "rename recovery conflict") {
		t.Errorf("csefs recover --older-than 1h (want it finished, the conflict logged):\n%s", out)
	}
	if left := w.listKeys(t, ".csefs-renames/"); len(left) != 0 {
		t.Errorf("intents left: %v", left)
	}
	m2 := w.mount(t, "")
	for rel, want := range map[string]string{"dst/a": "edited after the crash", "dst/s/b": "22", "src/a": "1"} {
		if got, err := os.ReadFile(m2.path(rel)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", rel, got, err, want)
		}
	}
	if _, err := os.Stat(m2.path("src", "s")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("src/s, moved whole: %v, want it gone", err)
	}
}
