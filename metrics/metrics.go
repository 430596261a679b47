// Package metrics is csefs's Prometheus instrumentation: the families
// documented in docs/operations.md §12.5, the Go runtime and process
// collectors, and the /metrics endpoint.
//
// Other packages do not import Prometheus: the SDK clients get smithy
// middleware (S3Middleware, KMSMiddleware), fusefs reports through its
// Metrics interface (which *Metrics implements), and counters that already
// exist (the key cache, the memory budget, staging) are read when scraped.
// Labels are bounded sets (operation names, result classes, reasons):
// never object names, keys or key ids.
//
// A nil *Metrics records nothing, so an unconfigured mount pays nothing.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	smithy "github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the registry and the families csefs updates itself.
type Metrics struct {
	reg         *prometheus.Registry
	kmsRequests *prometheus.CounterVec
	kmsSeconds  *prometheus.HistogramVec
	s3Requests  *prometheus.CounterVec
	s3Seconds   *prometheus.HistogramVec
	readBytes   prometheus.Counter
	written     prometheus.Counter
	authFail    *prometheus.CounterVec
}

// New registers the families and the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.kmsRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "csefs_kms_requests_total", Help: "KMS requests sent (each retry counts), by operation and result (ok, an HTTP status, or network_error)."}, []string{"op", "result"})
	m.kmsSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "csefs_kms_request_seconds", Help: "Time of one KMS request, by operation.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"op"})
	m.s3Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "csefs_s3_requests_total", Help: "S3 requests sent (each retry counts), by operation and result (ok, an HTTP status, or network_error)."}, []string{"op", "result"})
	m.s3Seconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "csefs_s3_request_seconds", Help: "Time of one S3 request until its response headers (GET bodies stream afterwards), by operation.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"op"})
	m.readBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "csefs_read_bytes_total", Help: "Plaintext bytes returned to read(2) on the mount."})
	m.written = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "csefs_written_bytes_total", Help: "Plaintext bytes accepted by write(2) on the mount."})
	m.authFail = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "csefs_auth_failures_total", Help: "Operations refused because an object failed authentication, by reason (authentication: GCM tag or CBC padding; truncated; commitment; context_mismatch)."}, []string{"reason"})
	m.reg.MustRegister(m.kmsRequests, m.kmsSeconds, m.s3Requests, m.s3Seconds, m.readBytes, m.written, m.authFail,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CounterFunc registers a counter read from f when scraped.
func (m *Metrics) CounterFunc(name, help string, f func() float64) {
	if m != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
}

// GaugeFunc registers a gauge read from f when scraped; with label and
// values, one series per value (f gets the value).
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	if m != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
}

// LabeledGaugeFunc registers one gauge series per value of label, each read
// from f(value) when scraped.
func (m *Metrics) LabeledGaugeFunc(name, help, label string, values []string, f func(string) float64) {
	if m == nil {
		return
	}
	for _, v := range values {
		v := v
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{label: v}},
			func() float64 { return f(v) }))
	}
}

// AuthFailureReasons makes the series of csefs_auth_failures_total for
// reasons exist at 0, so that dashboards and alerts see them before the
// first failure.
func (m *Metrics) AuthFailureReasons(reasons []string) {
	if m != nil {
		for _, r := range reasons {
			m.authFail.WithLabelValues(r)
		}
	}
}

// ReadBytes counts n plaintext bytes read (fusefs.Metrics).
func (m *Metrics) ReadBytes(n int) {
	if m != nil && n > 0 {
		m.readBytes.Add(float64(n))
	}
}

// WrittenBytes counts n plaintext bytes written (fusefs.Metrics).
func (m *Metrics) WrittenBytes(n int) {
	if m != nil && n > 0 {
		m.written.Add(float64(n))
	}
}

// AuthFailure counts one operation refused for reason (fusefs.Metrics).
func (m *Metrics) AuthFailure(reason string) {
	if m != nil {
		m.authFail.WithLabelValues(reason).Inc()
	}
}

// S3Middleware adds the S3 request counter and timer to an SDK client's
// stack (s3.Options.APIOptions).
func (m *Metrics) S3Middleware(stack *middleware.Stack) error {
	if m == nil {
		return nil
	}
	return addTimer(stack, "csefsS3Metrics", m.s3Requests, m.s3Seconds)
}

// KMSMiddleware adds the KMS request counter and timer to an SDK client's
// stack (kms.Options.APIOptions).
func (m *Metrics) KMSMiddleware(stack *middleware.Stack) error {
	if m == nil {
		return nil
	}
	return addTimer(stack, "csefsKMSMetrics", m.kmsRequests, m.kmsSeconds)
}

// addTimer counts and times every attempt: it sits in the finalize step
// after the SDK's retry middleware, so each retry is one request.
func addTimer(stack *middleware.Stack, id string, reqs *prometheus.CounterVec, secs *prometheus.HistogramVec) error {
	mw := middleware.FinalizeMiddlewareFunc(id, func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		op := middleware.GetOperationName(ctx)
		start := time.Now()
		out, md, err := next.HandleFinalize(ctx, in)
		secs.WithLabelValues(op).Observe(time.Since(start).Seconds())
		reqs.WithLabelValues(op, result(md, err)).Inc()
		return out, md, err
	})
	if _, ok := stack.Finalize.Get("Retry"); ok {
		return stack.Finalize.Insert(mw, "Retry", middleware.After)
	}
	return stack.Finalize.Add(mw, middleware.After)
}

// result classifies one attempt: "ok", the HTTP status of an error
// response, "canceled", or "network_error" (no response).
func result(md middleware.Metadata, err error) string {
	status := 0
	if r, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok && r != nil {
		status = r.StatusCode
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	switch {
	case err == nil && status < 400:
		return "ok"
	case status >= 400:
		return strconv.Itoa(status)
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return "api_error"
	}
	return "network_error"
}

// ListenAddr is addr as Serve binds it: a bare port or ":PORT" binds
// loopback (127.0.0.1:PORT); an explicit host is used as given.
func ListenAddr(addr string) (string, error) {
	if _, err := strconv.Atoi(addr); err == nil {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--metrics-addr %q: want HOST:PORT, :PORT or PORT", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Serve serves /metrics on addr (ListenAddr) until ctx is done, and
// returns the address it listens on. A listen error is returned at once.
func (m *Metrics) Serve(ctx context.Context, addr string, log *slog.Logger) (string, error) {
	addr, err := ListenAddr(addr)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "cause", err.Error())
		}
	}()
	if ip := net.ParseIP(ln.Addr().(*net.TCPAddr).IP.String()); ip != nil && !ip.IsLoopback() {
		log.Warn("metrics served beyond loopback: anyone who can reach it sees the mount's activity (never names or keys)", "addr", ln.Addr().String())
	}
	return ln.Addr().String(), nil
}
