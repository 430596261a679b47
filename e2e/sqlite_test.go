package e2e

// sqlite on the mount, in every journal mode: sqlite writes its journal,
// fsyncs it, and rewrites the journal header on the same descriptor, so it
// needs a handle that stays writable after fsync. WAL mode also maps the
// -shm file MAP_SHARED, which works through the page cache (csefs does not
// use direct I/O).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

var sqliteModes = []string{"DELETE", "TRUNCATE", "PERSIST", "WAL"}

// sqlite runs statements in one sqlite3 process and returns its output.
func sqlite(t *testing.T, db, sql string) string {
	t.Helper()
	out, err := exec.Command("sqlite3", "-batch", "-bail", db, sql).CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %s %q: %v\n%s", db, sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// sqliteWorkload creates a table in journal mode jm and fills it in several
// transactions, rewriting pages (updates) and growing the file; it returns
// the row count.
func sqliteWorkload(t *testing.T, db, jm string) {
	t.Helper()
	if got := sqlite(t, db, "PRAGMA journal_mode="+jm+";"); !strings.EqualFold(got, jm) {
		t.Fatalf("journal_mode=%s: sqlite answered %q", jm, got)
	}
	sqlite(t, db, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB); CREATE INDEX tb ON t(b);")
	for i := range 5 {
		sqlite(t, db, fmt.Sprintf("BEGIN; INSERT INTO t(b) SELECT randomblob(300) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4); "+
			"INSERT INTO t(b) SELECT randomblob(200) FROM t; UPDATE t SET b = randomblob(100) WHERE a %% 3 = %d; COMMIT;", i%3))
	}
	sqlite(t, db, "DELETE FROM t WHERE a % 5 = 0; VACUUM;")
}

func sqliteCheck(t *testing.T, db string, rows string) {
	t.Helper()
	if got := sqlite(t, db, "PRAGMA integrity_check;"); got != "ok" {
		t.Fatalf("%s: integrity_check: %s", db, got)
	}
	if got := sqlite(t, db, "SELECT count(*) FROM t;"); got != rows {
		t.Fatalf("%s: %s rows after remount, want %s", db, got, rows)
	}
}

// TestSqliteJournalModes: sqlite in DELETE, TRUNCATE, PERSIST and WAL mode
// on an s3:// mount and on the file:// default; each database passes
// integrity_check after a remount with all its rows.
func TestSqliteJournalModes(t *testing.T) {
	requireFUSE(t)
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Fatal("sqlite3 is not installed (.ci/run installs it)")
	}
	w := newWorld(t)
	env := cleanEnv(t)
	local := t.TempDir()
	stores := []struct {
		name  string
		mount func() *mounted
	}{
		{"s3", func() *mounted { return w.mount(t, "") }},
		{"file", func() *mounted { return mountWith(t, env, "file://"+local) }},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			m := st.mount()
			rows := map[string]string{}
			for _, jm := range sqliteModes {
				db := m.path(jm + ".db")
				sqliteWorkload(t, db, jm)
				rows[jm] = sqlite(t, db, "SELECT count(*) FROM t;")
			}
			m.Unmount(t)
			m = st.mount()
			for _, jm := range sqliteModes {
				sqliteCheck(t, m.path(jm+".db"), rows[jm])
			}
		})
	}
}

// sqliteShell is a sqlite3 process fed statements one batch at a time.
type sqliteShell struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func newSqliteShell(t *testing.T, db string) *sqliteShell {
	t.Helper()
	cmd := exec.Command("sqlite3", "-batch", db)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sqliteShell{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { s.close(t) })
	return s
}

// exec runs sql and returns its output, up to a marker line it prints after.
func (s *sqliteShell) exec(t *testing.T, sql string) string {
	t.Helper()
	if _, err := fmt.Fprintf(s.in, "%s\nSELECT 'csefs-done';\n", sql); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for {
		l, err := s.out.ReadString('\n')
		if err != nil {
			t.Fatalf("sqlite3 output after %q: %v (%q)", sql, err, lines)
		}
		l = strings.TrimSpace(l)
		if l == "csefs-done" {
			return strings.Join(lines, "\n")
		}
		if strings.Contains(l, "Error") {
			t.Fatalf("sqlite3 %q: %s", sql, l)
		}
		lines = append(lines, l)
	}
}

func (s *sqliteShell) close(t *testing.T) {
	if s.in == nil {
		return
	}
	s.in.Close()
	s.in = nil
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("sqlite3 exit: %v", err)
	}
}

// TestSqliteWALShared: two sqlite3 processes share a WAL database: the
// reader sees rows the writer committed to the WAL (through the -shm index,
// mapped MAP_SHARED by both) before any checkpoint; after both close and a
// remount the database is intact.
func TestSqliteWALShared(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	db := m.path("wal.db")
	writer := newSqliteShell(t, db)
	writer.exec(t, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);")
	for i := 1; i <= 3; i++ {
		writer.exec(t, "INSERT INTO t(b) VALUES(randomblob(1000));")
		if got := sqlite(t, db, "SELECT count(*) FROM t;"); got != fmt.Sprint(i) {
			t.Fatalf("a second process sees %s rows, want %d", got, i)
		}
	}
	writer.close(t)
	m.Unmount(t)
	m = w.mount(t, "")
	sqliteCheck(t, m.path("wal.db"), "3")
}

// countingProxy forwards to target and counts requests by method.
type countingProxy struct {
	URL string
	mu  sync.Mutex
	n   map[string]int
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{URL: "http://" + ln.Addr().String(), n: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.n[r.Method]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

// take returns the counts so far and starts again from zero.
func (p *countingProxy) take() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.n
	p.n = map[string]int{}
	return n
}

// TestSqliteTransactionCost measures one one-row INSERT transaction on an
// s3:// mount in DELETE and WAL mode (S3 requests by method, and the time
// on local MinIO), for the README. It fails only if the row is lost.
func TestSqliteTransactionCost(t *testing.T) {
	w := newWorld(t)
	p := newCountingProxy(t, w.S3.Endpoint)
	m := w.mountVia(t, p.URL)
	for _, jm := range []string{"DELETE", "WAL"} {
		db := m.path("cost-" + jm + ".db")
		s := newSqliteShell(t, db)
		s.exec(t, "PRAGMA journal_mode="+jm+"; CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); INSERT INTO t(b) SELECT 'row' FROM (SELECT 1 UNION SELECT 2);")
		const n = 10
		p.take()
		start := time.Now()
		for range n {
			s.exec(t, "INSERT INTO t(b) VALUES('one row');")
		}
		took := time.Since(start)
		counts := p.take()
		total := 0
		for _, c := range counts {
			total += c
		}
		t.Logf("%s: one-row transaction: %.1f S3 requests (%v), %v each", jm, float64(total)/n, counts, took/n)
		if got := s.exec(t, "SELECT count(*) FROM t;"); got != fmt.Sprint(n+2) {
			t.Fatalf("%s: %s rows, want %d", jm, got, n+2)
		}
		s.close(t)
	}
}
