package fleet

import (
	"bytes"
	"strings"
	"testing"
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
