package fusefs

import (
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestOpenFlags: handles are direct I/O unless the mount serves data
// through the page cache (--page-cache); a kernel that did not grant
// CAP_DIRECT_IO_ALLOW_MMAP gets a warning only where shared mmap is lost.
func TestOpenFlags(t *testing.T) {
	direct := &FS{}
	if got := direct.openFlags(); got != fuse.FOPEN_DIRECT_IO {
		t.Errorf("default open flags %#x, want FOPEN_DIRECT_IO", got)
	}
	cached := &FS{opt: Options{PageCache: true}}
	if got := cached.openFlags(); got != 0 {
		t.Errorf("--page-cache open flags %#x, want 0", got)
	}
	if w := direct.MmapWarning(0); !strings.Contains(w, "ENODEV") || !strings.Contains(w, "--page-cache") {
		t.Errorf("warning without the capability: %q", w)
	}
	if w := direct.MmapWarning(fuse.CAP_DIRECT_IO_ALLOW_MMAP); w != "" {
		t.Errorf("warning with the capability: %q", w)
	}
	if w := cached.MmapWarning(0); w != "" {
		t.Errorf("warning with --page-cache: %q", w)
	}
}
