package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
	"github.com/csefs/csefs/objectstore/faultstore"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newFaultFS is an encrypting filesystem over a fault-injecting wrapper of
// a fresh local store; log collects its log.
func newFaultFS(t *testing.T) (f *FS, fst *faultstore.Store, local objectstore.Store, log *syncBuffer) {
	t.Helper()
	st, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fst = faultstore.New(st)
	p, err := cse.NewKeyringProvider([]cse.MasterKey{{Name: "k", AES: bytes.Repeat([]byte{7}, 32)}}, "k")
	if err != nil {
		t.Fatal(err)
	}
	log = &syncBuffer{}
	f, _, err = New(Options{
		Store: fst, Provider: p, URIPrefix: "file:///test/", StagingDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(log, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f, fst, st, log
}

// TestNetworkErrorsAreEIO: a connection reset under open, read, write,
// close and stat reaches the program as EIO, never as ECONNRESET, and the
// log names the reset.
func TestNetworkErrorsAreEIO(t *testing.T) {
	ctx := context.Background()
	f, fst, _, log := newFaultFS(t)
	writeObj(t, f, "f", []byte("some content"))
	n := newFileNode(f, "f")
	check := func(op string, errno syscall.Errno) {
		t.Helper()
		if errno != syscall.EIO {
			t.Errorf("%s under a connection reset: %v, want EIO", op, errno)
		}
	}

	// stat
	f.putStat("f", nil)
	fst.FailNext(faultstore.Head, nil)
	var out fuse.AttrOut
	check("stat", n.Getattr(ctx, nil, &out))

	// open (for reading: HEAD, then the first GET)
	f.putStat("f", nil)
	fst.FailNext(faultstore.Head, nil)
	_, _, errno := n.Open(ctx, syscall.O_RDONLY)
	check("open", errno)

	// read: the body is cut
	f.putStat("f", nil)
	fh, _, errno := n.Open(ctx, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("open: %v", errno)
	}
	r := fh.(*readHandle)
	fst.CutNextBody("f", 3)
	fst.FailNext(faultstore.Get, nil) // and the retry of the range
	buf := make([]byte, 100)
	_, errno = r.Read(ctx, buf, 0)
	r.Release(ctx)
	if errno == 0 {
		// The handle had its bytes before the faults were set: read again
		// from a fresh open.
		f.putStat("f", nil)
		fst.Clear()
		fst.Add(faultstore.Fault{Op: faultstore.Get, Key: "f", Times: -1})
		fh, _, errno = n.Open(ctx, syscall.O_RDONLY)
		if errno == 0 {
			_, errno = fh.(*readHandle).Read(ctx, buf, 0)
			fh.(*readHandle).Release(ctx)
		}
	}
	check("read", errno)
	fst.Clear()

	// write: the streaming upload fails
	w, err := f.newWriter(ctx, n, fileAttrs(0o644), true, false)
	if err != nil {
		t.Fatal(err)
	}
	fst.Add(faultstore.Fault{Op: faultstore.Write, Times: -1})
	_, errno = w.Write(ctx, bytes.Repeat([]byte("x"), 1<<20), 0)
	if errno == 0 {
		errno = w.Flush(ctx) // the failure may surface at close
	}
	check("write", errno)
	w.Release(ctx)
	fst.Clear()

	// close: the commit fails (and did not land)
	w, err = f.newWriter(ctx, n, fileAttrs(0o644), true, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, errno := w.Write(ctx, []byte("new"), 0); errno != 0 {
		t.Fatal(errno)
	}
	fst.FailNext(faultstore.Commit, nil)
	check("close", w.Flush(ctx))
	w.Release(ctx)

	if !strings.Contains(log.String(), "connection reset") {
		t.Errorf("the log does not name the connection reset:\n%s", log.String())
	}
	if strings.Contains(log.String(), "ciphertext truncated") || strings.Contains(log.String(), "key access denied") {
		t.Errorf("the log blames the data or the key for a network fault:\n%s", log.String())
	}
	if got := readObj(t, f, "f"); string(got) != "some content" {
		t.Errorf("after the failed writes the object is %q", got)
	}
}

// TestPersistAttrsRacesOverwrite: a chmod whose copy is overtaken by an
// overwrite (the copy is held at a gate while another writer replaces the
// object) reads the object again and applies the mode to the new version;
// the result decrypts to the new content.
func TestPersistAttrsRacesOverwrite(t *testing.T) {
	ctx := context.Background()
	f, fst, _, _ := newFaultFS(t)
	writeObj(t, f, "f", []byte("version one"))
	gate := fst.GateNext(faultstore.Copy, "f")
	n := newFileNode(f, "f")
	done := make(chan syscall.Errno, 1)
	go func() {
		var out fuse.AttrOut
		done <- n.Setattr(ctx, nil, setAttrIn(fuse.FATTR_MODE, 0o600, 0, 0, time.Time{}), &out)
	}()
	select {
	case <-gate.Entered():
	case errno := <-done:
		t.Fatalf("chmod ended (%v) before its copy", errno)
	case <-time.After(time.Minute):
		t.Fatal("chmod never reached its copy")
	}
	writeObj(t, f, "f", []byte("version two, longer"))
	gate.Release()
	var errno syscall.Errno
	select {
	case errno = <-done:
	case <-time.After(time.Minute):
		t.Fatal("chmod hangs")
	}
	if errno != 0 {
		t.Fatalf("chmod: %v", errno)
	}
	if got := readObj(t, f, "f"); string(got) != "version two, longer" {
		t.Fatalf("content after the race: %q", got)
	}
	o, err := f.head(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if o.attrs.Mode&0o7777 != 0o600 {
		t.Errorf("mode %o, want 600", o.attrs.Mode&0o7777)
	}
	if c := fst.Calls(faultstore.Copy); c != 2 {
		t.Errorf("%d copies, want 2 (one 412, one retry)", c)
	}
}

// TestPersistAttrsGivesUp: a copy that always loses (412) ends after
// attrCopyAttempts tries with ESTALE, and the object is untouched.
func TestPersistAttrsGivesUp(t *testing.T) {
	ctx := context.Background()
	f, fst, local, _ := newFaultFS(t)
	writeObj(t, f, "f", []byte("content"))
	before, err := local.Head(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	fst.Add(faultstore.Fault{Op: faultstore.Copy, Times: -1, Err: objectstore.ErrPreconditionFailed})
	var out fuse.AttrOut
	errno := newFileNode(f, "f").Setattr(ctx, nil, setAttrIn(fuse.FATTR_MODE, 0o600, 0, 0, time.Time{}), &out)
	if errno != syscall.ESTALE {
		t.Errorf("chmod always losing: %v, want ESTALE", errno)
	}
	if c := fst.Calls(faultstore.Copy); c != attrCopyAttempts {
		t.Errorf("%d copies, want %d", c, attrCopyAttempts)
	}
	after, err := local.Head(ctx, "f")
	if err != nil || after.ETag != before.ETag {
		t.Errorf("object changed: %v %v", after, err)
	}
}

// TestFaultStoreLoseReply: the wrapper applies a write whose reply it
// loses (what fusefs tests of ambiguous commits build on).
func TestFaultStoreLoseReply(t *testing.T) {
	ctx := context.Background()
	st, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fst := faultstore.New(st)
	fst.LoseNextReply(faultstore.Put, "k")
	if _, err := fst.Put(ctx, "k", []byte("v"), nil); !errors.Is(err, objectstore.ErrUnavailable) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Put with a lost reply: %v", err)
	}
	rc, _, err := st.Get(ctx, "k", objectstore.GetOptions{Length: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "v" {
		t.Fatalf("applied %q", b)
	}
}

// TestRenameInstructionFileRacesOverwrite: a rename in instruction-file mode
// copies the object (pinned to the version it looked at), then its
// instruction file. An overwrite that lands between the two must not pair
// the old body with the new version's instruction file at the destination
// (and then delete the source): the instruction file's copy is pinned to the
// ETag that was read, so the rename fails with ESTALE, leaves no destination,
// and the source keeps the new version.
func TestRenameInstructionFileRacesOverwrite(t *testing.T) {
	ctx := context.Background()
	st, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fst := faultstore.New(st)
	p, err := cse.NewKeyringProvider([]cse.MasterKey{{Name: "k", AES: bytes.Repeat([]byte{7}, 32)}}, "k")
	if err != nil {
		t.Fatal(err)
	}
	f, root, err := New(Options{
		Store: fst, Provider: p, StorageMode: InstructionFile, URIPrefix: "file:///test/", StagingDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	d := root.(*dirNode)
	writeObj(t, f, "a", []byte("version one"))
	gate := fst.GateNext(faultstore.Copy, metadata.InstructionKey("b")) // keyed by the destination
	done := make(chan syscall.Errno, 1)
	go func() { done <- d.Rename(ctx, "a", d, "b", 0) }()
	select {
	case <-gate.Entered():
	case errno := <-done:
		t.Fatalf("rename ended (%v) before copying the instruction file", errno)
	case <-time.After(time.Minute):
		t.Fatal("rename never reached the instruction file's copy")
	}
	writeObj(t, f, "a", []byte("version two, longer"))
	gate.Release()
	var errno syscall.Errno
	select {
	case errno = <-done:
	case <-time.After(time.Minute):
		t.Fatal("rename hangs")
	}
	if errno != syscall.ESTALE {
		t.Errorf("rename over a racing overwrite: %v, want ESTALE", errno)
	}
	if got := readObj(t, f, "a"); string(got) != "version two, longer" {
		t.Errorf("source after the race: %q", got)
	}
	for _, k := range []string{"b", metadata.InstructionKey("b")} {
		if _, err := st.Head(ctx, k); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("%s after the failed rename: %v, want not found", k, err)
		}
	}
}

// TestFlushDirRetriesLostCopy: storing a directory's mtime (fsync(2) of the
// directory, or the delayed flush) whose marker copy loses to another writer
// of the marker (412) reads the marker again and retries, so the fsync
// succeeds and the mtime is stored.
func TestFlushDirRetriesLostCopy(t *testing.T) {
	ctx := context.Background()
	f, fst, local, _ := newFaultFS(t)
	if _, err := local.Put(ctx, "d/", nil, map[string]string{"other": "kept"}); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.dirs.mu.Lock()
	st := f.dirStateLocked("d/")
	st.mtime, st.dirty = mtime, true
	f.dirs.mu.Unlock()
	fst.FailNext(faultstore.Copy, objectstore.ErrPreconditionFailed)
	if err := f.flushDir(ctx, "d/"); err != nil {
		t.Fatalf("flushDir after one lost copy: %v (errno %v)", err, toErrno(err))
	}
	if c := fst.Calls(faultstore.Copy); c != 2 {
		t.Errorf("%d copies, want 2 (one 412, one retry)", c)
	}
	info, err := local.Head(ctx, "d/")
	if err != nil {
		t.Fatal(err)
	}
	a := metadata.ParseAttrs(info.Metadata)
	if !a.HasMtime || !a.Mtime.Equal(mtime) || info.Metadata["other"] != "kept" {
		t.Errorf("marker metadata %v: mtime %v (%v), want %v and other=kept", info.Metadata, a.Mtime, a.HasMtime, mtime)
	}
}

// TestSetDirMetaRetriesLostCopy: a chmod of a directory whose marker copy
// (at the directory's fsync) loses to another writer of the marker (412) is
// retried on a fresh HEAD.
func TestSetDirMetaRetriesLostCopy(t *testing.T) {
	ctx := context.Background()
	f, fst, local, _ := newFaultFS(t)
	if _, err := local.Put(ctx, "d/", nil, nil); err != nil {
		t.Fatal(err)
	}
	fst.FailNext(faultstore.Copy, objectstore.ErrPreconditionFailed)
	c := changeFrom(setAttrIn(fuse.FATTR_MODE, 0o700, 0, 0, time.Time{}))
	f.setDirMeta("d/", c)
	if err := f.flushDir(ctx, "d/"); err != nil {
		t.Fatalf("chmod of a directory after one lost copy: %v (errno %v)", err, toErrno(err))
	}
	if n := fst.Calls(faultstore.Copy); n != 2 {
		t.Errorf("%d copies, want 2 (one 412, one retry)", n)
	}
	info, err := local.Head(ctx, "d/")
	if err != nil {
		t.Fatal(err)
	}
	if a := metadata.ParseAttrs(info.Metadata); a.Mode&0o7777 != 0o700 {
		t.Errorf("marker mode %o, want 700", a.Mode&0o7777)
	}
}

// TestFlushDirWaitsForFlushInFlight: an fsync(2) of a directory while the
// delayed flush of its mtime is storing it (its copy held at a gate) returns
// only once the mtime is in the marker, not at once because the state no
// longer says dirty.
func TestFlushDirWaitsForFlushInFlight(t *testing.T) {
	ctx := context.Background()
	f, fst, local, _ := newFaultFS(t)
	if _, err := local.Put(ctx, "d/", nil, nil); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.dirs.mu.Lock()
	st := f.dirStateLocked("d/")
	st.mtime, st.dirty = mtime, true
	f.dirs.mu.Unlock()
	gate := fst.GateNext(faultstore.Copy, "d/")
	timer := make(chan error, 1)
	go func() { timer <- f.flushDir(ctx, "d/") }()
	select {
	case <-gate.Entered():
	case err := <-timer:
		t.Fatalf("the first flush ended (%v) before its copy", err)
	case <-time.After(time.Minute):
		t.Fatal("the first flush never reached its copy")
	}
	stored := func() bool {
		info, err := local.Head(ctx, "d/")
		if err != nil {
			t.Fatal(err)
		}
		a := metadata.ParseAttrs(info.Metadata)
		return a.HasMtime && a.Mtime.Equal(mtime)
	}
	fsync := make(chan error, 1)
	go func() { fsync <- f.flushDir(ctx, "d/") }()
	// The gate stays closed a moment: an fsync that returns meanwhile
	// returned before the mtime was stored. (The fixed code cannot return
	// before the release, so this wait decides nothing there.)
	select {
	case err := <-fsync:
		t.Fatalf("fsync of the directory returned (%v) while its mtime was still being stored (stored: %v)", err, stored())
	case <-time.After(200 * time.Millisecond):
	}
	gate.Release()
	for _, c := range []chan error{timer, fsync} {
		select {
		case err := <-c:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Minute):
			t.Fatal("flush hangs after the gate opened")
		}
	}
	if !stored() {
		t.Error("mtime not in the marker after fsync")
	}
}

// TestDelayedDirFlushRetried: a delayed flush of a directory's mtime that
// fails (the store unreachable, twice) is scheduled again, with backoff,
// and stores the mtime once the store answers; nothing else (no fsync, no
// further change) is needed.
func TestDelayedDirFlushRetried(t *testing.T) {
	ctx := context.Background()
	f, fst, local, _ := newFaultFS(t)
	f.dirs.delay = 5 * time.Millisecond
	if _, err := local.Put(ctx, "d/", nil, nil); err != nil {
		t.Fatal(err)
	}
	fst.Add(faultstore.Fault{Op: faultstore.Copy, Key: "d/", Err: objectstore.ErrUnavailable, Times: 2})
	f.touchDir("d/")
	f.dirs.mu.Lock()
	want := f.dirs.m["d/"].mtime
	f.dirs.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := local.Head(ctx, "d/")
		if err != nil {
			t.Fatal(err)
		}
		if a := metadata.ParseAttrs(info.Metadata); a.HasMtime && a.Mtime.Equal(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mtime was never stored after %d copies (2 failed)", fst.Calls(faultstore.Copy))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := fst.Calls(faultstore.Copy); c != 3 {
		t.Errorf("%d copies, want 3 (two failures, one success)", c)
	}
}
