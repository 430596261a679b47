package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		"9464":           "127.0.0.1:9464",
		":9464":          "127.0.0.1:9464",
		"127.0.0.1:0":    "127.0.0.1:0",
		"0.0.0.0:9464":   "0.0.0.0:9464",
		"[::1]:9464":     "[::1]:9464",
		"localhost:9464": "localhost:9464",
	} {
		if got, err := ListenAddr(in); err != nil || got != want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "host", "1.2.3.4"} {
		if got, err := ListenAddr(bad); err == nil {
			t.Errorf("ListenAddr(%q) = %q, want an error", bad, got)
		}
	}
}

// TestServe serves a registry with counts on a loopback port and reads
// them back over HTTP; a nil *Metrics records nothing and does not panic.
func TestServe(t *testing.T) {
	var none *Metrics
	none.ReadBytes(1)
	none.AuthFailure("authentication")

	m := New()
	m.ReadBytes(100)
	m.WrittenBytes(7)
	m.AuthFailureReasons([]string{"authentication", "truncated"})
	m.AuthFailure("truncated")
	m.GaugeFunc("csefs_test_gauge", "a test gauge", func() float64 { return 3 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := m.Serve(ctx, "127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"csefs_read_bytes_total 100", "csefs_written_bytes_total 7",
		`csefs_auth_failures_total{reason="authentication"} 0`, `csefs_auth_failures_total{reason="truncated"} 1`,
		"csefs_test_gauge 3", "go_goroutines "} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
