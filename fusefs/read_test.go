package fusefs

import (
	"bytes"
	"context"
	"syscall"
	"testing"
)

func readHandleAt(t *testing.T, r *readHandle, off, n int) ([]byte, syscall.Errno) {
	t.Helper()
	res, errno := r.Read(context.Background(), make([]byte, n), int64(off))
	if errno != 0 {
		return nil, errno
	}
	b, _ := res.Bytes(make([]byte, n))
	return b, 0
}

// A small object is authenticated whole by the handle's first read, not at
// open: an open that never reads (rsync opens each temp file to fchmod it)
// makes no GET, and a tampered object fails the first read with EIO,
// returning nothing. (Before, open fetched the object.)
func TestSmallObjectVerifiedAtFirstRead(t *testing.T) {
	f, _, st := newTestFS(t, ObjectMetadata, true)
	g := &countingStore{Store: st}
	f.store = g
	f.opt.VerifyThreshold = 1 << 20
	ctx := context.Background()
	body := bytes.Repeat([]byte("small and whole "), 100)
	writeObj(t, f, "s", body)
	n := newFileNode(f, "s")

	h, _, errno := n.Open(ctx, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("open: %v", errno)
	}
	r := h.(*readHandle)
	if got := g.gets.Load(); got != 0 {
		t.Errorf("open made %d GETs, want 0", got)
	}
	got, errno := readHandleAt(t, r, 0, 100)
	if errno != 0 || !bytes.Equal(got, body[:100]) {
		t.Fatalf("first read: %q, %v", got, errno)
	}
	got, errno = readHandleAt(t, r, 100, len(body))
	if errno != 0 || !bytes.Equal(got, body[100:]) {
		t.Fatalf("second read: %d bytes, %v", len(got), errno)
	}
	if n := g.gets.Load(); n != 1 {
		t.Errorf("two reads made %d GETs, want 1 (the whole object, once)", n)
	}
	r.Release(ctx)

	// Tampered: open succeeds, the first read fails and returns nothing.
	raw, meta := getBody(t, st, "s"), rawMeta(t, st, "s")
	raw[10] ^= 1
	if _, err := st.Put(ctx, "s", raw, meta); err != nil {
		t.Fatal(err)
	}
	h, _, errno = n.Open(ctx, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("open of the tampered object: %v (its key and size are fine)", errno)
	}
	r = h.(*readHandle)
	defer r.Release(ctx)
	if got, errno := readHandleAt(t, r, 0, 100); errno != syscall.EIO || got != nil {
		t.Fatalf("read of a tampered object: %q, %v; want nothing and EIO", got, errno)
	}
}

// A small object replaced between open and the handle's first read: the
// handle has returned nothing, so it reads the new version, as an open made
// then would have, and fstat on it shows that version.
func TestSmallObjectReplacedBeforeFirstRead(t *testing.T) {
	f, _, _ := newTestFS(t, ObjectMetadata, true)
	f.opt.VerifyThreshold = 1 << 20
	ctx := context.Background()
	writeObj(t, f, "s", []byte("old version"))
	n := newFileNode(f, "s")
	h, _, errno := n.Open(ctx, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("open: %v", errno)
	}
	r := h.(*readHandle)
	defer r.Release(ctx)
	f.putStat("s", nil)
	writeObj(t, f, "s", []byte("the new version")) // another writer
	f.putStat("s", nil)
	got, errno := readHandleAt(t, r, 0, 100)
	if errno != 0 || string(got) != "the new version" {
		t.Fatalf("read after a replacement: %q, %v", got, errno)
	}
	if r.object().plainSize != int64(len("the new version")) {
		t.Errorf("the handle's size is %d, not the new version's", r.object().plainSize)
	}
}
