package main

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"time"
)

// traceRequests (CSEFS_BENCH_TRACE=1) prints every request the counting
// proxies see to stderr: what a workload's request counts are made of.
var traceRequests = os.Getenv("CSEFS_BENCH_TRACE") == "1"

// countingProxy is a reverse proxy on 127.0.0.1 that counts the requests
// passing through it by operation, so that the bench can report how many
// KMS or S3 calls a workload made.
type countingProxy struct {
	URL string // http://127.0.0.1:PORT

	classify func(*http.Request) string
	srv      *http.Server
	mu       sync.Mutex
	counts   map[string]int
}

// newCountingProxy starts a proxy to target that names each request with
// classify.
func newCountingProxy(target string, classify func(*http.Request) string) (*countingProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{URL: "http://" + ln.Addr().String(), classify: classify, counts: map[string]int{}}
	// The Host header is left as the client sent it (the proxy's address):
	// SigV4 signed that host, and MinIO checks it.
	rp := httputil.NewSingleHostReverseProxy(u)
	// As deep a pool of idle connections as the clients' concurrency: a new
	// connection costs a round trip through the remote mode's shaper.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	rp.Transport = tr
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := p.classify(r)
		p.mu.Lock()
		p.counts[op]++
		p.mu.Unlock()
		if !traceRequests {
			rp.ServeHTTP(w, r)
			return
		}
		t0 := time.Now()
		rp.ServeHTTP(w, r)
		fmt.Fprintf(os.Stderr, "bench: request %s %s?%s %s at %s took %s\n", op, r.URL.Path, r.URL.RawQuery,
			r.Header.Get("Range"), t0.Format("15:04:05.000"), time.Since(t0).Round(time.Millisecond))
	})}
	go p.srv.Serve(ln)
	return p, nil
}

// snapshot returns a copy of the counts so far.
func (p *countingProxy) snapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts)
}

func (p *countingProxy) close() { p.srv.Close() }

// diffCounts returns after − before, without zero entries.
func diffCounts(before, after map[string]int) map[string]int {
	d := map[string]int{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}
