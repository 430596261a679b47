package fusefs

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/csefs/csefs/objectstore"
	"github.com/csefs/csefs/objectstore/faultstore"
)

// A rename within a directory returns once its copy has landed; the old
// name's delete goes on in the background, hidden from listings, and an
// fsync(2) of the directory waits for it. The old code deleted before
// returning, so the rename below never returned while the delete was held.
func TestRenameDeletesOldNameLater(t *testing.T) {
	ctx := context.Background()
	f, fst, local, _ := newFaultFS(t)
	d := newDirNode(f, "d/")
	writeObj(t, f, "d/.a.tmp", bytes.Repeat([]byte("x"), 100))
	gate := fst.GateNext(faultstore.Delete, "d/.a.tmp")
	defer gate.Release()
	renamed := make(chan error, 1)
	go func() {
		if errno := d.Rename(ctx, ".a.tmp", d, "a", 0); errno != 0 {
			renamed <- errno
			return
		}
		renamed <- nil
	}()
	recvOrFail(t, gate.Entered(), "the old name's delete")
	if err := recvOrFail(t, renamed, "the rename, while the old name's delete is held"); err != nil {
		t.Fatalf("rename: %v", err)
	}
	if !f.deleting("d/.a.tmp") {
		t.Error("the old name is not marked as being deleted")
	}
	_, entries, err := f.listDir(ctx, "d/", false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if !slices.Equal(names, []string{"a"}) {
		t.Errorf("listing while the old name's delete is held: %v, want [a]", names)
	}
	synced := make(chan error, 1)
	go func() { synced <- f.awaitDeletesIn(ctx, "d/") }()
	select {
	case err := <-synced:
		t.Fatalf("the directory's fsync returned (%v) before the delete landed", err)
	default:
	}
	gate.Release()
	if err := recvOrFail(t, synced, "the directory's fsync"); err != nil {
		t.Errorf("fsync: %v", err)
	}
	if _, err := local.Head(ctx, "d/.a.tmp"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("old name after the delete: %v, want not found", err)
	}
	if _, err := local.Head(ctx, "d/a"); err != nil {
		t.Errorf("new name: %v", err)
	}
}

// A deferred delete that fails is retried; one that keeps failing is
// reported by the directory's next fsync (once), and the old name is
// listed again.
func TestLazyDeleteRetriedAndReported(t *testing.T) {
	ctx := context.Background()
	f, fst, local, _ := newFaultFS(t)
	f.deletes.retry = 1 // nanosecond
	for _, k := range []string{"d/flaky", "d/dead"} {
		if _, err := local.Put(ctx, k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	fst.Add(faultstore.Fault{Op: faultstore.Delete, Key: "d/flaky", Err: objectstore.ErrUnavailable, Times: 2})
	f.deleteLater("d/flaky")
	if err := f.awaitDeletesIn(ctx, "d/"); err != nil {
		t.Errorf("a delete that failed twice, then landed: %v", err)
	}
	if _, err := local.Head(ctx, "d/flaky"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("d/flaky after its retried delete: %v", err)
	}
	if n := fst.Calls(faultstore.Delete); n != 3 {
		t.Errorf("%d deletes, want 3", n)
	}

	fst.Add(faultstore.Fault{Op: faultstore.Delete, Key: "d/dead", Err: objectstore.ErrUnavailable, Times: -1})
	f.deleteLater("d/dead")
	if err := f.awaitDeletesIn(ctx, "d/"); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("fsync after a delete that never landed: %v, want ErrUnavailable", err)
	}
	if err := f.awaitDeletesIn(ctx, "d/"); err != nil {
		t.Errorf("second fsync: %v, want nil (reported once)", err)
	}
	if f.deleting("d/dead") {
		t.Error("a delete given up is still pending")
	}
	_, entries, err := f.listDir(ctx, "d/", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != "dead" {
		t.Errorf("listing after the delete was given up: %v, want [dead]", entries)
	}
}
