package testwait

import (
	"sync"
	"testing"
	"time"
)

// fatalTB records a Fatalf instead of ending the test, so that the
// failure path can be checked.
type fatalTB struct {
	testing.TB
	failed bool
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(string, ...any) {
	f.failed = true
	panic(f)
}

func TestRecvAndWait(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if v := Recv(t, ch, time.Second, "a value"); v != 7 {
		t.Fatalf("Recv = %d", v)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go wg.Done()
	Wait(t, &wg, time.Second, "a goroutine")

	// Nothing comes: the test fails instead of hanging.
	f := &fatalTB{TB: t}
	func() {
		defer func() { recover() }()
		Recv(f, make(chan int), 10*time.Millisecond, "nothing")
	}()
	if !f.failed {
		t.Fatal("Recv on a silent channel did not fail the test")
	}
}
