package faultstore

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/csefs/csefs/objectstore"
)

func newStore(t *testing.T) (*Store, objectstore.Store) {
	t.Helper()
	st, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(st), st
}

func TestFailNext(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	s.FailNext(Put, nil)
	if _, err := s.Put(ctx, "k", []byte("v"), nil); !errors.Is(err, objectstore.ErrUnavailable) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("first Put: %v", err)
	}
	if _, err := s.Head(ctx, "k"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("a failed Put was applied: %v", err)
	}
	if _, err := s.Put(ctx, "k", []byte("v"), nil); err != nil {
		t.Fatalf("second Put: %v", err)
	}
	if s.Calls(Put) != 2 {
		t.Errorf("Calls(Put) = %d", s.Calls(Put))
	}
}

func TestCutBody(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Put(ctx, "k", []byte("0123456789"), nil); err != nil {
		t.Fatal(err)
	}
	s.CutNextBody("k", 4)
	rc, _, err := s.Get(ctx, "k", objectstore.GetOptions{Length: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if string(b) != "0123" || !errors.Is(err, ErrNetwork) {
		t.Fatalf("cut body: %q, %v", b, err)
	}
}

func TestGate(t *testing.T) {
	s, st := newStore(t)
	ctx := context.Background()
	g := s.GateNext(Delete, "k")
	if _, err := s.Put(ctx, "k", []byte("v"), nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Delete(ctx, "k") }()
	select {
	case <-g.Entered():
	case err := <-done:
		t.Fatalf("delete passed the gate: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("delete never reached the gate")
	}
	if _, err := st.Head(ctx, "k"); err != nil {
		t.Fatalf("deleted before the gate opened: %v", err)
	}
	g.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("delete hangs after the gate opened")
	}
	if _, err := st.Head(ctx, "k"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("not deleted after the gate: %v", err)
	}
}

func TestLoseCommitReply(t *testing.T) {
	s, st := newStore(t)
	ctx := context.Background()
	s.LoseNextReply(Commit, "k")
	w, err := s.Create(ctx, "k", map[string]string{"a": "1"})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("body"))
	if _, err := w.Commit(ctx); !errors.Is(err, ErrNetwork) {
		t.Fatalf("Commit: %v", err)
	}
	if info, err := st.Head(ctx, "k"); err != nil || info.Size != 4 {
		t.Fatalf("commit with a lost reply not applied: %v %v", info, err)
	}
}
