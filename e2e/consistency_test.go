package e2e

// Two mounts of one bucket: what one writes or deletes the other sees within
// the metadata TTL; parallel writers through both lose nothing; a file open
// for reading stays pinned to the version (ETag) it opened.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// seeWithin is how long a change may take to show on the other mount: the
// TTL is 1s; the rest is slack for a loaded machine, not a timing claim.
const seeWithin = 30 * time.Second

// TestTwoMountsSeeEachOther: with --metadata-ttl 1s, creations, overwrites,
// deletions and new directories made through one mount show in the other.
func TestTwoMountsSeeEachOther(t *testing.T) {
	w := newWorld(t)
	a := w.mount(t, "", "--metadata-ttl", "1s")
	b := w.mount(t, "", "--metadata-ttl", "1s")

	readIs := func(m *mounted, name string, want []byte) func() (bool, string) {
		return func() (bool, string) {
			got, err := os.ReadFile(m.path(name))
			if err != nil {
				return false, err.Error()
			}
			return bytes.Equal(got, want), fmt.Sprintf("%d bytes", len(got))
		}
	}
	gone := func(m *mounted, name string) func() (bool, string) {
		return func() (bool, string) {
			_, err := os.Stat(m.path(name))
			return errors.Is(err, os.ErrNotExist), fmt.Sprint(err)
		}
	}
	listed := func(m *mounted, dir, name string) func() (bool, string) {
		return func() (bool, string) {
			ents, err := os.ReadDir(m.path(dir))
			if err != nil {
				return false, err.Error()
			}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			return slices.Contains(names, name), fmt.Sprint(names)
		}
	}

	// Before b has ever looked, and after it cached a negative lookup.
	if _, err := os.Stat(b.path("f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat before creation: %v", err)
	}
	v1 := randBytesFor(t, 100_000)
	if err := os.WriteFile(a.path("f"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "b to see a's new file", seeWithin, readIs(b, "f", v1))
	pollUntil(t, "b's listing to show a's new file", seeWithin, listed(b, "", "f"))

	v2 := randBytesFor(t, 9<<20+5) // a multipart object this time
	if err := os.WriteFile(a.path("f"), v2, 0o644); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "b to see a's overwrite", seeWithin, readIs(b, "f", v2))

	if err := os.Remove(b.path("f")); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "a to see b's delete", seeWithin, gone(a, "f"))

	if err := os.MkdirAll(b.path("d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	v3 := []byte("in a new directory\n")
	if err := os.WriteFile(b.path("d", "e", "g"), v3, 0o644); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "a to list b's new directory", seeWithin, listed(a, "", "d"))
	pollUntil(t, "a to read b's file in it", seeWithin, readIs(a, "d/e/g", v3))
	if err := os.Remove(a.path("d", "e", "g")); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "b to see a's delete in the new directory", seeWithin, gone(b, "d/e/g"))
}

func randBytesFor(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	r.Read(b)
	return b
}

// TestParallelWritersTwoMounts: 8 goroutines write distinct files, small
// and multipart, half through each of two mounts, into one directory; a
// third mount then finds every file with its exact content and nothing else.
func TestParallelWritersTwoMounts(t *testing.T) {
	w := newWorld(t)
	ms := []*mounted{w.mount(t, "", "--metadata-ttl", "1s"), w.mount(t, "", "--metadata-ttl", "1s")}
	if err := os.Mkdir(ms[0].path("shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	sizes := []int{0, 1, 70_000, 1 << 20, 9<<20 + 1}
	want := map[string][32]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := ms[g%2]
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i, size := range sizes {
				name := fmt.Sprintf("w%d-%d", g, i)
				data := make([]byte, size)
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				if err := os.WriteFile(m.path("shared", name), data, 0o644); err != nil {
					t.Errorf("writer %d: %v", g, err)
					return
				}
				mu.Lock()
				want[name] = sha256.Sum256(data)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	third := w.mount(t, "")
	ents, err := os.ReadDir(third.path("shared"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Errorf("third mount lists %d files %v, want %d %v", len(got), got, len(names), names)
	}
	for _, n := range names {
		b, err := os.ReadFile(third.path("shared", n))
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if sha256.Sum256(b) != want[n] {
			t.Errorf("%s: content differs (%d bytes)", n, len(b))
		}
	}
}

// TestOpenFilePinnedToVersion: a 20 MB file opened on mount A, half read,
// then overwritten through mount B: the rest read from A is the rest of the
// old version, or the read fails with ESTALE; never bytes of the new one.
// Both read paths are covered: the sequential stream and ranged reads
// (pread far from the current position).
func TestOpenFilePinnedToVersion(t *testing.T) {
	w := newWorld(t)
	a := w.mount(t, "")
	b := w.mount(t, "")
	const size, half = 20 << 20, 10 << 20
	for _, mode := range []string{"sequential", "ranged"} {
		t.Run(mode, func(t *testing.T) {
			name := "pinned-" + mode
			old := randBytesFor(t, size)
			if err := os.WriteFile(a.path(name), old, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(a.path(name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			first := make([]byte, half)
			if mode == "sequential" {
				_, err = io.ReadFull(f, first)
			} else {
				_, err = f.ReadAt(first[:1<<20], 3<<20) // random reads: ranged GETs
				first = first[:1<<20]
			}
			if err != nil {
				t.Fatal(err)
			}
			if mode == "sequential" && !bytes.Equal(first, old[:half]) ||
				mode == "ranged" && !bytes.Equal(first, old[3<<20:4<<20]) {
				t.Fatal("first read differs from the old version")
			}
			newer := randBytesFor(t, size+1) // different content, different size
			if err := os.WriteFile(b.path(name), newer[:size], 0o644); err != nil {
				t.Fatal(err)
			}
			var rest []byte
			var off int64
			if mode == "sequential" {
				off = half
				rest, err = io.ReadAll(f)
			} else {
				off = 15 << 20
				rest = make([]byte, 1<<20)
				var n int
				n, err = f.ReadAt(rest, off)
				rest = rest[:n]
			}
			newPart := newer[off : off+int64(len(rest))]
			oldPart := old[off : off+int64(len(rest))]
			switch {
			case len(rest) > 0 && bytes.Equal(rest, newPart):
				t.Fatalf("read %d bytes of the NEW version through a handle opened on the old one", len(rest))
			case !bytes.Equal(rest, oldPart):
				t.Fatalf("read %d bytes that are neither the old version nor the new", len(rest))
			case err != nil && !errors.Is(err, syscall.ESTALE):
				t.Fatalf("after %d bytes of the old version: %v, want ESTALE", len(rest), err)
			case err != nil:
				t.Logf("%s: ESTALE after %d more bytes of the old version", mode, len(rest))
			case mode == "sequential" && len(rest) != size-half:
				t.Fatalf("sequential: %d bytes then EOF, want the old version's %d", len(rest), size-half)
			default:
				t.Logf("%s: the old version to the end (%d bytes)", mode, len(rest))
			}
			// A new open sees the new version.
			f.Close()
			pollUntil(t, "a new open on A to see the new version", seeWithin, func() (bool, string) {
				got, err := os.ReadFile(a.path(name))
				return err == nil && bytes.Equal(got, newer[:size]), fmt.Sprint(len(got), err)
			})
		})
	}
}

// names lists dir, sorted.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

// TestListingFollowsOwnChanges: with listings cached for a minute, the
// creates, mkdirs and unlinks made through the mount show in its own
// listings and lookups at once (they update the cached listing rather than
// wait for the TTL), and a fresh mount lists the same.
func TestListingFollowsOwnChanges(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "", "--metadata-ttl", "60s")
	dir := m.path("d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Fatalf("new directory lists %v", got)
	}
	var want []string
	for i := range 30 {
		name := fmt.Sprintf("f%02d", i)
		if err := os.WriteFile(dir+"/"+name, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
		if i%10 == 9 {
			if got := names(t, dir); !slices.Equal(got, want) {
				t.Fatalf("after %d creates: %v", i+1, got)
			}
		}
	}
	if err := os.Mkdir(dir+"/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range want[:10] {
		if err := os.Remove(dir + "/" + name); err != nil {
			t.Fatal(err)
		}
	}
	want = append(slices.Clone(want[10:]), "sub")
	slices.Sort(want)
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after mkdir and unlinks: %v, want %v", got, want)
	}
	if _, err := os.Stat(dir + "/f00"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of an unlinked file: %v", err)
	}
	if b, err := os.ReadFile(dir + "/f29"); err != nil || string(b) != "f29" {
		t.Errorf("read of a created file: %q %v", b, err)
	}
	if fi, err := os.Stat(dir + "/sub"); err != nil || !fi.IsDir() {
		t.Errorf("stat of the new subdirectory: %v", err)
	}
	other := w.mount(t, "")
	if got := names(t, other.path("d")); !slices.Equal(got, want) {
		t.Errorf("another mount lists %v, want %v", got, want)
	}
}

// TestOpenFileSurvivesMetadataChange: a 20 MB file opened on mount A, partly
// read, then chmod-ed and utimes-ed through mount B (a metadata copy of the
// object onto itself, which gives it a new ETag but the same body): A reads
// on to the end, no ESTALE, on both read paths. Before, the handle's next GET
// pinned to the old ETag failed, and so did diff -r right after rsync
// --inplace (its utimes lands a second after the close, lazyattr.go).
func TestOpenFileSurvivesMetadataChange(t *testing.T) {
	w := newWorld(t)
	a := w.mount(t, "")
	b := w.mount(t, "")
	const size, half = 20 << 20, 10 << 20
	for _, mode := range []string{"sequential", "ranged"} {
		t.Run(mode, func(t *testing.T) {
			name := "meta-" + mode
			data := randBytesFor(t, size)
			if err := os.WriteFile(a.path(name), data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(a.path(name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var firstOK bool
			if mode == "sequential" {
				first := make([]byte, 1<<20)
				_, err = io.ReadFull(f, first)
				firstOK = bytes.Equal(first, data[:1<<20])
			} else {
				first := make([]byte, 1<<20)
				_, err = f.ReadAt(first, 3<<20)
				firstOK = bytes.Equal(first, data[3<<20:4<<20])
			}
			if err != nil || !firstOK {
				t.Fatalf("first read: %v (content equal: %v)", err, firstOK)
			}
			if err := os.Chmod(b.path(name), 0o600); err != nil {
				t.Fatal(err)
			}
			when := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
			if err := os.Chtimes(b.path(name), when, when); err != nil {
				t.Fatal(err)
			}
			if mode == "sequential" {
				rest, err := io.ReadAll(f)
				if err != nil {
					t.Fatalf("reading on after the chmod, %d bytes: %v", len(rest), err)
				}
				if !bytes.Equal(rest, data[1<<20:]) {
					t.Fatalf("read %d bytes after the chmod that differ from the file's", len(rest))
				}
			} else {
				for _, off := range []int64{15 << 20, size - 1<<20, 0} {
					got := make([]byte, 1<<20)
					if _, err := f.ReadAt(got, off); err != nil && err != io.EOF {
						t.Fatalf("pread at %d after the chmod: %v", off, err)
					}
					if !bytes.Equal(got, data[off:off+1<<20]) {
						t.Fatalf("pread at %d after the chmod differs from the file", off)
					}
				}
			}
		})
	}
}
