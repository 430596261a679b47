// Package faultstore wraps an objectstore.Store and injects faults into its
// operations, for unit tests of the code above it (fusefs): fail the next
// operation, hold an operation at a gate until the test releases it, lose
// the reply of an operation after applying it, and cut a Get body short.
//
// The injected errors look like the real ones: ErrNetwork is what an S3Store
// returns when a connection is reset (objectstore.ErrUnavailable around a
// *net.OpError carrying ECONNRESET), so errno mapping and log messages are
// tested against the chain a real fault produces.
package faultstore

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/csefs/csefs/objectstore"
)

// Op names a Store operation. Write and Commit are the Writer's.
type Op string

const (
	Head   Op = "Head"
	Get    Op = "Get"
	List   Op = "List"
	Put    Op = "Put"
	Create Op = "Create"
	Write  Op = "Write"
	Commit Op = "Commit"
	Copy   Op = "Copy"
	Delete Op = "Delete"
	Check  Op = "Check"
)

// ErrNetwork is a connection reset as an S3Store reports it.
var ErrNetwork = fmt.Errorf("faultstore: injected: %w: %w", objectstore.ErrUnavailable,
	&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})

// Kind is what a Fault does.
type Kind int

const (
	// Fail returns Err without doing the operation.
	Fail Kind = iota
	// LoseReply does the operation, then returns Err as if its reply had
	// been lost.
	LoseReply
	// CutBody (Get only) returns a body that fails with Err after After
	// bytes.
	CutBody
	// Gate holds the operation until the Fault's gate is released, then
	// does it.
	Gate
)

// Fault is one rule. The first matching rule with hits left applies.
type Fault struct {
	Op  Op
	Key string // "" matches every key
	// Kind is the fault; Err its error (ErrNetwork when nil).
	Kind Kind
	Err  error
	// Times is how many operations it hits (0: one; -1: no limit).
	Times int
	// After is CutBody's number of bytes delivered before the cut.
	After int64

	hits    int
	entered chan struct{} // Gate: closed when an operation reached it
	release chan struct{} // Gate: closed by Release
	once    *sync.Once
}

// Entered is closed once an operation is held at the gate (Gate faults).
func (f *Fault) Entered() <-chan struct{} { return f.entered }

// Release lets the operations held at the gate go on (Gate faults).
func (f *Fault) Release() { f.once.Do(func() { close(f.release) }) }

// Store is a Store with faults.
type Store struct {
	objectstore.Store

	mu     sync.Mutex
	faults []*Fault
	calls  map[Op]int
}

var _ objectstore.Store = (*Store)(nil)

// New wraps s.
func New(s objectstore.Store) *Store { return &Store{Store: s, calls: map[Op]int{}} }

// Add installs f and returns it (for Gate's Entered and Release).
func (s *Store) Add(f Fault) *Fault {
	if f.Err == nil {
		f.Err = ErrNetwork
	}
	if f.Kind == Gate {
		f.entered, f.release, f.once = make(chan struct{}), make(chan struct{}), new(sync.Once)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ff := &f
	s.faults = append(s.faults, ff)
	return ff
}

// FailNext makes the next op (on any key) fail with err (ErrNetwork if nil).
func (s *Store) FailNext(op Op, err error) *Fault { return s.Add(Fault{Op: op, Err: err}) }

// LoseNextReply makes the next op on key be applied, then fail with ErrNetwork.
func (s *Store) LoseNextReply(op Op, key string) *Fault {
	return s.Add(Fault{Op: op, Key: key, Kind: LoseReply})
}

// CutNextBody makes the next Get of key deliver after bytes, then fail.
func (s *Store) CutNextBody(key string, after int64) *Fault {
	return s.Add(Fault{Op: Get, Key: key, Kind: CutBody, After: after})
}

// GateNext holds the next op on key until the returned fault is released.
func (s *Store) GateNext(op Op, key string) *Fault { return s.Add(Fault{Op: op, Key: key, Kind: Gate}) }

// Clear removes every fault, releasing gates.
func (s *Store) Clear() {
	s.mu.Lock()
	fs := s.faults
	s.faults = nil
	s.mu.Unlock()
	for _, f := range fs {
		if f.Kind == Gate {
			f.Release()
		}
	}
}

// Calls returns how many times op was called.
func (s *Store) Calls(op Op) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// take counts a call of op on key and returns the fault that hits it, if any.
func (s *Store) take(op Op, key string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	for _, f := range s.faults {
		limit := f.Times
		if limit == 0 {
			limit = 1
		}
		if f.Op != op || f.Key != "" && f.Key != key || limit > 0 && f.hits >= limit {
			continue
		}
		f.hits++
		return f
	}
	return nil
}

// do runs fn under the fault of op on key, if any.
func (s *Store) do(ctx context.Context, op Op, key string, fn func() error) error {
	return s.apply(ctx, s.take(op, key), fn)
}

// apply runs fn under f (nil: none).
func (s *Store) apply(ctx context.Context, f *Fault, fn func() error) error {
	if f == nil {
		return fn()
	}
	switch f.Kind {
	case Fail, CutBody:
		return f.Err
	case Gate:
		select {
		case <-f.entered:
		default:
			close(f.entered)
		}
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return fn()
	}
	// LoseReply
	if err := fn(); err != nil {
		return err
	}
	return f.Err
}

func (s *Store) Check(ctx context.Context) error {
	return s.do(ctx, Check, "", func() error { return s.Store.Check(ctx) })
}

func (s *Store) Head(ctx context.Context, key string) (info *objectstore.Info, err error) {
	err = s.do(ctx, Head, key, func() (e error) { info, e = s.Store.Head(ctx, key); return e })
	if err != nil {
		return nil, err
	}
	return info, nil
}

func (s *Store) Get(ctx context.Context, key string, opt objectstore.GetOptions) (io.ReadCloser, *objectstore.Info, error) {
	f := s.take(Get, key)
	if f != nil && f.Kind == CutBody {
		rc, info, err := s.Store.Get(ctx, key, opt)
		if err != nil {
			return nil, nil, err
		}
		return &cutBody{rc: rc, left: f.After, err: f.Err}, info, nil
	}
	var rc io.ReadCloser
	var info *objectstore.Info
	fn := func() (e error) { rc, info, e = s.Store.Get(ctx, key, opt); return e }
	if err := s.apply(ctx, f, fn); err != nil {
		if rc != nil {
			rc.Close()
		}
		return nil, nil, err
	}
	return rc, info, nil
}

func (s *Store) List(ctx context.Context, prefix, delimiter string, fn func(objectstore.ListPage) error) error {
	return s.do(ctx, List, prefix, func() error { return s.Store.List(ctx, prefix, delimiter, fn) })
}

func (s *Store) Put(ctx context.Context, key string, body []byte, meta map[string]string) (info *objectstore.Info, err error) {
	err = s.do(ctx, Put, key, func() (e error) { info, e = s.Store.Put(ctx, key, body, meta); return e })
	if err != nil {
		return nil, err
	}
	return info, nil
}

func (s *Store) Copy(ctx context.Context, src, dst string, opt objectstore.CopyOptions) (info *objectstore.Info, err error) {
	err = s.do(ctx, Copy, dst, func() (e error) { info, e = s.Store.Copy(ctx, src, dst, opt); return e })
	if err != nil {
		return nil, err
	}
	return info, nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, Delete, key, func() error { return s.Store.Delete(ctx, key) })
}

func (s *Store) Create(ctx context.Context, key string, meta map[string]string) (w objectstore.Writer, err error) {
	err = s.do(ctx, Create, key, func() (e error) { w, e = s.Store.Create(ctx, key, meta); return e })
	if err != nil {
		if w != nil {
			w.Abort(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	return &writer{Writer: w, s: s, key: key}, nil
}

// writer injects Write and Commit faults.
type writer struct {
	objectstore.Writer
	s   *Store
	key string
}

func (w *writer) Write(p []byte) (n int, err error) {
	err = w.s.do(context.Background(), Write, w.key, func() (e error) { n, e = w.Writer.Write(p); return e })
	return n, err
}

func (w *writer) Commit(ctx context.Context) (info *objectstore.Info, err error) {
	err = w.s.do(ctx, Commit, w.key, func() (e error) { info, e = w.Writer.Commit(ctx); return e })
	if err != nil {
		w.Writer.Abort(context.WithoutCancel(ctx)) // a no-op after a commit
		return nil, err
	}
	return info, nil
}

// cutBody delivers left bytes, then fails with err.
type cutBody struct {
	rc   io.ReadCloser
	left int64
	err  error
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, c.err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.rc.Close() }
