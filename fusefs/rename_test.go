package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

func TestRenamedKey(t *testing.T) {
	for _, tc := range []struct {
		key, src, dst, want string
		ok                  bool
	}{
		{"a", "a", "b", "b", true},
		{"a/", "a", "b", "b/", true},
		{"a/x", "a", "b/c", "b/c/x", true},
		{"a/x/y/", "a", "z", "z/x/y/", true},
		{"ab", "a", "b", "", false}, // a sibling sharing a prefix
		{"ab/x", "a", "b", "", false},
		{"x/a", "a", "b", "", false},
		{"d/a.instruction", "d/a", "d/b", "", false}, // files' instruction files move explicitly
	} {
		got, ok := renamedKey(tc.key, tc.src, tc.dst)
		if got != tc.want || ok != tc.ok {
			t.Errorf("renamedKey(%q, %q, %q) = %q, %v; want %q, %v", tc.key, tc.src, tc.dst, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRenameTargets(t *testing.T) {
	keys := []string{"d/", "d/a", "d/a.instruction", "d/e/", "d/s/t/u", "d/s/t/u.instruction"}
	moves, err := renameTargets(keys, "d/", "n/m/")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"d/", "n/m/"}, {"d/a", "n/m/a"}, {"d/a.instruction", "n/m/a.instruction"}, {"d/e/", "n/m/e/"}, {"d/s/t/u", "n/m/s/t/u"}, {"d/s/t/u.instruction", "n/m/s/t/u.instruction"}}
	if len(moves) != len(want) {
		t.Fatalf("got %v", moves)
	}
	for i := range want {
		if moves[i] != want[i] {
			t.Errorf("move %d = %v, want %v", i, moves[i], want[i])
		}
	}
	if _, err := renameTargets([]string{"d/a", "e/b"}, "d/", "n/"); err == nil {
		t.Error("a listed key outside the prefix was accepted")
	}
}

func TestTreeDirs(t *testing.T) {
	got := treeDirs([]string{"d/a", "d/s/t/u", "d/s/", "d/e/", "d/s/t/v.instruction"}, "d/")
	want := []string{"d/s/t/", "d/e/", "d/s/", "d/"}
	if !equalStrings(got, want) {
		t.Errorf("treeDirs = %v, want %v", got, want)
	}
}

func TestRenameFile(t *testing.T) {
	for _, mode := range []StorageMode{ObjectMetadata, InstructionFile} {
		for _, over := range []bool{false, true} {
			name := map[StorageMode]string{ObjectMetadata: "metadata", InstructionFile: "instruction"}[mode]
			if over {
				name += "/over"
			}
			t.Run(name, func(t *testing.T) {
				ctx := context.Background()
				f, root, st := newTestFS(t, mode, true)
				body := bytes.Repeat([]byte("csefs rename "), 1000)
				writeObj(t, f, "a", body)
				if over {
					writeObj(t, f, "b", []byte("old"))
				}
				before := maps.Clone(rawMeta(t, st, "a"))
				var instrBefore []byte
				if mode == InstructionFile {
					instrBefore = getBody(t, st, metadata.InstructionKey("a"))
				}
				if errno := root.Rename(ctx, "a", root, "b", 0); errno != 0 {
					t.Fatalf("rename: %v", errno)
				}
				if err := f.awaitDeletesUnder(ctx, ""); err != nil { // lazydelete.go
					t.Fatal(err)
				}
				if exists(t, st, "a") || exists(t, st, metadata.InstructionKey("a")) {
					t.Error("source (or its instruction file) still exists")
				}
				if !maps.Equal(rawMeta(t, st, "b"), before) {
					t.Errorf("metadata changed:\n%v\n%v", before, rawMeta(t, st, "b"))
				}
				if mode == InstructionFile && !bytes.Equal(getBody(t, st, metadata.InstructionKey("b")), instrBefore) {
					t.Error("instruction file not moved unchanged")
				}
				if got := readObj(t, f, "b"); !bytes.Equal(got, body) {
					t.Errorf("content after rename: %d bytes, want %d", len(got), len(body))
				}
			})
		}
	}
}

// A plaintext object moved over an object with an instruction file must not
// inherit that instruction file as its envelope.
func TestRenamePlaintextOverInstruction(t *testing.T) {
	ctx := context.Background()
	f, root, st := newTestFS(t, InstructionFile, true)
	writeObj(t, f, "enc", []byte("secret"))
	if _, err := st.Put(ctx, "plain", []byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	if errno := root.Rename(ctx, "plain", root, "enc", 0); errno != 0 {
		t.Fatalf("rename: %v", errno)
	}
	if exists(t, st, metadata.InstructionKey("enc")) {
		t.Error("stale instruction file left beside the moved plaintext")
	}
	if got := readObj(t, f, "enc"); string(got) != "hello" {
		t.Errorf("read %q", got)
	}
}

func TestRenameDirTree(t *testing.T) {
	for _, mode := range []StorageMode{ObjectMetadata, InstructionFile} {
		t.Run(map[StorageMode]string{ObjectMetadata: "metadata", InstructionFile: "instruction"}[mode], func(t *testing.T) {
			ctx := context.Background()
			f, root, st := newTestFS(t, mode, true)
			files := map[string]string{"d/a": "1", "d/s/b": "22", "d/s/t/c": "333"}
			for k, v := range files {
				writeObj(t, f, k, []byte(v))
			}
			for _, m := range []string{"d/", "d/empty/", "d/s/"} {
				if _, err := st.Put(ctx, m, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			before := listAll(t, st, "d/")
			if errno := root.Rename(ctx, "d", root, "n", 0); errno != 0 {
				t.Fatalf("rename: %v", errno)
			}
			if left := listAll(t, st, "d/"); len(left) != 0 {
				t.Errorf("left behind: %v", left)
			}
			var want []string
			for _, k := range before {
				nk, _ := movedKey(k, "d/", "n/")
				want = append(want, nk)
			}
			sort.Strings(want)
			if got := listAll(t, st, "n/"); !equalStrings(got, want) {
				t.Errorf("moved keys %v, want %v", got, want)
			}
			for k, v := range files {
				nk, _ := movedKey(k, "d/", "n/")
				if got := readObj(t, f, nk); string(got) != v {
					t.Errorf("%s: %q, want %q", nk, got, v)
				}
			}
		})
	}
}

func TestRenameErrors(t *testing.T) {
	ctx := context.Background()
	f, root, st := newTestFS(t, ObjectMetadata, true)
	writeObj(t, f, "file", []byte("x"))
	writeObj(t, f, "other", []byte("y"))
	writeObj(t, f, "full/x", []byte("z"))
	writeObj(t, f, "dir/x", []byte("w"))
	if _, err := st.Put(ctx, "empty/", nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, src, dst string
		flags          uint32
		want           syscall.Errno
	}{
		{"noreplace", "file", "other", renameNoReplace, syscall.EEXIST},
		{"exchange", "file", "other", renameExchange, syscall.EINVAL},
		{"whiteout", "file", "other", renameWhiteout, syscall.EINVAL},
		{"file over dir", "file", "dir", 0, syscall.EISDIR},
		{"dir over file", "dir", "file", 0, syscall.ENOTDIR},
		{"dir over non-empty dir", "dir", "full", 0, syscall.ENOTEMPTY},
		{"dir noreplace over empty dir", "dir", "empty", renameNoReplace, syscall.EEXIST},
		{"missing", "nothing", "x", 0, syscall.ENOENT},
		{"to an instruction name", "file", "f.instruction", 0, syscall.EINVAL},
	} {
		if errno := root.Rename(ctx, tc.src, root, tc.dst, tc.flags); errno != tc.want {
			t.Errorf("%s: rename %s %s = %v, want %v", tc.name, tc.src, tc.dst, errno, tc.want)
		}
	}
	// Nothing moved.
	for _, k := range []string{"file", "other", "full/x", "dir/x", "empty/"} {
		if !exists(t, st, k) {
			t.Errorf("%s gone after refused renames", k)
		}
	}
	// A directory over an empty directory replaces it.
	if errno := root.Rename(ctx, "dir", root, "empty", 0); errno != 0 {
		t.Fatalf("dir over empty dir: %v", errno)
	}
	if got := readObj(t, f, "empty/x"); string(got) != "w" {
		t.Errorf("read %q", got)
	}
	// Into itself.
	sub := newDirNode(f, "empty/")
	if errno := root.Rename(ctx, "empty", sub, "y", 0); errno != syscall.EINVAL {
		t.Errorf("dir into itself: %v", errno)
	}
	// Read-only.
	f.opt.ReadOnly = true
	if errno := root.Rename(ctx, "file", root, "z", 0); errno != syscall.EROFS {
		t.Errorf("read-only: %v", errno)
	}
}

// Moving a file out of a directory that exists only through it keeps the
// directory.
func TestRenameKeepsSourceDir(t *testing.T) {
	ctx := context.Background()
	f, root, st := newTestFS(t, ObjectMetadata, false)
	writeObj(t, f, "x/only", []byte("1"))
	x := newDirNode(f, "x/")
	if errno := x.Rename(ctx, "only", root, "moved", 0); errno != 0 {
		t.Fatal(errno)
	}
	if !exists(t, st, "x/") {
		t.Error("source directory vanished")
	}
	if got := readObj(t, f, "moved"); string(got) != "1" {
		t.Errorf("read %q", got)
	}
}

// Moving the last file out of a directory with a marker leaves the marker's
// metadata (mode, owner) as it was.
func TestRenameKeepsSourceDirMarker(t *testing.T) {
	ctx := context.Background()
	f, root, st := newTestFS(t, ObjectMetadata, false)
	meta := map[string]string{}
	want := metadata.Attrs{Mode: syscall.S_IFDIR | 0o1777, HasMode: true, UID: 65534, GID: 65534, HasOwner: true}
	want.Apply(meta)
	if _, err := st.Put(ctx, "x/", nil, meta); err != nil {
		t.Fatal(err)
	}
	writeObj(t, f, "x/only", []byte("1"))
	x := newDirNode(f, "x/")
	if errno := x.Rename(ctx, "only", root, "moved", 0); errno != 0 {
		t.Fatal(errno)
	}
	info, err := st.Head(ctx, "x/")
	if err != nil {
		t.Fatal(err)
	}
	got := metadata.ParseAttrs(info.Metadata)
	if got.Mode != want.Mode || got.UID != want.UID || got.GID != want.GID {
		t.Errorf("marker after the rename: mode %o owner %d:%d, want %o %d:%d", got.Mode, got.UID, got.GID, want.Mode, want.UID, want.GID)
	}
}

// A file whose new version is streaming up cannot be moved: the multipart
// upload cannot change its key.
func TestRenameBusyWhileStreaming(t *testing.T) {
	ctx := context.Background()
	f, root, st := newTestFS(t, ObjectMetadata, true)
	n := newFileNode(f, "d/new")
	w, err := f.newWriter(ctx, n, fileAttrs(0o644), true, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, errno := w.Write(ctx, []byte("data"), 0); errno != 0 {
		t.Fatal(errno)
	}
	writeObj(t, f, "d/old", []byte("1"))
	for _, src := range []string{"d/new", "d"} {
		dir := root
		name := src
		if src == "d/new" {
			dir, name = newDirNode(f, "d/"), "new"
		}
		if errno := dir.Rename(ctx, name, root, "elsewhere", 0); errno != syscall.EBUSY {
			t.Errorf("rename %s while streaming: %v, want EBUSY", src, errno)
		}
	}
	if errno := w.Flush(ctx); errno != 0 {
		t.Fatal(errno)
	}
	w.Release(ctx)
	if errno := root.Rename(ctx, "d", root, "e", 0); errno != 0 {
		t.Fatalf("rename after close: %v", errno)
	}
	if got := readObj(t, f, "e/new"); string(got) != "data" {
		t.Errorf("read %q", got)
	}
	if exists(t, st, "d/new") {
		t.Error("source left")
	}
}

func listAll(t *testing.T, st objectstore.Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := st.List(context.Background(), prefix, "", func(p objectstore.ListPage) error {
		for _, o := range p.Objects {
			keys = append(keys, o.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

func getBody(t *testing.T, st objectstore.Store, key string) []byte {
	t.Helper()
	rc, _, err := st.Get(context.Background(), key, objectstore.GetOptions{Length: -1})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// newTestFS is a filesystem over a fresh local store, with a keyring
// provider when encrypt is set.
func newTestFS(t testing.TB, mode StorageMode, encrypt bool) (*FS, *dirNode, objectstore.Store) {
	t.Helper()
	st, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opt := Options{
		Store: st, StorageMode: mode, URIPrefix: "file:///test/", StagingDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if encrypt {
		p, err := cse.NewKeyringProvider([]cse.MasterKey{{Name: "k", AES: bytes.Repeat([]byte{7}, 32)}}, "k")
		if err != nil {
			t.Fatal(err)
		}
		opt.Provider = p
	}
	f, root, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	return f, root.(*dirNode), st
}

// writeObj stores body at key through the upload path.
func writeObj(t testing.TB, f *FS, key string, body []byte) {
	t.Helper()
	ctx := context.Background()
	u, err := f.beginUpload(ctx, key, fileAttrs(0o644))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(body); err != nil {
		t.Fatal(err)
	}
	if _, err := u.commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// readObj returns key's authenticated plaintext as the filesystem reads it.
func readObj(t *testing.T, f *FS, key string) []byte {
	t.Helper()
	ctx := context.Background()
	f.putStat(key, nil)
	o, err := f.head(ctx, key)
	if err != nil {
		t.Fatalf("head %s: %v", key, err)
	}
	r, err := f.newReaderNoPreload(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release(ctx)
	b, err := r.readAll(ctx)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

// rawMeta returns key's stored metadata, or nil if it does not exist.
func rawMeta(t *testing.T, st objectstore.Store, key string) map[string]string {
	t.Helper()
	info, err := st.Head(context.Background(), key)
	if errors.Is(err, objectstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if info.Metadata == nil {
		return map[string]string{}
	}
	return info.Metadata
}

func exists(t *testing.T, st objectstore.Store, key string) bool {
	t.Helper()
	return rawMeta(t, st, key) != nil
}

// envelopeKeys are the x-amz-* entries of meta.
func envelopeKeys(meta map[string]string) map[string]string {
	env := map[string]string{}
	for k, v := range meta {
		if len(k) > 6 && k[:6] == "x-amz-" {
			env[k] = v
		}
	}
	return env
}

// A file's rename keeps the directory listings usable and updates them
// (rsync renames each temp file): the rename takes a name its fresh listing
// lacks as free, without a LIST and HEAD of it, and the lookups after it
// are answered by the listing. (Before, every rename dropped every listing,
// and each later lookup cost a LIST and a HEAD.)
func TestRenameFileKeepsListing(t *testing.T) {
	f, root, st := newTestFS(t, ObjectMetadata, true)
	cs := &countingStore{Store: st}
	f.store = cs
	f.opt.MetadataTTL = time.Hour
	ctx := context.Background()
	writeObj(t, f, ".a.tmp", []byte("a"))
	if _, _, err := f.listDir(ctx, "", true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.settleRenames(ctx, "x", "y"); err != nil { // its LIST of intents is kept for the TTL
		t.Fatal(err)
	}
	lists, heads := cs.lists.Load(), cs.heads.Load()
	if errno := root.Rename(ctx, ".a.tmp", root, "a", 0); errno != 0 {
		t.Fatalf("rename: %v", errno)
	}
	if n := cs.lists.Load() - lists; n != 0 {
		t.Errorf("the rename made %d LISTs; the listing says the destination is free", n)
	}
	if n := cs.heads.Load() - heads; n != 0 {
		t.Errorf("the rename made %d HEADs; this mount wrote the source", n)
	}
	for name, want := range map[string]entryKind{".a.tmp": entryNone, "a": entryFile, "other": entryNone} {
		k, ok, _ := f.listed("", name)
		if !ok || k != want {
			t.Errorf("after the rename, listed(%q) = %v, %v; want %v from a usable listing", name, k, ok, want)
		}
	}
	if got := readObj(t, f, "a"); string(got) != "a" {
		t.Fatalf("renamed content %q", got)
	}
}
