package testenv

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what a FaultProxy does to a request a Rule matches.
type Fault int

const (
	// Reset resets the client's connection before the request reaches the
	// server: the server never sees it.
	Reset Fault = iota
	// LoseReply forwards the request, waits for the server's whole reply
	// (so the server has applied it) and resets the client's connection
	// instead of delivering it.
	LoseReply
	// CutBody forwards the request and delivers the status, headers and the
	// first Rule.CutAfter bytes of the body (a random part when CutAfter
	// is 0), then resets the connection.
	CutBody
	// SlowDown answers 503 SlowDown (S3's throttling) without forwarding.
	SlowDown
	// ServerError answers 500 InternalError without forwarding.
	ServerError
	// Throttle answers 400 ThrottlingException (KMS's throttling, JSON)
	// without forwarding.
	Throttle
	// Latency delays the request by Rule.Delay, then forwards it.
	Latency
	// Hang accepts the request and never answers, until the client gives
	// up or the rule is removed (FaultProxy.Clear).
	Hang
)

func (f Fault) String() string {
	return [...]string{"reset", "lose-reply", "cut-body", "503-slowdown", "500", "throttle", "latency", "hang"}[f]
}

// Rule selects requests and the fault done to them.
type Rule struct {
	// Op is the operation the rule applies to, as S3Op or KMSOp name it
	// ("PutObject", "CompleteMultipartUpload", "GetObject(range)",
	// "Decrypt"); "" matches every request.
	Op    string
	Fault Fault
	// Times is how many requests the rule hits; 0 means no limit.
	Times int
	// Rate is the share of matching requests hit (0 means all).
	Rate float64
	// Delay is Latency's delay.
	Delay time.Duration
	// CutAfter is how many body bytes CutBody lets through (0: a random
	// number below the body's length).
	CutAfter int64
	// If, when set, must also accept the request.
	If func(*http.Request) bool

	hits int
}

// FaultProxy is a reverse proxy on 127.0.0.1 in front of a real server
// (MinIO, local-kms) that injects faults by rule: reset connections, lost
// replies after the server applied the request, cut bodies, latency,
// 5xx/503 SlowDown/throttling, hangs and full outages (refused
// connections). Requests keep their Host header, so SigV4 signatures made
// for the proxy's address stay valid.
type FaultProxy struct {
	URL string // http://127.0.0.1:PORT

	addr     string
	target   *url.URL
	classify func(*http.Request) string
	tr       *http.Transport
	srv      *http.Server

	mu       sync.Mutex
	ln       net.Listener // nil during an outage
	conns    map[net.Conn]struct{}
	rules    []*Rule
	hangs    chan struct{} // closed by Clear: releases Hang requests
	requests map[string]int
	faults   map[string]int
	closed   bool
}

// NewFaultProxy starts a proxy to target (an http:// endpoint) that names
// requests with classify (S3Op or KMSOp). It is closed when t ends.
func NewFaultProxy(t testing.TB, target string, classify func(*http.Request) string) *FaultProxy {
	t.Helper()
	p, err := StartFaultProxy(target, classify)
	if err != nil {
		t.Fatalf("fault proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// StartFaultProxy is NewFaultProxy without a test.
func StartFaultProxy(target string, classify func(*http.Request) string) (*FaultProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &FaultProxy{
		URL: "http://" + ln.Addr().String(), addr: ln.Addr().String(), target: u, classify: classify,
		tr:    &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second},
		conns: map[net.Conn]struct{}{}, hangs: make(chan struct{}),
		requests: map[string]int{}, faults: map[string]int{}, ln: ln,
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(p.serve),
		ConnState: func(c net.Conn, s http.ConnState) {
			p.mu.Lock()
			defer p.mu.Unlock()
			switch s {
			case http.StateNew:
				p.conns[c] = struct{}{}
			case http.StateClosed, http.StateHijacked:
				delete(p.conns, c)
			}
		},
	}
	go p.srv.Serve(ln)
	return p, nil
}

// Add installs a rule (matched after the ones before it) and returns it.
func (p *FaultProxy) Add(r Rule) *Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	rr := r
	p.rules = append(p.rules, &rr)
	return &rr
}

// Clear removes every rule and releases requests held by Hang.
func (p *FaultProxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
	close(p.hangs)
	p.hangs = make(chan struct{})
}

// Outage takes the endpoint away (down: the port refuses connections and
// open connections are reset) or brings it back on the same port.
func (p *FaultProxy) Outage(down bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if down {
		if p.ln == nil {
			return nil
		}
		p.ln.Close()
		p.ln = nil
		for c := range p.conns {
			resetConn(c)
		}
		return nil
	}
	if p.ln != nil || p.closed {
		return nil
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger a moment
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("fault proxy: listen again on %s: %w", p.addr, err)
	}
	p.ln = ln
	go p.srv.Serve(ln)
	return nil
}

// Requests returns how many requests of op ("" for all) the proxy saw.
func (p *FaultProxy) Requests(op string) int { return p.count(p.requests, op) }

// Faults returns how many faults the proxy injected into requests of op
// ("" for all).
func (p *FaultProxy) Faults(op string) int { return p.count(p.faults, op) }

func (p *FaultProxy) count(m map[string]int, op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if op != "" {
		return m[op]
	}
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Close stops the proxy.
func (p *FaultProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.hangs)
	p.hangs = make(chan struct{})
	p.mu.Unlock()
	p.srv.Close()
	p.tr.CloseIdleConnections()
}

// match returns the fault for r (ok false: none) and the channel that
// releases a Hang.
func (p *FaultProxy) match(r *http.Request, op string) (rule Rule, hang <-chan struct{}, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests[op]++
	for _, rr := range p.rules {
		if rr.Op != "" && rr.Op != op || rr.If != nil && !rr.If(r) || rr.Times > 0 && rr.hits >= rr.Times {
			continue
		}
		if rr.Rate > 0 && rand.Float64() >= rr.Rate {
			continue
		}
		rr.hits++
		p.faults[op]++
		return *rr, p.hangs, true
	}
	return Rule{}, nil, false
}

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	op := p.classify(r)
	rule, hang, ok := p.match(r, op)
	if !ok {
		p.forward(w, r, -1)
		return
	}
	switch rule.Fault {
	case Reset:
		io.Copy(io.Discard, r.Body)
		hijackReset(w)
	case LoseReply:
		resp, err := p.roundTrip(r)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		hijackReset(w)
	case CutBody:
		p.forward(w, r, rule.CutAfter)
	case SlowDown:
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
	case ServerError:
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>`)
	case Throttle:
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"__type":"ThrottlingException","message":"Rate exceeded"}`)
	case Latency:
		select {
		case <-time.After(rule.Delay):
		case <-r.Context().Done():
			return
		}
		p.forward(w, r, -1)
	case Hang:
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		hijackReset(w)
	}
}

func (p *FaultProxy) roundTrip(r *http.Request) (*http.Response, error) {
	out := r.Clone(context.WithoutCancel(r.Context()))
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = r.Host
	if r.ContentLength == 0 {
		out.Body = nil
	}
	return p.tr.RoundTrip(out)
}

// forward relays r and its reply; cut ≥ 0 resets the connection after that
// many body bytes (0: a random cut inside the body).
func (p *FaultProxy) forward(w http.ResponseWriter, r *http.Request, cut int64) {
	resp, err := p.roundTrip(r)
	if err != nil {
		hijackReset(w)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if cut == 0 {
		if resp.ContentLength > 1 {
			cut = 1 + rand.Int64N(resp.ContentLength-1)
		} else {
			cut = -1 // nothing to cut: deliver it
		}
	}
	w.WriteHeader(resp.StatusCode)
	if cut < 0 {
		io.Copy(w, resp.Body)
		return
	}
	io.CopyN(w, resp.Body, cut)
	resetAfter(w, true)
}

// hijackReset takes over the client's connection and resets it; nothing of
// a reply reaches the client.
func hijackReset(w http.ResponseWriter) { resetAfter(w, false) }

// resetAfter resets the client's connection, first flushing the status,
// headers and body bytes written so far when flush is set (a cut body). A
// flush with nothing written would send "200 OK" headers, which a HEAD takes
// for a whole reply.
func resetAfter(w http.ResponseWriter, flush bool) {
	if f, ok := w.(http.Flusher); ok && flush {
		f.Flush()
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("fault proxy: connection cannot be hijacked")
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return
	}
	resetConn(c)
}

// resetConn closes c with a TCP RST (SO_LINGER 0) rather than a FIN.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// KMSOp names a KMS request by its X-Amz-Target (TrentService.Decrypt →
// Decrypt).
func KMSOp(r *http.Request) string {
	t := r.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		t = t[i+1:]
	}
	if t == "" {
		return "other"
	}
	return t
}

// S3Op names a path-style S3 request by method, query and headers:
// HeadObject, GetObject, GetObject(range), PutObject, CopyObject,
// UploadPart, CreateMultipartUpload, CompleteMultipartUpload,
// AbortMultipartUpload, DeleteObject, ListObjects...
func S3Op(r *http.Request) string {
	q := r.URL.Query()
	keyed := strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1
	switch r.Method {
	case http.MethodHead:
		if keyed {
			return "HeadObject"
		}
		return "HeadBucket"
	case http.MethodGet:
		switch {
		case !keyed && q.Has("uploads"):
			return "ListMultipartUploads"
		case !keyed:
			return "ListObjects"
		case r.Header.Get("Range") != "":
			return "GetObject(range)"
		default:
			return "GetObject"
		}
	case http.MethodPut:
		switch {
		case q.Has("uploadId") && r.Header.Get("X-Amz-Copy-Source") != "":
			return "UploadPartCopy"
		case q.Has("uploadId"):
			return "UploadPart"
		case r.Header.Get("X-Amz-Copy-Source") != "":
			return "CopyObject"
		case !keyed:
			return "CreateBucket"
		default:
			return "PutObject"
		}
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			return "CreateMultipartUpload"
		case q.Has("uploadId"):
			return "CompleteMultipartUpload"
		case q.Has("delete"):
			return "DeleteObjects"
		}
	case http.MethodDelete:
		if q.Has("uploadId") {
			return "AbortMultipartUpload"
		}
		return "DeleteObject"
	}
	return r.Method + " other"
}

// Via returns s as reached through p: Endpoint (and so Client and Env) is
// the proxy's. p must proxy s.
func (s *S3Server) Via(p *FaultProxy) *S3Server {
	c := *s
	c.Endpoint = p.URL
	return &c
}

// Via returns k as reached through p (see S3Server.Via).
func (k *KMSServer) Via(p *FaultProxy) *KMSServer {
	c := *k
	c.Endpoint = p.URL
	return &c
}

// Counts returns the requests seen and the faults injected, by operation.
func (p *FaultProxy) Counts() (requests, faults map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.requests), maps.Clone(p.faults)
}
