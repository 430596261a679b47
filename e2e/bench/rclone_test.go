package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseOnly(t *testing.T) {
	for _, c := range []struct {
		in         string
		want       []string // workloads; nil: all
		rcloneOnly bool
		err        bool
	}{
		{"write", []string{"write"}, false, false},
		{"create, ls", []string{"create", "ls"}, false, false},
		{"rclone", nil, true, false},
		{"rclone,ls", []string{"ls"}, true, false},
		{"pread,rclone,read", []string{"pread", "read"}, true, false},
		{"list", nil, false, true},
		{"write,", nil, false, true},
	} {
		only, rc, err := parseOnly(c.in)
		if (err != nil) != c.err {
			t.Errorf("parseOnly(%q) error = %v, want error %v", c.in, err, c.err)
			continue
		}
		if err != nil {
			continue
		}
		if rc != c.rcloneOnly || len(only) != len(c.want) {
			t.Errorf("parseOnly(%q) = %v, %v; want %v, %v", c.in, only, rc, c.want, c.rcloneOnly)
		}
		for _, w := range c.want {
			if !only[w] {
				t.Errorf("parseOnly(%q) lacks %q", c.in, w)
			}
		}
		o := options{only: only}
		for _, w := range []string{"write", "read", "create", "ls", "pread"} {
			if want := c.want == nil || only[w]; o.want(w) != want {
				t.Errorf("parseOnly(%q): want(%q) = %v", c.in, w, !want)
			}
		}
	}
}

func TestCheckLs(t *testing.T) {
	f := func(name string) string { return "-rw-r--r-- 1 root root 0 Nov 23 05:00 " + name }
	good := "total 0\n" + f("a") + "\n" + f("b") + "\n"
	if err := checkLs(good, 2); err != nil {
		t.Errorf("good listing: %v", err)
	}
	for name, c := range map[string]struct {
		out string
		n   int
	}{
		"one missing":   {good, 3},
		"one too many":  {good, 1},
		"no total line": {f("a") + "\n" + f("b") + "\n" + f("c") + "\n", 2},
		"non-empty":     {"total 4\n" + f("a") + "\n-rw-r--r-- 1 root root 4096 Nov 23 05:00 b\n", 2},
		"a directory":   {"total 0\n" + f("a") + "\ndrwxr-xr-x 2 root root 0 Nov 23 05:00 b\n", 2},
		"short line":    {"total 0\n" + f("a") + "\n?????????? ? ? ?\n", 2},
		"empty":         {"", 0},
	} {
		if err := checkLs(c.out, c.n); !errors.Is(err, errMismatch) {
			t.Errorf("%s: checkLs = %v, want errMismatch", name, err)
		}
	}
}

// TestPreads reads a file against itself (every block matches) and against
// a copy with one byte changed in a block that is read (errMismatch).
func TestPreads(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(64 << 10)
	a, bad := filepath.Join(dir, "a"), filepath.Join(dir, "bad")
	if err := os.WriteFile(a, data, 0o644); err != nil {
		t.Fatal(err)
	}
	offs := randomOffsets(50, int64(len(data)), 4096)
	lat, err := preads(a, a, offs, 4096)
	if err != nil || len(lat) != len(offs) {
		t.Fatalf("preads of a file against itself = %d latencies, %v", len(lat), err)
	}
	data[offs[len(offs)-1]+4095] ^= 1 // last byte of the last block read
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := preads(bad, a, offs, 4096); !errors.Is(err, errMismatch) {
		t.Errorf("preads of a changed file = %v, want errMismatch", err)
	}
	if _, err := preads(a, a, []int64{int64(len(data))}, 4096); err == nil || errors.Is(err, errMismatch) {
		t.Errorf("pread past the end = %v, want an I/O error", err)
	}
}

// TestWaitMounted covers each way out of the wait: already mounted, the
// mounting process gone, the context ended, the time up.
func TestWaitMounted(t *testing.T) {
	never := make(chan struct{})
	if err := waitMounted(context.Background(), "/proc", never, time.Minute); err != nil {
		t.Errorf("waitMounted(/proc) = %v", err)
	}
	dir := t.TempDir()
	gone := make(chan struct{})
	close(gone)
	if err := waitMounted(context.Background(), dir, gone, time.Minute); !errors.Is(err, errRcloneExited) {
		t.Errorf("waitMounted after exit = %v, want errRcloneExited", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := waitMounted(ctx, dir, never, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("waitMounted with a cancelled context = %v", err)
	}
	if err := waitMounted(context.Background(), dir, never, 0); !errors.Is(err, errNotMounted) {
		t.Errorf("waitMounted with no time = %v, want errNotMounted", err)
	}
}

// TestRcloneConfig checks the remotes' shape, and, where rclone is
// installed, that rclone reads the config the same way.
func TestRcloneConfig(t *testing.T) {
	conf := rcloneConfig("http://127.0.0.1:9000", "http://127.0.0.1:9001", "AK", "SK", "us-east-1", "bkt", "rclone", "OBSPASS", "OBSSALT")
	sections := map[string]map[string]string{}
	var cur map[string]string
	for _, l := range strings.Split(conf, "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			cur = map[string]string{}
			sections[l[1:len(l)-1]] = cur
		default:
			k, v, ok := strings.Cut(l, " = ")
			if !ok || cur == nil {
				t.Fatalf("config line %q", l)
			}
			cur[k] = v
		}
	}
	want := map[string]map[string]string{
		"s3direct":     {"type": "s3", "provider": "Minio", "endpoint": "http://127.0.0.1:9000", "force_path_style": "true", "region": "us-east-1", "access_key_id": "AK", "secret_access_key": "SK", "env_auth": "false"},
		"s3counted":    {"type": "s3", "provider": "Minio", "endpoint": "http://127.0.0.1:9001", "force_path_style": "true"},
		"crypt":        {"type": "crypt", "remote": "s3direct:bkt/rclone", "password": "OBSPASS", "password2": "OBSSALT", "filename_encryption": "standard"},
		"cryptcounted": {"type": "crypt", "remote": "s3counted:bkt/rclone", "password": "OBSPASS", "password2": "OBSSALT"},
	}
	if len(sections) != len(want) {
		t.Errorf("config has remotes %v, want 4", sections)
	}
	for name, kv := range want {
		for k, v := range kv {
			if got := sections[name][k]; got != v {
				t.Errorf("[%s] %s = %q, want %q", name, k, got, v)
			}
		}
	}

	rclone, err := exec.LookPath("rclone")
	if err != nil {
		t.Skip("rclone not installed (optional: only the bench's rclone column needs it)")
	}
	path := filepath.Join(t.TempDir(), "rclone.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rclone, "listremotes", "--long")
	cmd.Env = append(os.Environ(), "RCLONE_CONFIG="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rclone listremotes: %v: %s", err, out)
	}
	got := strings.Fields(string(out))
	for _, w := range []string{"crypt:", "cryptcounted:", "s3direct:", "s3counted:"} {
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
			t.Errorf("rclone listremotes lacks %s: %s", w, out)
		}
	}
}

func TestVerdict(t *testing.T) {
	for r, want := range map[float64]string{
		0.25: "4.0× faster: meets ≥ 2×",
		0.5:  "2.0× faster: meets ≥ 2×",
		0.8:  "1.2× faster: MISSES ≥ 2×",
		2:    "2.0× slower: MISSES ≥ 2×",
	} {
		if got := verdict(r); got != want {
			t.Errorf("verdict(%v) = %q, want %q", r, got, want)
		}
	}
}

// TestReportColumns checks that the rclone columns appear only with rclone
// figures, that every row has as many cells as the header, and that the
// ratio and verdict come from the medians.
func TestReportColumns(t *testing.T) {
	render := func(m map[string][]float64) (string, [][]string) {
		b := &bench{opt: options{size: 1 << 30, runs: 3, files: 10000, creates: 1000, preads: 500}, metrics: m, rcloneVersion: "rclone v1.60.1-DEV\n"}
		var out strings.Builder
		b.report(&out)
		var rows [][]string
		for _, l := range strings.Split(out.String(), "\n") {
			if inner, ok := strings.CutPrefix(l, "| "); ok {
				inner, _ = strings.CutSuffix(inner, " |")
				rows = append(rows, strings.Split(inner, " | "))
			}
		}
		return out.String(), rows
	}
	m := map[string][]float64{
		"csefs.write": {2, 3, 100}, "sdk.write": {2, 2, 2}, "rss.write": {50 << 20},
		"csefs.create": {2}, "sdk.create.c1": {1}, "sdk.create.c16": {1}, "local.create": {1},
	}
	text, rows := render(m)
	if strings.Contains(text, "rclone") {
		t.Errorf("report without rclone figures mentions rclone:\n%s", text)
	}
	for _, r := range rows {
		if len(r) != 4 {
			t.Errorf("row %q has %d cells, want 4", r, len(r))
		}
	}
	m["rclone.write"] = []float64{9, 8, 1} // median 8: csefs 3 / 8
	m["rss.rclone.write"] = []float64{100 << 20}
	m["rclone.create"] = []float64{3} // csefs 2 / 3
	m["rclone.ls.cold"], m["rclone.ls.warm"] = []float64{10}, []float64{1}
	text, rows = render(m)
	if len(rows) < 5 {
		t.Fatalf("report has %d table rows:\n%s", len(rows), text)
	}
	for _, r := range rows {
		if len(r) != 6 {
			t.Errorf("row %q has %d cells, want 6", r, len(r))
		}
	}
	for _, want := range []string{
		"0.38× (2.7× faster: meets ≥ 2×)",  // write
		"0.67× (1.5× faster: MISSES ≥ 2×)", // create
		"10.00 s / 1.00 s",                 // rclone ls cold / warm, no csefs ls
		"100 MiB (rclone VmHWM)",
		"(rclone v1.60.1-DEV)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}
