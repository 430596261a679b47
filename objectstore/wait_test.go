package objectstore

import (
	"sync"
	"testing"
	"time"

	"github.com/csefs/csefs/internal/testwait"
)

// hangBound is how long a test waits for the code under test before it
// fails instead of hanging. It is not a timing requirement: no honest wait
// here comes near it, even with MinIO on a loaded machine.
const hangBound = time.Minute

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
