package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Reporter writes one line per object of note: failures always, changes
// always, everything else with Verbose. With JSON each line is a Result
// object (JSON Lines); inspect writes its own records through Record.
type Reporter struct {
	W       io.Writer
	JSON    bool
	Verbose bool
	mu      sync.Mutex
	// progress, when it draws a bar on the same terminal, is cleared
	// before each line so that lines and bar do not mix.
	progress *Progress
}

// write runs fn, which writes to rp.W, with the bar out of the way.
func (rp *Reporter) write(fn func()) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if p := rp.progress; p != nil && p.Terminal {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.bar != nil {
			p.bar.Clear()
		}
	}
	fn()
}

// Result reports r if it is of note.
func (rp *Reporter) Result(r Result) {
	if rp == nil || rp.W == nil {
		return
	}
	if !rp.Verbose && (r.Status == StatusOK || r.Status == StatusSkipped) {
		return
	}
	if rp.JSON {
		rp.Record(r)
		return
	}
	line := fmt.Sprintf("%s\t%s", r.Status, r.URI)
	if r.Detail != "" {
		line += "\t" + r.Detail
	}
	if r.Error != "" {
		line += "\t" + r.Error
	}
	rp.write(func() { fmt.Fprintln(rp.W, line) })
}

// Record writes v as one JSON line.
func (rp *Reporter) Record(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	rp.write(func() { rp.W.Write(append(b, '\n')) })
}

// Progress shows how far a run is: a bar (objects, bytes, rate, ETA) on a
// terminal, a plain line every Interval otherwise, and the summary at the
// end.
type Progress struct {
	W        io.Writer
	Terminal bool
	Interval time.Duration // plain lines; default 10s
	Verb     string        // "verified", "rewrapped" ... for the lines

	mu          sync.Mutex
	start       time.Time
	done, bytes int64
	changed     int64
	failed      int64
	total       int64 // objects listed by count; -1 while unknown
	totalBytes  int64
	listed      bool // the count is complete
	finished    bool // Finish was called: draw nothing more
	bar         *progressbar.ProgressBar
	stop        chan struct{}
	stopped     sync.WaitGroup
}

// begin starts the display.
func (p *Progress) begin() {
	p.start = time.Now()
	p.total = -1
	p.stop = make(chan struct{})
	if p.Terminal {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(p.W),
			progressbar.OptionSetDescription(p.Verb),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("objects"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			// Drawn at once, not only after the throttle: a short run
			// shows it too.
			progressbar.OptionSetRenderBlankState(true),
			// No spinner ticker: its goroutine draws while Reporter.write
			// clears the bar (Clear takes no lock of the bar's), a data
			// race. The bar is drawn by Add and Describe, under p.mu.
			progressbar.OptionSetSpinnerChangeInterval(0),
		)
		return
	}
	iv := p.Interval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	p.stopped.Add(1)
	go func() {
		defer p.stopped.Done()
		t := time.NewTicker(iv)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.line()
			case <-p.stop:
				return
			}
		}
	}()
}

// count lists the target a second time, only to know the total for the
// bar's ETA; the work does not wait for it.
func (p *Progress) count(ctx context.Context, o *Options) {
	var n, b int64
	err := o.walk(ctx, func(_ string, size int64) error {
		n++
		b += size
		if n%1000 == 0 {
			p.setTotal(n, b, false)
		}
		select {
		case <-p.stop:
			return context.Canceled
		default:
			return nil
		}
	})
	if err == nil {
		p.setTotal(n, b, true)
	}
}

func (p *Progress) setTotal(n, b int64, complete bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.totalBytes, p.listed = n, b, complete
	if p.bar != nil && complete && !p.finished {
		p.bar.ChangeMax64(n)
	}
}

// Add counts one finished object.
func (p *Progress) Add(r Result) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	p.bytes += r.Bytes
	switch r.Status {
	case StatusChanged:
		p.changed++
	case StatusFailed:
		p.failed++
	}
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("%s %s (%d changed, %d failed)", p.Verb, humanBytes(p.bytes), p.changed, p.failed))
		p.bar.Add64(1)
	}
}

// line writes one plain progress line.
func (p *Progress) line() {
	p.mu.Lock()
	defer p.mu.Unlock()
	el := time.Since(p.start)
	rate := float64(p.done) / el.Seconds()
	of, eta := "", ""
	if p.total >= 0 {
		more := ""
		if !p.listed {
			more = "+"
		}
		of = fmt.Sprintf("/%d%s", p.total, more)
		if p.listed && rate > 0 {
			eta = fmt.Sprintf(", ETA %s", (time.Duration(float64(p.total-p.done) / rate * float64(time.Second))).Round(time.Second))
		}
	}
	fmt.Fprintf(p.W, "csefs: %s %d%s objects, %s, %d changed, %d failed, %.0f objects/s, %s elapsed%s\n",
		p.Verb, p.done, of, humanBytes(p.bytes), p.changed, p.failed, rate, el.Round(time.Second), eta)
}

// Finish stops the display and writes the summary.
func (p *Progress) Finish(s Summary) {
	if p == nil {
		return
	}
	close(p.stop)
	p.stopped.Wait()
	p.mu.Lock()
	p.finished = true
	if p.bar != nil {
		p.bar.Finish()
	}
	p.mu.Unlock()
	state := "done"
	if s.Interrupted {
		state = "interrupted (run again to finish)"
	}
	per := ""
	if s.Checked > 0 {
		per = fmt.Sprintf(", %s per 1000 objects", (s.Elapsed * 1000 / time.Duration(s.Checked)).Round(time.Millisecond))
	}
	fmt.Fprintf(p.W, "csefs: %s %s: %d objects checked, %d changed, %d skipped, %d failed; %s in %s%s\n",
		p.Verb, state, s.Checked, s.Changed, s.Skipped, s.Failed, humanBytes(s.Bytes), s.Elapsed.Round(time.Millisecond), per)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
