package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// shaper is a TCP proxy on 127.0.0.1 that makes a server on loopback look
// like a distant one: every byte is delayed by half the round trip in each
// direction, and each connection carries at most bw bytes per second in
// each direction (what one TCP connection to S3 gets). Connections are
// shaped independently, so parallel requests add up as they do against S3.
//
// The model: a direction reads what its source sends in pieces and delivers
// each piece at max(arrival + rtt/2, previous delivery + len/bw). The queue
// between the two is bounded (shaperQueue pieces), like a TCP window, so a
// slow direction pushes back on its sender.
type shaper struct {
	URL    string // http://127.0.0.1:PORT
	target string // host:port
	rtt    time.Duration
	bw     float64 // bytes per second per connection and direction; 0: unlimited

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  atomic.Bool
	nconn atomic.Int64 // connections accepted
}

// shaperPiece is the largest piece a direction reads at once, and
// shaperQueue how many pieces may be in flight: 64 × 64 KiB = 4 MiB, more
// than 50 MB/s × 20 ms (1 MB), so the queue never limits a shaped link.
const (
	shaperPiece = 64 << 10
	shaperQueue = 64
)

func newShaper(target string, rtt time.Duration, bw float64) (*shaper, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &shaper{URL: "http://" + ln.Addr().String(), target: target, rtt: rtt, bw: bw, ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *shaper) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.nconn.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

func (s *shaper) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.done.Load() {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

func (s *shaper) serve(client net.Conn) {
	defer client.Close()
	if !s.track(client, true) {
		return
	}
	defer s.track(client, false)
	server, err := net.Dial("tcp", s.target)
	if err != nil {
		return
	}
	defer server.Close()
	if !s.track(server, true) {
		return
	}
	defer s.track(server, false)
	// The TCP handshake is one round trip before the first byte.
	time.Sleep(s.rtt)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.pipe(server, client) }()
	go func() { defer wg.Done(); s.pipe(client, server) }()
	wg.Wait()
}

type piece struct {
	buf []byte
	at  time.Time // arrival
}

// pipe copies src to dst, shaped. When either side ends, it half-closes dst
// (or closes both on an error), so that the other direction ends too.
func (s *shaper) pipe(dst, src net.Conn) {
	q := make(chan piece, shaperQueue)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, shaperPiece)
			n, err := src.Read(buf)
			if n > 0 {
				q <- piece{buf[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	var next time.Time // when the link is free again
	failed := false
	for p := range q {
		if failed {
			continue // drain, so the reader ends
		}
		t := p.at.Add(s.rtt / 2)
		if t.Before(next) {
			t = next
		}
		if s.bw > 0 {
			next = t.Add(time.Duration(float64(len(p.buf)) / s.bw * float64(time.Second)))
		} else {
			next = t
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(p.buf); err != nil {
			failed = true
			src.Close()
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok && !failed {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// close stops accepting and cuts every connection.
func (s *shaper) close() {
	s.mu.Lock()
	s.done.Store(true)
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// shaperEnv, when set in the environment (TARGET,RTT,BW), makes the bench
// binary a shaper and nothing else: it prints the shaper's URL on a line
// and serves until its stdin closes. The bench runs its shaper as such a
// child, so that the shaper's CPU is not counted as the SDK's (the bench
// process's own CPU is the SDK baseline's).
const shaperEnv = "CSEFS_BENCH_SHAPER"

// shaperChild is main for the shaper child.
func shaperChild(spec string) {
	var target string
	var rtt time.Duration
	var bw float64
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		fatalf("%s=%q: want TARGET,RTT,BW", shaperEnv, spec)
	}
	target = parts[0]
	var err error
	if rtt, err = time.ParseDuration(parts[1]); err != nil {
		fatalf("%s: %v", shaperEnv, err)
	}
	if bw, err = strconv.ParseFloat(parts[2], 64); err != nil {
		fatalf("%s: %v", shaperEnv, err)
	}
	s, err := newShaper(target, rtt, bw)
	if err != nil {
		fatalf("shaper: %v", err)
	}
	fmt.Println(s.URL)
	_, _ = io.Copy(io.Discard, os.Stdin)
	s.close()
}

// startShaper runs a shaper child in front of target (host:port) and
// returns its URL and a function that stops it.
func startShaper(target string, rtt time.Duration, bw float64) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%g", shaperEnv, target, rtt, bw))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { in.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("shaper child: %w", err)
	}
	return strings.TrimSpace(line), stop, nil
}
