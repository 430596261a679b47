package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/csefs/csefs/e2e/testenv"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"1GiB", 1 << 30, false}, {"10GiB", 10 << 30, false}, {"512MiB", 512 << 20, false},
		{"4KiB", 4096, false}, {"123", 123, false}, {"7B", 7, false}, {"2GB", 2e9, false},
		{"1 MiB", 1 << 20, false}, {"1TiB", 1 << 40, false},
		{"", 0, true}, {"GiB", 0, true}, {"1.5GiB", 0, true}, {"-1MiB", 0, true},
		{"1XB", 0, true}, {"99999999999TiB", 0, true},
	} {
		got, err := parseSize(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestFmtSize(t *testing.T) {
	for in, want := range map[int64]string{
		1 << 30: "1 GiB", 10 << 30: "10 GiB", 3 << 29: "1.5 GiB", 4096: "4 KiB", 100: "100 B", 0: "0 B",
	} {
		if got := fmtSize(in); got != want {
			t.Errorf("fmtSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestMedianPercentile(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	var s []time.Duration
	for i := 1; i <= 200; i++ {
		s = append(s, time.Duration(i))
	}
	for p, want := range map[int]time.Duration{50: 100, 99: 198, 100: 200, 1: 2} {
		if got := percentile(s, p); got != want {
			t.Errorf("p%d of 1..200 = %d, want %d", p, got, want)
		}
	}
	if got := percentile(s[:1], 99); got != 1 {
		t.Errorf("p99 of one value = %d", got)
	}
}

// TestForEach checks that every index runs once, that the first error is
// returned, and that an error stops the feeding of further indices.
func TestForEach(t *testing.T) {
	var seen [100]atomic.Int32
	if err := forEach(context.Background(), 100, 7, func(_ context.Context, i int) error {
		seen[i].Add(1)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if n := seen[i].Load(); n != 1 {
			t.Fatalf("index %d ran %d times", i, n)
		}
	}
	boom := errors.New("boom")
	var ran atomic.Int32
	err := forEach(context.Background(), 1000, 1, func(ctx context.Context, i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("forEach error = %v, want boom", err)
	}
	if n := ran.Load(); n > 5 { // conc 1: at most one index is handed over after the failure
		t.Errorf("%d indices ran after an error at index 3", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := forEach(ctx, 10, 2, func(context.Context, int) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("forEach with a cancelled context = %v", err)
	}
}

func TestOps(t *testing.T) {
	req := func(method, target string, hdr ...string) *http.Request {
		r := httptest.NewRequest(method, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return r
	}
	for _, c := range []struct {
		r    *http.Request
		want string
	}{
		{req("HEAD", "/b/k"), "HeadObject"},
		{req("HEAD", "/b"), "HeadBucket"},
		{req("GET", "/b?list-type=2&prefix=x/"), "ListObjects"},
		{req("GET", "/b/"), "ListObjects"},
		{req("GET", "/b/dir/k"), "GetObject"},
		{req("GET", "/b/k", "Range", "bytes=0-1"), "GetObject(range)"},
		{req("PUT", "/b/k"), "PutObject"},
		{req("PUT", "/b/k?partNumber=1&uploadId=u"), "UploadPart"},
		{req("PUT", "/b/k", "X-Amz-Copy-Source", "b/s"), "CopyObject"},
		{req("POST", "/b/k?uploads"), "CreateMultipartUpload"},
		{req("POST", "/b/k?uploadId=u"), "CompleteMultipartUpload"},
		{req("POST", "/b?delete"), "DeleteObjects"},
		{req("DELETE", "/b/k"), "DeleteObject"},
		{req("DELETE", "/b/k?uploadId=u"), "AbortMultipartUpload"},
	} {
		if got := testenv.S3Op(c.r); got != c.want {
			t.Errorf("s3Op(%s %s) = %q, want %q", c.r.Method, c.r.URL, got, c.want)
		}
	}
	if got := testenv.KMSOp(req("POST", "/", "X-Amz-Target", "TrentService.GenerateDataKey")); got != "GenerateDataKey" {
		t.Errorf("kmsOp = %q", got)
	}
	if got := testenv.KMSOp(req("POST", "/")); got != "other" {
		t.Errorf("kmsOp without target = %q", got)
	}
}

// TestCountingProxy sends requests through the proxy and checks that they
// reach the backend with the client's Host header and are counted.
func TestCountingProxy(t *testing.T) {
	var mu sync.Mutex
	var hosts []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	}))
	defer backend.Close()
	p, err := newCountingProxy(backend.URL, testenv.KMSOp)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	before := p.snapshot()
	for _, target := range []string{"TrentService.Decrypt", "TrentService.Decrypt", "TrentService.GenerateDataKey"} {
		r, _ := http.NewRequest("POST", p.URL, nil)
		r.Header.Set("X-Amz-Target", target)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot {
			t.Fatalf("status %d through the proxy", resp.StatusCode)
		}
	}
	d := diffCounts(before, p.snapshot())
	if len(d) != 2 || d["Decrypt"] != 2 || d["GenerateDataKey"] != 1 {
		t.Errorf("counts = %v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hosts) != 3 {
		t.Errorf("backend saw %d requests, want 3", len(hosts))
	}
	for _, h := range hosts {
		if "http://"+h != p.URL {
			t.Errorf("backend saw Host %q, want the proxy's %q (SigV4 signs it)", h, p.URL)
		}
	}
	if got := fmtCounts(d); got != "Decrypt 2, GenerateDataKey 1" {
		t.Errorf("fmtCounts = %q", got)
	}
}

func TestMountsUnder(t *testing.T) {
	if got := mountsUnder("/proc"); len(got) == 0 || got[0] != "/proc" {
		t.Errorf("mountsUnder(/proc) = %v, want /proc first", got)
	}
	dir := t.TempDir()
	if got := mountsUnder(filepath.Join(dir, "x")); len(got) != 0 {
		t.Errorf("mountsUnder(fresh temp dir) = %v", got)
	}
	if got := mountinfoUnescape.Replace(`/a\040b\134c`); got != `/a b\c` {
		t.Errorf("unescape = %q", got)
	}
}

func TestPeakRSS(t *testing.T) {
	n, err := peakRSS(os.Getpid())
	if err != nil || n < 1<<20 {
		t.Fatalf("peakRSS(self) = %d, %v", n, err)
	}
	if _, err := peakRSS(-1); err == nil {
		t.Error("peakRSS(-1) succeeded")
	}
}
