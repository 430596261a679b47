package fusefs

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/csefs/csefs/objectstore"
)

// TestStreamSwitchesToStaging: a new file written sequentially, then at a
// gap and back at the start, ends up as the same bytes a local file would
// hold; the object appears only at flush.
func TestStreamSwitchesToStaging(t *testing.T) {
	ctx := context.Background()
	f, _, st := newTestFS(t, ObjectMetadata, true)
	n := newFileNode(f, "f")
	w, err := f.newWriter(ctx, n, fileAttrs(0o644), true, false)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 0, 100)
	put := func(off int64, data string) {
		t.Helper()
		if _, errno := w.Write(ctx, []byte(data), off); errno != 0 {
			t.Fatalf("write at %d: %v", off, errno)
		}
		if end := int(off) + len(data); end > len(want) {
			want = append(want, make([]byte, end-len(want))...)
		}
		copy(want[off:], data)
	}
	put(0, "hello ")
	put(6, "world")
	put(40, "after a gap") // not sequential: switches to staging
	put(0, "HELLO")        // and back to the start
	if _, err := st.Head(ctx, "f"); err == nil {
		t.Fatal("object visible before flush")
	}
	if errno := w.Flush(ctx); errno != 0 {
		t.Fatal(errno)
	}
	w.Release(ctx)
	if got := readObj(t, f, "f"); !bytes.Equal(got, want) {
		t.Fatalf("object %q, want %q", got, want)
	}
}

// TestStreamPastPrefixIsNonSequential: after streamPrefix bytes a
// non-sequential write fails with EINVAL, close reports the failure, and
// nothing is committed.
func TestStreamPastPrefixIsNonSequential(t *testing.T) {
	ctx := context.Background()
	f, _, st := newTestFS(t, ObjectMetadata, true)
	n := newFileNode(f, "big")
	w, err := f.newWriter(ctx, n, fileAttrs(0o644), true, false)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	var off int64
	for off <= streamPrefix {
		if _, errno := w.Write(ctx, chunk, off); errno != 0 {
			t.Fatal(errno)
		}
		off += int64(len(chunk))
	}
	if _, errno := w.Write(ctx, []byte("x"), 5); errno != syscall.EINVAL {
		t.Fatalf("non-sequential write after %d bytes: %v, want EINVAL", off, errno)
	}
	if errno := w.Flush(ctx); errno == 0 {
		t.Fatal("close after a failed write succeeded")
	}
	w.Release(ctx)
	if _, err := st.Head(ctx, "big"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("object after a failed write: %v, want not found", err)
	}
}

// TestTruncateAfterCloseBeforeRelease: truncate(2) by path right after
// close(2), while the closed handle's RELEASE has not come yet, truncates
// the committed object instead of failing on the finished handle
// (posixtest TruncateNoFile, which flaked with EINVAL).
func TestTruncateAfterCloseBeforeRelease(t *testing.T) {
	ctx := context.Background()
	f, _, _ := newTestFS(t, ObjectMetadata, true)
	n := newFileNode(f, "file")
	w, err := f.newWriter(ctx, n, fileAttrs(0o644), true, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, errno := w.Write(ctx, []byte("hello"), 0); errno != 0 {
		t.Fatal(errno)
	}
	if errno := w.Flush(ctx); errno != 0 { // close(2)
		t.Fatal(errno)
	}
	if err := n.setSize(ctx, nil, 1); err != nil { // truncate(2), RELEASE still to come
		t.Fatalf("truncate: %v", err)
	}
	w.Release(ctx)
	if got := readObj(t, f, "file"); string(got) != "h" {
		t.Fatalf("object %q, want %q", got, "h")
	}
}
