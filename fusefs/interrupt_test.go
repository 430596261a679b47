package fusefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// fakeKilled replaces callerKilled: each call is reported on calls and
// answered from answers.
func fakeKilled(t *testing.T) (calls chan uint32, answers chan bool) {
	calls, answers = make(chan uint32), make(chan bool)
	oldKilled, oldPoll := callerKilled, killPoll
	callerKilled = func(tid uint32) bool {
		calls <- tid
		return <-answers
	}
	killPoll = time.Millisecond
	t.Cleanup(func() { callerKilled, killPoll = oldKilled, oldPoll })
	return calls, answers
}

func TestUntilKilledIgnoresSignalsOfALiveCaller(t *testing.T) {
	calls, answers := fakeKilled(t)
	intr := make(chan struct{})
	var notes []bool
	ctx, done := untilKilled(&fuse.Context{Caller: fuse.Caller{Pid: 4242}, Cancel: intr}, func(tid uint32, killed bool) {
		if tid != 4242 {
			t.Errorf("note for thread %d, want 4242", tid)
		}
		notes = append(notes, killed) // only the watcher goroutine writes
	})
	defer done()
	if _, ok := fuse.FromContext(ctx); !ok {
		t.Fatal("the request's caller is lost")
	}
	close(intr) // INTERRUPT: the caller got a signal (say SIGURG)
	if tid := recvOrFail(t, calls, "a check of the interrupted caller"); tid != 4242 {
		t.Fatalf("checked thread %d, want the caller 4242", tid)
	}
	answers <- false
	recvOrFail(t, calls, "the next poll") // the first answer has been acted on
	if err := ctx.Err(); err != nil {
		t.Fatalf("a signal to a live caller cancelled its request: %v", err)
	}
	answers <- true // now kill -9
	recvOrFail(t, ctx.Done(), "the cancel of a killed caller's request")
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("err %v, want Canceled", ctx.Err())
	}
	// cancel() ran after the last note: the notes are complete.
	if !slices.Equal(notes, []bool{false, true}) {
		t.Fatalf("notes %v, want one ignored interrupt then the kill", notes)
	}
}

func TestUntilKilledCancelsForAKilledCaller(t *testing.T) {
	calls, answers := fakeKilled(t)
	intr := make(chan struct{})
	ctx, done := untilKilled(&fuse.Context{Caller: fuse.Caller{Pid: 7}, Cancel: intr}, nil)
	defer done()
	close(intr)
	recvOrFail(t, calls, "a check of the interrupted caller")
	answers <- true
	recvOrFail(t, ctx.Done(), "the cancel of a killed caller's request")
}

func TestUntilKilledDoneEndsTheWatch(t *testing.T) {
	calls, answers := fakeKilled(t)
	intr := make(chan struct{})
	ctx, done := untilKilled(&fuse.Context{Caller: fuse.Caller{Pid: 7}, Cancel: intr}, nil)
	close(intr)
	recvOrFail(t, calls, "a check of the interrupted caller")
	answers <- false
	done() // the request ended: the watcher must stop polling
	recvOrFail(t, ctx.Done(), "the cancel by done")
	select {
	case <-calls:
		// A poll already under way when done ran; answer it, and no other
		// may follow.
		answers <- false
	case <-time.After(20 * killPoll):
	}
	select {
	case <-calls:
		t.Fatal("the watcher kept polling after the request ended")
	case <-time.After(20 * killPoll):
	}
}

func TestUntilKilledWithoutInterrupt(t *testing.T) {
	fakeKilled(t) // any call would block the test: none may come
	ctx, done := untilKilled(&fuse.Context{Caller: fuse.Caller{Pid: 7}, Cancel: make(chan struct{})}, nil)
	if ctx.Err() != nil {
		t.Fatal("cancelled without an interrupt")
	}
	done()
	// A context that is not a request's passes through.
	bg := context.Background()
	if got, done := untilKilled(bg, nil); got != bg {
		t.Fatal("a plain context was wrapped")
	} else {
		done()
	}
}

func TestSigkillPending(t *testing.T) {
	const status = "Name:\tcat\nState:\tD (disk sleep)\nSigQ:\t1/7823\nSigPnd:\t%s\nShdPnd:\t%s\nSigBlk:\t0000000000000000\n"
	for _, tc := range []struct {
		sig, shd string
		want     bool
	}{
		{"0000000000000000", "0000000000000000", false},
		{"0000000000000100", "0000000000000000", true},  // kill -9, or a fatal signal being delivered
		{"0000000000000000", "0000000000000100", true},  // kill -9 to the process, not yet on the thread
		{"0000000000000002", "0000000000000000", false}, // SIGINT caught by a handler
		{"0000000000000000", "0000000000008000", false}, // SIGTERM
		{"fffffffffffffeff", "fffffffffffffeff", false}, // everything but SIGKILL
		{"garbage", "", false},
	} {
		if got := sigkillPending(fmt.Appendf(nil, status, tc.sig, tc.shd)); got != tc.want {
			t.Errorf("SigPnd %s ShdPnd %s: killed %v, want %v", tc.sig, tc.shd, got, tc.want)
		}
	}
}

func TestThreadKilled(t *testing.T) {
	if threadKilled(uint32(os.Getpid())) {
		t.Error("this test's own process reads as killed")
	}
	// A thread id that does not exist: the caller is gone.
	if !threadKilled(1<<22 + 1) {
		t.Error("a thread that does not exist reads as alive")
	}
}
