package fleet

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProgressBarDrawsAtOnce: on a terminal the bar is drawn when the job
// starts, not only once its 100 ms throttle has passed, so a job shorter
// than that still shows it (TestFleetProgress failed on a fast run).
func TestProgressBarDrawsAtOnce(t *testing.T) {
	var out bytes.Buffer
	p := &Progress{W: &out, Verb: "encrypted", Terminal: true}
	p.begin()
	p.Add(Result{Status: StatusChanged, Bytes: 5})
	p.Finish(Summary{Checked: 1, Changed: 1})
	s := out.String()
	for _, want := range []string{"\r| encrypted (0/-, 0 objects/", "csefs: encrypted done: 1 objects checked, 1 changed"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q: %q", want, s)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for the bar's goroutine, if any.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestProgressBarAndLines: a report line while the bar is up, after the bar
// was last drawn by nothing the run did. Run with -race: the bar's spinner
// ticker drew from its own goroutine while Reporter.write cleared the bar
// without the bar's lock, and csefs encrypt on a terminal (TestFleetProgress)
// failed with a data race. The wait gives the old ticker (100 ms) time to
// draw; it asserts nothing of time.
func TestProgressBarAndLines(t *testing.T) {
	out := &lockedBuffer{}
	p := &Progress{W: out, Verb: "encrypted", Terminal: true}
	rp := &Reporter{W: out, progress: p}
	p.begin()
	blank := len(out.String())
	for start := time.Now(); len(out.String()) == blank && time.Since(start) < 400*time.Millisecond; {
		time.Sleep(10 * time.Millisecond)
	}
	r := Result{Status: StatusChanged, URI: "s3://b/k", Bytes: 5}
	rp.Result(r)
	p.Add(r)
	p.Finish(Summary{Checked: 1, Changed: 1})
	if !strings.Contains(out.String(), "changed\ts3://b/k") {
		t.Fatalf("no report line: %q", out.String())
	}
}
