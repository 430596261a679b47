// Package testwait bounds a test's waits on the code under test, so that a
// hang fails the test with a message naming what it waited for, instead of
// stopping the whole run at go test's timeout. The bound is not a timing
// requirement: each package picks one that no honest wait comes near.
package testwait

import (
	"sync"
	"testing"
	"time"
)

// Recv receives from ch, or fails the test if nothing comes within bound;
// what names the awaited event in the failure.
func Recv[T any](t testing.TB, ch <-chan T, bound time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(bound):
		t.Fatalf("%s: nothing after %v (hung?)", what, bound)
		panic("unreachable")
	}
}

// Wait waits for wg, or fails the test if it is not done within bound;
// what names the awaited goroutines in the failure.
func Wait(t testing.TB, wg *sync.WaitGroup, bound time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	Recv(t, done, bound, what)
}
