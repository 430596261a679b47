package e2e

// Signals to a process that is waiting on the mount. The kernel turns each
// one into a FUSE INTERRUPT. A signal that does not kill the caller must not
// fail its stat(2) or read(2) with EINTR. Go programs get SIGURG all the
// time, and posixtest's Lstat once failed that way in CI. A caller that is
// being killed must not have to wait for S3.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// holdProxy is a reverse proxy to MinIO that holds the next request that
// matches, once armed, until released. A held request whose client goes
// away is reported on aborted.
type holdProxy struct {
	URL     string
	armed   atomic.Pointer[func(*http.Request) bool]
	arrived chan string   // the held request's method and path
	aborted chan struct{} // the held request's client went away
	release chan struct{}
	heads   atomic.Int64 // HEAD requests seen
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{
		URL:     "http://" + ln.Addr().String(),
		arrived: make(chan string, 1),
		aborted: make(chan struct{}, 1),
		release: make(chan struct{}),
	}
	// The Host header stays as the client signed it (SigV4).
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			p.heads.Add(1)
		}
		if m := p.armed.Load(); m != nil && (*m)(r) && p.armed.CompareAndSwap(m, nil) {
			p.arrived <- r.Method + " " + r.URL.Path
			select {
			case <-p.release:
			case <-r.Context().Done():
				p.aborted <- struct{}{}
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		p.releaseAll()
		srv.Close()
	})
	return p
}

// arm holds the next request that match accepts.
func (p *holdProxy) arm(match func(*http.Request) bool) { p.armed.Store(&match) }

func (p *holdProxy) releaseAll() {
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

// waitArrived waits for the held request.
func (p *holdProxy) waitArrived(t *testing.T) string {
	t.Helper()
	select {
	case req := <-p.arrived:
		return req
	case <-time.After(time.Minute):
		t.Fatal("the request to hold never came")
		return ""
	}
}

// mountVia mounts the world's bucket with S3 requests going through proxy.
func (w *world) mountVia(t *testing.T, proxy string, extra ...string) *mounted {
	args := w.s3Args(extra...)
	i := slices.Index(args, "--endpoint-url")
	args[i+1] = proxy
	return mountWith(t, w.env, "s3://"+w.Bucket, args...)
}

// waitLog waits until the mount's log contains s. If p is not nil, a held
// request that p reports aborted meanwhile fails the test.
func waitLog(t *testing.T, m *mounted, s string, p *holdProxy) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(m.logText(t), s); time.Sleep(10 * time.Millisecond) {
		if p != nil {
			select {
			case <-p.aborted:
				t.Fatalf("the held request was aborted before the mount logged %q", s)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mount never logged %q; log:\n%s", s, m.logText(t))
		}
	}
}

func isHeadOf(key string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/"+key)
	}
}

// TestSignalDoesNotFailStat: a stat(2) whose caller gets a signal it
// handles (with SA_RESTART, as Go, the JVM and most programs install
// them) while the HEAD is in flight returns the file's attributes, not EINTR.
func TestSignalDoesNotFailStat(t *testing.T) {
	w := newWorld(t)
	const size = 12345
	if err := os.WriteFile(w.mount(t, "").path("slow"), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy := newHoldProxy(t, w.S3.Endpoint)
	m := w.mountVia(t, proxy.URL, "--log-level", "debug")
	proxy.arm(isHeadOf("slow"))

	cmd := exec.Command(os.Args[0], "-test.run=^TestSignalChild$", "-test.count=1", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), "CSEFS_SIGNAL_STAT="+m.path("slow"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	tid := -1
	for tid < 0 && lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "tid "); ok {
			tid, _ = strconv.Atoi(v)
		}
	}
	if tid < 0 {
		t.Fatalf("the child never said which thread stats: %v", lines.Err())
	}
	t.Logf("held %s", proxy.waitArrived(t))
	// The child's thread is inside stat(2), waiting for the HEAD.
	if err := syscall.Tgkill(cmd.Process.Pid, tid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitLog(t, m, "interrupt ignored", proxy) // the signal must not abort the HEAD
	proxy.releaseAll()
	var result string
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "stat: "); ok {
			result = v
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
	if want := fmt.Sprintf("size %d", size); result != want {
		t.Fatalf("stat during a handled signal: %q, want %q", result, want)
	}
}

// TestSignalChild stats $CSEFS_SIGNAL_STAT on a thread it names first, with
// SIGUSR1 handled; only TestSignalDoesNotFailStat starts it.
func TestSignalChild(t *testing.T) {
	path := os.Getenv("CSEFS_SIGNAL_STAT")
	if path == "" {
		t.Skip("run by TestSignalDoesNotFailStat in a child process")
	}
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1) // Go installs it with SA_RESTART
	fmt.Printf("tid %d\n", syscall.Gettid())
	var st syscall.Stat_t
	// syscall.Stat, not os.Stat: os retries EINTR and would hide it.
	if err := syscall.Stat(path, &st); err != nil {
		fmt.Printf("stat: %v\n", err)
		return
	}
	fmt.Printf("stat: size %d\n", st.Size)
}

// TestKillDuringRead: a reader killed while its read waits for S3 exits
// at once, without waiting for the GET, and the mount stays usable.
func TestKillDuringRead(t *testing.T) {
	w := newWorld(t)
	data := randBytesFor(t, 3<<20+17)
	if err := os.WriteFile(w.mount(t, "").path("stuck"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	proxy := newHoldProxy(t, w.S3.Endpoint)
	m := w.mountVia(t, proxy.URL, "--log-level", "debug")
	proxy.arm(func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/stuck")
	})

	cat := exec.Command("cat", m.path("stuck"))
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("held %s", proxy.waitArrived(t))
	if err := cat.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cat.Wait() }()
	select {
	case <-exited:
	case <-time.After(time.Minute):
		// The GET is held until the test ends: without the kill being
		// honoured, cat would wait here for ever.
		t.Fatal("a killed reader is still waiting for S3")
	}
	waitLog(t, m, "request abandoned", nil)
	proxy.releaseAll()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := exec.CommandContext(ctx, "cat", m.path("stuck")).Output()
	if err != nil {
		t.Fatalf("reading after the kill: %v", err)
	}
	if !slices.Equal(got, data) {
		t.Fatal("read after the kill differs")
	}
}

// TestRenameDeletesOldNameLater: rsync's rename of a temp file returns once
// the copy to the new name has landed; the old name's delete goes on in the
// background. Meanwhile the mount shows only the new name, a create of the
// old name waits for that delete (so the delete cannot remove the new
// file), and fsync(2) of the directory waits for it too. The old code held
// the rename until the delete's reply, so the rename below never returned
// while the DELETE was held.
func TestRenameDeletesOldNameLater(t *testing.T) {
	w := newWorld(t)
	proxy := newHoldProxy(t, w.S3.Endpoint)
	m := w.mountVia(t, proxy.URL)
	t.Cleanup(proxy.releaseAll) // before the unmount: a failure must not leave a request held
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("d", ".f.tmp"), []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy.arm(func(r *http.Request) bool {
		return r.Method == http.MethodDelete && strings.HasSuffix(r.URL.Path, "/d/.f.tmp")
	})
	renamed := make(chan error, 1)
	go func() { renamed <- os.Rename(m.path("d", ".f.tmp"), m.path("d", "f")) }()
	t.Logf("held %s", proxy.waitArrived(t))
	select {
	case err := <-renamed:
		if err != nil {
			t.Fatalf("rename: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the rename waited for the old name's DELETE")
	}
	ents, err := os.ReadDir(m.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "f" {
		t.Errorf("readdir while the old name's delete is held: %v, want [f]", ents)
	}
	if _, err := os.Stat(m.path("d", ".f.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of the old name: %v, want ENOENT", err)
	}
	created := make(chan error, 1)
	go func() { created <- os.WriteFile(m.path("d", ".f.tmp"), []byte("second"), 0o644) }()
	synced := make(chan error, 1)
	go func() {
		dir, err := os.Open(m.path("d"))
		if err == nil {
			err = dir.Sync()
			dir.Close()
		}
		synced <- err
	}()
	select {
	case err := <-created:
		t.Errorf("a create of the old name finished (%v) before its delete", err)
	default:
	}
	proxy.releaseAll()
	for _, c := range []struct {
		what string
		ch   chan error
	}{{"create of the old name", created}, {"fsync of the directory", synced}} {
		select {
		case err := <-c.ch:
			if err != nil {
				t.Errorf("%s: %v", c.what, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s never returned", c.what)
		}
	}
	m.Unmount(t)
	m = w.mount(t, "")
	for name, want := range map[string]string{"f": "first", ".f.tmp": "second"} {
		if got, err := os.ReadFile(m.path("d", name)); err != nil || string(got) != want {
			t.Errorf("d/%s after remount: %q, %v; want %q", name, got, err, want)
		}
	}
}
