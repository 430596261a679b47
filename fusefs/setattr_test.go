package fusefs

import (
	"bytes"
	"context"
	"maps"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
)

func setAttrIn(valid uint32, mode, uid, gid uint32, mtime time.Time) *fuse.SetAttrIn {
	in := &fuse.SetAttrIn{}
	in.Valid = valid
	in.Mode = mode
	in.Uid, in.Gid = uid, gid
	in.Mtime, in.Mtimensec = uint64(mtime.Unix()), uint32(mtime.Nanosecond())
	return in
}

func TestAttrChangeApply(t *testing.T) {
	mt := time.Unix(1700000000, 123456789)
	owned := metadata.Attrs{Mode: syscall.S_IFREG | 0o644, HasMode: true, UID: 10, GID: 20, HasOwner: true}
	for _, tc := range []struct {
		name string
		in   *fuse.SetAttrIn
		cur  metadata.Attrs
		want metadata.Attrs
	}{
		{"nothing", setAttrIn(0, 0, 0, 0, mt), owned, owned},
		{"chmod", setAttrIn(fuse.FATTR_MODE, 0o4755, 0, 0, mt), owned,
			metadata.Attrs{Mode: syscall.S_IFREG | 0o4755, HasMode: true, UID: 10, GID: 20, HasOwner: true}},
		{"chmod without a stored mode", setAttrIn(fuse.FATTR_MODE, 0o600, 0, 0, mt), metadata.Attrs{},
			metadata.Attrs{Mode: syscall.S_IFREG | 0o600, HasMode: true}},
		{"chmod keeps the type", setAttrIn(fuse.FATTR_MODE, 0o700, 0, 0, mt), metadata.Attrs{Mode: syscall.S_IFLNK | 0o777, HasMode: true, Symlink: true},
			metadata.Attrs{Mode: syscall.S_IFLNK | 0o700, HasMode: true, Symlink: true}},
		{"chown uid keeps gid", setAttrIn(fuse.FATTR_UID, 0, 7, 99, mt), owned,
			metadata.Attrs{Mode: syscall.S_IFREG | 0o644, HasMode: true, UID: 7, GID: 20, HasOwner: true}},
		{"chgrp with no owner takes the mount uid", setAttrIn(fuse.FATTR_GID, 0, 99, 8, mt), metadata.Attrs{},
			metadata.Attrs{UID: 1000, GID: 8, HasOwner: true}},
		{"mtime", setAttrIn(fuse.FATTR_MTIME, 0, 0, 0, mt), metadata.Attrs{},
			metadata.Attrs{Mtime: mt, HasMtime: true}},
	} {
		before := time.Now()
		got := changeFrom(tc.in).apply(tc.cur, 1000, 1000)
		// Every change sets the ctime to the time it was asked for.
		if changed := tc.in.Valid != 0; got.HasCtime != changed || (changed && got.Ctime.Before(before)) {
			t.Errorf("%s: ctime %v (set: %v), want now if anything changed", tc.name, got.Ctime, got.HasCtime)
		}
		got.Ctime, got.HasCtime = time.Time{}, false
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestAttrChangeThen(t *testing.T) {
	a := changeFrom(setAttrIn(fuse.FATTR_MODE|fuse.FATTR_UID, 0o600, 5, 0, time.Time{}))
	b := changeFrom(setAttrIn(fuse.FATTR_MODE|fuse.FATTR_MTIME, 0o640, 0, 0, time.Unix(5, 0)))
	c := a.then(b)
	if !c.setMode || c.perm != 0o640 || !c.setUID || c.uid != 5 || c.setGID || !c.setMtime || !c.mtime.Equal(time.Unix(5, 0)) {
		t.Errorf("then = %+v", c)
	}
}

// chmod, chown and utimes are persisted by a copy that keeps every envelope
// key byte for byte, and getattr shows them.
func TestSetMetaPersists(t *testing.T) {
	for _, mode := range []StorageMode{ObjectMetadata, InstructionFile} {
		ctx := context.Background()
		f, _, st := newTestFS(t, mode, true)
		f.opt.UID, f.opt.GID = 1000, 1000
		writeObj(t, f, "f", []byte("content"))
		before := maps.Clone(rawMeta(t, st, "f"))
		n := newFileNode(f, "f")
		mt := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
		in := setAttrIn(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID|fuse.FATTR_MTIME, 0o600, 42, 43, mt)
		var out fuse.AttrOut
		if errno := n.Setattr(ctx, nil, in, &out); errno != 0 {
			t.Fatal(errno)
		}
		after := rawMeta(t, st, "f")
		if !maps.Equal(envelopeKeys(after), envelopeKeys(before)) {
			t.Errorf("envelope keys changed:\n%v\n%v", envelopeKeys(before), envelopeKeys(after))
		}
		if mode == ObjectMetadata && len(envelopeKeys(after)) == 0 {
			t.Fatal("no envelope in metadata")
		}
		a := metadata.ParseAttrs(after)
		if a.Mode != syscall.S_IFREG|0o600 || a.UID != 42 || a.GID != 43 || !a.Mtime.Equal(mt) || a.InstructionFile != (mode == InstructionFile) {
			t.Errorf("stored attrs %+v", a)
		}
		if out.Mode != syscall.S_IFREG|0o600 || out.Uid != 42 || out.Gid != 43 || out.Mtime != uint64(mt.Unix()) || out.Mtimensec != 7 {
			t.Errorf("getattr after setattr: %+v", out.Attr)
		}
		if got := readObj(t, f, "f"); string(got) != "content" {
			t.Errorf("content after setattr: %q", got)
		}
	}
}

// A change made while a new version streams up is applied once it commits.
func TestSetMetaWhileStreaming(t *testing.T) {
	ctx := context.Background()
	f, _, st := newTestFS(t, ObjectMetadata, true)
	n := newFileNode(f, "s")
	w, err := f.newWriter(ctx, n, fileAttrs(0o644), true, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, errno := w.Write(ctx, []byte("streamed"), 0); errno != 0 {
		t.Fatal(errno)
	}
	mt := time.Unix(1234567890, 0)
	if err := n.setMeta(ctx, setAttrIn(fuse.FATTR_MODE|fuse.FATTR_MTIME, 0o640, 0, 0, mt)); err != nil {
		t.Fatal(err)
	}
	var out fuse.AttrOut
	if errno := n.Getattr(ctx, nil, &out); errno != 0 || out.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("getattr while streaming: %v %o", errno, out.Mode)
	}
	if errno := w.Flush(ctx); errno != 0 {
		t.Fatal(errno)
	}
	w.Release(ctx)
	if errno := n.Getattr(ctx, nil, &out); errno != 0 || out.Mode != syscall.S_IFREG|0o640 {
		t.Errorf("getattr after close, change deferred: %v %o", errno, out.Mode)
	}
	if err := f.flushAttrs(ctx, "s"); err != nil { // what fsync does
		t.Fatal(err)
	}
	a := metadata.ParseAttrs(rawMeta(t, st, "s"))
	if a.Mode != syscall.S_IFREG|0o640 || !a.Mtime.Equal(mt) {
		t.Errorf("stored attrs %+v", a)
	}
	if got := readObj(t, f, "s"); !bytes.Equal(got, []byte("streamed")) {
		t.Errorf("content %q", got)
	}
	if err := f.flushAttrs(ctx, "s"); err != nil {
		t.Errorf("second flush: %v", err)
	}
}
