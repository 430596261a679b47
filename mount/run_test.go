package mount

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// eioDir is a directory whose listing fails.
type eioDir struct{ fs.Inode }

func (*eioDir) Readdir(context.Context) (fs.DirStream, syscall.Errno) { return nil, syscall.EIO }

func (*eioDir) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o755
	return 0
}

// eioRoot holds one eioDir, "sub".
type eioRoot struct{ fs.Inode }

func (r *eioRoot) OnAdd(ctx context.Context) {
	r.AddChild("sub", r.NewPersistentInode(ctx, &eioDir{}, fs.StableAttr{Mode: syscall.S_IFDIR}), false)
}

// TestCheckMountpointUnreadable: a mountpoint whose listing fails is
// refused, not taken for empty (and so mounted over whatever it holds).
// The unreadable directory is a real FUSE directory whose READDIR is EIO.
func TestCheckMountpointUnreadable(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no FUSE: %v", err)
		}
		t.Skipf("no FUSE: %v", err)
	}
	dir := t.TempDir()
	srv, err := fs.Mount(dir, &eioRoot{}, &fs.Options{})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { srv.Unmount() })
	sub := filepath.Join(dir, "sub")
	if _, err := os.ReadDir(sub); err == nil {
		t.Fatal("the listing of the test directory did not fail")
	}
	err = checkMountpoint(sub, false)
	if err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("checkMountpoint of an unreadable directory = %v, want a refusal", err)
	}
	if err := checkMountpoint(t.TempDir(), false); err != nil {
		t.Errorf("checkMountpoint of an empty directory: %v", err)
	}
}
