package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
)

// TestWriteHandleModel drives one file through random sequences of the
// write handle's operations (open with and without O_TRUNC, sequential and
// random writes, reads through O_RDWR, fsync, flush, ftruncate, truncate by
// path, chmod, close) and checks every result against an in-memory model of
// the file: a read returns the model's bytes, and after every fsync, flush
// and close the stored object is exactly the model. The sequences move the
// handle between all its modes (undecided, streaming, staging, committed and
// written again). Seeds are fixed, so a failure names its seed and replays.
// Rename is not among the operations: it is exercised by rename_test.go.
func TestWriteHandleModel(t *testing.T) {
	seeds := 60 // 31 of these failed on the old code, most with EBADF
	if testing.Short() {
		seeds = 15
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runWriteModel(t, uint64(seed)) })
	}
}

func runWriteModel(t *testing.T, seed uint64) {
	ctx := context.Background()
	f, _, st := newTestFS(t, ObjectMetadata, seed%2 == 0)
	rng := rand.New(rand.NewPCG(seed, 11))
	n := newFileNode(f, "f")
	var (
		model  []byte // the file's content as POSIX says it is
		exists bool   // the object has been committed at least once
		mode   uint32 = 0o644
		w      *writeHandle
		trace  []string
	)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\nafter: %s", seed, fmt.Sprintf(format, args...), strings.Join(trace, "; "))
	}
	checkStored := func(what string) {
		t.Helper()
		got := readObj(t, f, "f")
		if !bytes.Equal(got, model) {
			fail("%s: stored %d bytes %s, model %d bytes %s", what, len(got), digest(got), len(model), digest(model))
		}
	}
	setModel := func(off int64, data []byte) {
		if end := int(off) + len(data); end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[off:], data)
	}
	truncModel := func(size int64) {
		if int(size) <= len(model) {
			model = model[:size]
		} else {
			model = append(model, make([]byte, int(size)-len(model))...)
		}
	}
	open := func(trunc bool) {
		var err error
		w, err = f.newWriter(ctx, n, n.currentAttrs(ctx), trunc, true)
		if err != nil {
			fail("open: %v", err)
		}
		if trunc {
			model = model[:0]
		}
	}
	for step := 0; step < 80; step++ {
		if w == nil {
			trunc := !exists || rng.IntN(3) == 0
			trace = append(trace, fmt.Sprintf("open(trunc=%v)", trunc))
			open(trunc)
			continue
		}
		switch op := rng.IntN(100); {
		case op < 35: // write: mostly appends, sometimes anywhere
			off := int64(len(model))
			if rng.IntN(3) == 0 {
				off = rng.Int64N(int64(len(model)) + 70000)
			}
			data := make([]byte, 1+rng.IntN(50000))
			for i := range data {
				data[i] = byte(rng.IntN(256))
			}
			trace = append(trace, fmt.Sprintf("write(%d,%d)", off, len(data)))
			got, errno := w.Write(ctx, data, off)
			if errno != 0 || int(got) != len(data) {
				fail("write(%d, %d bytes) = %d, %v", off, len(data), got, errno)
			}
			setModel(off, data)
		case op < 45: // read back through the O_RDWR handle
			off := rng.Int64N(int64(len(model)) + 1)
			size := 1 + rng.IntN(80000)
			trace = append(trace, fmt.Sprintf("read(%d,%d)", off, size))
			res, errno := w.Read(ctx, make([]byte, size), off)
			if errno != 0 {
				fail("read(%d, %d) = %v", off, size, errno)
			}
			got, _ := res.Bytes(make([]byte, size))
			want := model[off:min(int(off)+size, len(model))]
			if !bytes.Equal(got, want) {
				fail("read(%d, %d): %d bytes %s, model %d bytes %s", off, size, len(got), digest(got), len(want), digest(want))
			}
		case op < 58:
			trace = append(trace, "fsync")
			if errno := w.Fsync(ctx, 0); errno != 0 {
				fail("fsync: %v", errno)
			}
			exists = true
			checkStored("after fsync")
		case op < 63:
			trace = append(trace, "flush")
			if errno := w.Flush(ctx); errno != 0 {
				fail("flush: %v", errno)
			}
			exists = true
			checkStored("after flush")
		case op < 73: // ftruncate
			size := rng.Int64N(int64(len(model)) + 50000)
			if rng.IntN(4) == 0 {
				size = 0
			}
			trace = append(trace, fmt.Sprintf("ftruncate(%d)", size))
			if err := n.setSize(ctx, w, size); err != nil {
				fail("ftruncate(%d): %v", size, err)
			}
			truncModel(size)
		case op < 77 && exists: // truncate(2) by path, with the handle open
			size := rng.Int64N(int64(len(model)) + 50000)
			trace = append(trace, fmt.Sprintf("truncate(%d)", size))
			if err := n.setSize(ctx, nil, size); err != nil {
				fail("truncate(%d): %v", size, err)
			}
			truncModel(size)
		case op < 82 && exists: // chmod
			mode = 0o600 | uint32(rng.IntN(0o100))
			trace = append(trace, fmt.Sprintf("chmod(%o)", mode))
			in := &fuse.SetAttrIn{}
			in.Valid, in.Mode = fuse.FATTR_MODE, mode
			if err := n.setMeta(ctx, in); err != nil {
				fail("chmod: %v", err)
			}
		default: // close(2): FLUSH then RELEASE
			trace = append(trace, "close")
			if errno := w.Flush(ctx); errno != 0 {
				fail("close: %v", errno)
			}
			w.Release(ctx)
			w = nil
			exists = true
			checkStored("after close")
		}
	}
	if w != nil {
		if errno := w.Flush(ctx); errno != 0 {
			fail("final close: %v", errno)
		}
		w.Release(ctx)
	}
	checkStored("at the end")
	info, err := st.Head(ctx, "f")
	if err != nil {
		fail("head: %v", err)
	}
	if a := metadata.ParseAttrs(info.Metadata); a.HasMode && a.Mode != syscall.S_IFREG|mode {
		fail("stored mode %o, want %o", a.Mode, syscall.S_IFREG|mode)
	}
}

// digest names a byte string briefly for a failure message.
func digest(b []byte) string {
	if len(b) <= 16 {
		return fmt.Sprintf("%x", b)
	}
	return fmt.Sprintf("%x…%x", b[:8], b[len(b)-8:])
}
