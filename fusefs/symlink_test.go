package fusefs

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/metadata"
)

func TestSymlinkRoundTrip(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		ctx := context.Background()
		f, _, st := newTestFS(t, ObjectMetadata, encrypt)
		for _, target := range []string{"x", "../a/b c", strings.Repeat("d/", 2000)} {
			if _, err := f.putSymlink(ctx, "l", target, symlinkAttrs()); err != nil {
				t.Fatal(err)
			}
			meta := rawMeta(t, st, "l")
			if meta[metadata.AttrSymlink] != "1" {
				t.Errorf("metadata %v lacks %s: 1", meta, metadata.AttrSymlink)
			}
			// A one-byte target appears in 17 random bytes by chance.
			if encrypt && len(target) >= 8 && strings.Contains(string(getBody(t, st, "l")), target) {
				t.Error("target stored in the clear")
			}
			n := newSymlinkNode(f, "l")
			got, errno := n.Readlink(ctx)
			if errno != 0 || string(got) != target {
				t.Errorf("readlink = %q, %v; want %q", got, errno, target)
			}
			var out fuse.AttrOut
			if errno := n.Getattr(ctx, nil, &out); errno != 0 || out.Mode != syscall.S_IFLNK|0o777 || out.Size != uint64(len(target)) {
				t.Errorf("getattr = %v, mode %o size %d", errno, out.Mode, out.Size)
			}
		}
	}
}

// A tampered symlink body fails readlink with EIO rather than returning
// unauthenticated bytes.
func TestSymlinkTampered(t *testing.T) {
	ctx := context.Background()
	f, _, st := newTestFS(t, ObjectMetadata, true)
	if _, err := f.putSymlink(ctx, "l", "target", symlinkAttrs()); err != nil {
		t.Fatal(err)
	}
	body := getBody(t, st, "l")
	body[0] ^= 1
	if _, err := st.Put(ctx, "l", body, rawMeta(t, st, "l")); err != nil {
		t.Fatal(err)
	}
	f.putStat("l", nil)
	if got, errno := newSymlinkNode(f, "l").Readlink(ctx); errno != syscall.EIO {
		t.Errorf("readlink of tampered body = %q, %v; want EIO", got, errno)
	}
}

func TestSymlinkSetattr(t *testing.T) {
	ctx := context.Background()
	f, _, st := newTestFS(t, ObjectMetadata, true)
	if _, err := f.putSymlink(ctx, "l", "t", symlinkAttrs()); err != nil {
		t.Fatal(err)
	}
	var out fuse.AttrOut
	if errno := newSymlinkNode(f, "l").Setattr(ctx, nil, setAttrIn(fuse.FATTR_UID|fuse.FATTR_GID|fuse.FATTR_MODE, 0o600, 3, 4, zeroTime), &out); errno != 0 {
		t.Fatal(errno)
	}
	a := metadata.ParseAttrs(rawMeta(t, st, "l"))
	if !a.Symlink || a.UID != 3 || a.GID != 4 || a.Mode != syscall.S_IFLNK|0o777 {
		t.Errorf("attrs %+v", a)
	}
}

func TestLinkNotSupported(t *testing.T) {
	f, root, _ := newTestFS(t, ObjectMetadata, false)
	if _, errno := root.Link(context.Background(), newFileNode(f, "a"), "b", &fuse.EntryOut{}); errno != syscall.ENOTSUP {
		t.Errorf("link = %v", errno)
	}
}
