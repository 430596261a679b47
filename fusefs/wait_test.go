package fusefs

import (
	"sync"
	"testing"
	"time"
)

// hangBound is how long a test waits for the code under test before it
// fails instead of hanging. It is not a timing requirement: no honest wait
// here comes near it, even under -race on a loaded machine.
const hangBound = 10 * time.Second

// recvOrFail receives from ch, or fails the test if nothing comes within
// hangBound; what names the awaited event in the failure.
func recvOrFail[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangBound):
		t.Fatalf("%s: nothing after %v (hung?)", what, hangBound)
		panic("unreachable")
	}
}

// waitOrFail waits for wg, or fails the test if it is not done within
// hangBound; what names the awaited goroutines in the failure.
func waitOrFail(t testing.TB, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	recvOrFail(t, done, what)
}
