package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The kernel sends INTERRUPT for a request whenever the calling thread gets
// a signal it does not ignore. go-fuse then cancels the request's context.
// Honouring that as such would turn signals into EINTR from stat(2),
// open(2) and read(2), where no program expects it. Go programs get SIGURG
// all the time (goroutine preemption), and the JVM and others install
// SA_RESTART handlers, which restart only calls that the kernel restarts,
// not a FUSE reply of EINTR. libfuse ignores interrupts unless mounted with
// -o intr, and mountpoint-s3 ignores them too.
//
// csefs goes one step further than ignoring them. A request that reads is
// abandoned only when its caller is being killed (kill -9, or a fatal
// signal such as Ctrl-C on a cat with default handlers). That killed process
// cannot exit before the reply, so it does not wait out a slow S3 request.
// A request that changes the store always runs to its end.

// mutating detaches a request that changes the store from interrupts: a
// change, once started, runs to its end, so that a close(2) is not left
// without its upload and a rename is not left with both names.
func mutating(ctx context.Context) context.Context {
	return context.WithoutCancel(ctx)
}

// killPoll is how often an interrupted request checks again whether its
// caller is being killed. The kernel sends only one INTERRUPT per request.
// If the first signal was not fatal (SIGURG), a later kill -9 is noticed here.
var killPoll = 200 * time.Millisecond

// callerKilled reports whether thread tid is being killed. It is a
// variable for tests.
var callerKilled = threadKilled

// untilKilled returns a context for a request that only reads. The kernel's
// INTERRUPT cancels it only once the caller is being killed. done releases
// it and must be called when the request ends. An interrupt is logged at
// debug level, naming the operation and the object.
func (f *FS) untilKilled(ctx context.Context, op, key string) (_ context.Context, done func()) {
	return untilKilled(ctx, func(tid uint32, killed bool) {
		if killed {
			f.log.Debug("request abandoned: its caller is being killed", "op", op, "object", f.uri(key), "tid", tid)
		} else {
			f.log.Debug("interrupt ignored: the caller got a signal but is not being killed", "op", op, "object", f.uri(key), "tid", tid)
		}
	})
}

// untilKilled does the work of FS.untilKilled; note, if not nil, hears of
// the interrupt (killed false) and of the cancellation (killed true).
func untilKilled(ctx context.Context, note func(tid uint32, killed bool)) (_ context.Context, done func()) {
	caller, ok := fuse.FromContext(ctx)
	if !ok || ctx.Done() == nil {
		return ctx, func() {}
	}
	if note == nil {
		note = func(uint32, bool) {}
	}
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	tid := caller.Pid
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTicker(killPoll)
		defer t.Stop()
		for first := true; out.Err() == nil; first = false {
			if callerKilled(tid) {
				note(tid, true)
				cancel()
				return
			}
			if first {
				note(tid, false)
			}
			select {
			case <-out.Done():
			case <-t.C:
			}
		}
	})
	return out, func() {
		stop()
		cancel()
	}
}

// sigkillBit is SIGKILL's bit in the pending-signal masks of
// /proc/PID/status.
const sigkillBit = 1 << (syscall.SIGKILL - 1)

// threadKilled reports whether thread tid has SIGKILL pending or is gone.
// When a thread group is being killed, by SIGKILL or by a fatal signal,
// the kernel marks SIGKILL pending on each of its threads. The FUSE
// request header carries the calling thread's id, and /proc resolves
// thread ids as well as process ids.
func threadKilled(tid uint32) bool {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
	}
	return sigkillPending(b)
}

// sigkillPending reads the SigPnd (thread) and ShdPnd (process) masks of a
// /proc status file.
func sigkillPending(status []byte) bool {
	for _, line := range bytes.Split(status, []byte("\n")) {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok || (string(name) != "SigPnd" && string(name) != "ShdPnd") {
			continue
		}
		mask, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 16, 64)
		if err == nil && mask&sigkillBit != 0 {
			return true
		}
	}
	return false
}
