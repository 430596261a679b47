package keycache

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/csefs/csefs/internal/testwait"
)

// hangBound is how long a test waits for the code under test before it
// fails instead of hanging. It is not a timing requirement: no honest wait
// here comes near it, even under -race on a loaded machine.
const hangBound = 10 * time.Second

// recvOrFail receives from ch, or fails the test after hangBound.
func recvOrFail[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return testwait.Recv(t, ch, hangBound, what)
}

// waitOrFail waits for wg, or fails the test after hangBound.
func waitOrFail(t testing.TB, wg *sync.WaitGroup, what string) {
	t.Helper()
	testwait.Wait(t, wg, hangBound, what)
}

// spinUntil yields until cond holds. It synchronises on state the code under
// test publishes (its counters), never on time: only after hangBound does it
// give up, reporting the hang with t.Errorf (so that a provider's goroutine
// may call it too) and returning.
func spinUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(hangBound); !cond(); runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Errorf("%s: not after %v (hung?)", what, hangBound)
			return
		}
	}
}
