package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// harness adapts one Store implementation to the conformance suite.
type harness struct {
	// newStore returns a store on a fresh, empty bucket; pageSize 0 means
	// the default listing page size.
	newStore func(t *testing.T, pageSize int) Store
	// partSize is the Writer part size of the stores newStore returns;
	// multi-part tests write a few parts of it.
	partSize int
	// failing returns a store on s's bucket whose Writers fail after the
	// first part (or first write).
	failing func(t *testing.T, s Store) Store
	// incomplete counts unfinished uploads of key left in s's bucket (or
	// of any key, where the store can tell).
	incomplete func(t *testing.T, s Store, key string) int
	// prefixed, if set, returns stores on one bucket with the given prefixes.
	prefixed func(t *testing.T, prefixes ...string) []Store
}

// runConformance runs the Store contract tests against h.
func runConformance(t *testing.T, h harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, harness)
	}{
		{"Check", testCheck},
		{"RoundTrip", testRoundTrip},
		{"Ranges", testRanges},
		{"IfMatch", testIfMatch},
		{"NotFound", testNotFound},
		{"List", testList},
		{"ListPagination", testListPagination},
		{"WriterSmall", testWriterSmall},
		{"WriterMultipart", testWriterMultipart},
		{"WriterAbort", testWriterAbort},
		{"WriterFailure", testWriterFailure},
		{"Copy", testCopy},
		{"CopyIfMatch", testCopyIfMatch},
		{"CopySource", testCopySource},
		{"CopyIfMatchRace", testCopyIfMatchRace},
		{"Delete", testDelete},
		{"PrefixIsolation", testPrefixIsolation},
		{"ConcurrentWriters", testConcurrentWriters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustPut(t *testing.T, s Store, key string, body []byte, meta map[string]string) *Info {
	t.Helper()
	info, err := s.Put(context.Background(), key, body, meta)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return info
}

func mustGet(t *testing.T, s Store, key string, opt GetOptions) ([]byte, *Info) {
	t.Helper()
	rc, info, err := s.Get(context.Background(), key, opt)
	if err != nil {
		t.Fatalf("Get(%q, %+v): %v", key, opt, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", key, err)
	}
	return b, info
}

func testCheck(t *testing.T, h harness) {
	if err := h.newStore(t, 0).Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func testRoundTrip(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	body := randBytes(1, 1000)
	meta := map[string]string{"X-Amz-Key-V2": "a2V5", "Mixed-Case": "Value", "lower": "v"}
	want := map[string]string{"x-amz-key-v2": "a2V5", "mixed-case": "Value", "lower": "v"}
	put := mustPut(t, s, "dir/obj", body, meta)
	if put.Size != int64(len(body)) || put.ETag == "" || put.Key != "dir/obj" {
		t.Errorf("Put info = %+v", put)
	}
	head, err := s.Head(context.Background(), "dir/obj")
	if err != nil {
		t.Fatal(err)
	}
	if head.Size != int64(len(body)) || head.ETag != put.ETag || head.Key != "dir/obj" || head.LastModified.IsZero() {
		t.Errorf("Head = %+v, Put ETag %s", head, put.ETag)
	}
	if !maps.Equal(head.Metadata, want) {
		t.Errorf("Head metadata = %v, want %v", head.Metadata, want)
	}
	got, info := mustGet(t, s, "dir/obj", GetOptions{Length: -1})
	if !bytes.Equal(got, body) {
		t.Errorf("Get body differs")
	}
	if !maps.Equal(info.Metadata, want) || info.ETag != put.ETag || info.Size != int64(len(body)) {
		t.Errorf("Get info = %+v", info)
	}
	// Empty object, empty metadata.
	mustPut(t, s, "empty", nil, nil)
	got, info = mustGet(t, s, "empty", GetOptions{Length: -1})
	if len(got) != 0 || info.Size != 0 || len(info.Metadata) != 0 {
		t.Errorf("empty object: %d bytes, info %+v", len(got), info)
	}
}

func testRanges(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	const size = 1000
	body := randBytes(2, size)
	mustPut(t, s, "obj", body, nil)
	mustPut(t, s, "empty", nil, nil)
	for _, tc := range []struct {
		key        string
		off, n     int64
		start, end int64 // expected slice of body; -1 = ErrInvalidRange
	}{
		{"obj", 0, -1, 0, size},
		{"obj", 0, 1, 0, 1},
		{"obj", 0, 0, 0, 0},
		{"obj", 0, size, 0, size},
		{"obj", 0, size + 10, 0, size},
		{"obj", 500, 100, 500, 600},
		{"obj", 500, -1, 500, size},
		{"obj", 999, -1, 999, size},
		{"obj", 990, 100, 990, size},
		{"obj", size, -1, -1, -1},
		{"obj", size, 1, -1, -1},
		{"obj", size + 1, 5, -1, -1},
		{"empty", 0, -1, 0, 0},
		{"empty", 0, 10, 0, 0},
		{"empty", 1, -1, -1, -1},
	} {
		t.Run(fmt.Sprintf("%s/%d+%d", tc.key, tc.off, tc.n), func(t *testing.T) {
			rc, info, err := s.Get(context.Background(), tc.key, GetOptions{Offset: tc.off, Length: tc.n})
			if tc.start < 0 {
				if !errors.Is(err, ErrInvalidRange) {
					t.Fatalf("err = %v, want ErrInvalidRange", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			want := body[tc.start:tc.end]
			if tc.key == "empty" {
				want = nil
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want body[%d:%d]", len(got), tc.start, tc.end)
			}
			if wantSize := int64(len(body)); tc.key == "obj" && info.Size != wantSize {
				t.Errorf("Info.Size = %d, want whole size %d", info.Size, wantSize)
			}
		})
	}
}

func testIfMatch(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	v1 := mustPut(t, s, "obj", []byte("version one"), nil)
	got, _ := mustGet(t, s, "obj", GetOptions{Offset: 8, Length: -1, IfMatch: v1.ETag})
	if string(got) != "one" {
		t.Errorf("IfMatch read = %q", got)
	}
	v2 := mustPut(t, s, "obj", []byte("version two!"), nil)
	if v2.ETag == v1.ETag {
		t.Fatalf("ETag did not change on rewrite: %s", v1.ETag)
	}
	for _, opt := range []GetOptions{{Length: -1, IfMatch: v1.ETag}, {Offset: 3, Length: 2, IfMatch: v1.ETag}} {
		if _, _, err := s.Get(ctx, "obj", opt); !errors.Is(err, ErrPreconditionFailed) {
			t.Errorf("Get(%+v) after overwrite: err = %v, want ErrPreconditionFailed", opt, err)
		}
	}
	got, _ = mustGet(t, s, "obj", GetOptions{Length: -1, IfMatch: v2.ETag})
	if string(got) != "version two!" {
		t.Errorf("read = %q", got)
	}
}

func testNotFound(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	mustPut(t, s, "dir/present", []byte("x"), nil)
	for _, key := range []string{"missing", "dir/missing", "dir", "dir/present/below"} {
		if _, err := s.Head(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("Head(%q) = %v, want ErrNotFound", key, err)
		}
		if _, _, err := s.Get(ctx, key, GetOptions{Length: -1}); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", key, err)
		}
		if _, _, err := s.Get(ctx, key, GetOptions{Offset: 1, Length: 1}); !errors.Is(err, ErrNotFound) {
			t.Errorf("ranged Get(%q) = %v, want ErrNotFound", key, err)
		}
	}
	if _, err := s.Copy(ctx, "missing", "dst", CopyOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Copy(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Head(ctx, "dst"); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed Copy created dst: %v", err)
	}
}

// listAll collects a listing, failing on pages that are out of order.
func listAll(t *testing.T, s Store, prefix, delim string) (keys, prefixes []string, pages int) {
	t.Helper()
	err := s.List(context.Background(), prefix, delim, func(p ListPage) error {
		pages++
		for _, o := range p.Objects {
			if o.Metadata != nil {
				t.Errorf("listed %q with metadata", o.Key)
			}
			keys = append(keys, o.Key)
		}
		prefixes = append(prefixes, p.Prefixes...)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, %q): %v", prefix, delim, err)
	}
	if !slices.IsSorted(keys) || !slices.IsSorted(prefixes) {
		t.Errorf("List(%q, %q) not sorted: %q %q", prefix, delim, keys, prefixes)
	}
	return keys, prefixes, pages
}

var listKeys = []string{"a", "b/c", "b/d/e", "b/d/f", "b/g", "c/", "ca", "d.txt", "d/x"}

func testList(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	sizes := map[string]int64{}
	for i, k := range listKeys {
		var body []byte
		if k[len(k)-1] != '/' {
			body = randBytes(uint64(i), i+1)
		}
		sizes[k] = int64(len(body))
		mustPut(t, s, k, body, map[string]string{"k": k})
	}
	for _, tc := range []struct {
		prefix, delim string
		keys, prefs   []string
	}{
		{"", "/", []string{"a", "ca", "d.txt"}, []string{"b/", "c/", "d/"}},
		{"", "", listKeys, nil},
		{"b/", "/", []string{"b/c", "b/g"}, []string{"b/d/"}},
		{"b/", "", []string{"b/c", "b/d/e", "b/d/f", "b/g"}, nil},
		{"b/d", "", []string{"b/d/e", "b/d/f"}, nil},
		{"b/d", "/", nil, []string{"b/d/"}},
		{"b/d/", "/", []string{"b/d/e", "b/d/f"}, nil},
		{"c", "/", []string{"ca"}, []string{"c/"}},
		{"c/", "/", []string{"c/"}, nil},
		{"c/", "", []string{"c/"}, nil},
		{"d", "/", []string{"d.txt"}, []string{"d/"}},
		{"d", ".", []string{"d/x"}, []string{"d."}},
		{"zzz", "/", nil, nil},
		{"nodir/", "", nil, nil},
	} {
		t.Run(fmt.Sprintf("%q-%q", tc.prefix, tc.delim), func(t *testing.T) {
			keys, prefs, _ := listAll(t, s, tc.prefix, tc.delim)
			if !slices.Equal(keys, tc.keys) || !slices.Equal(prefs, tc.prefs) {
				t.Errorf("got %q %q, want %q %q", keys, prefs, tc.keys, tc.prefs)
			}
		})
	}
	err := s.List(context.Background(), "", "", func(p ListPage) error {
		for _, o := range p.Objects {
			if o.Size != sizes[o.Key] || o.ETag == "" {
				t.Errorf("listed %+v, want size %d", o, sizes[o.Key])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	if err := s.List(context.Background(), "", "", func(ListPage) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("List did not return fn's error: %v", err)
	}
}

func testListPagination(t *testing.T, h harness) {
	s := h.newStore(t, 2)
	var want []string
	for i := range 7 {
		k := fmt.Sprintf("p/%02d", i)
		want = append(want, k)
		mustPut(t, s, k, []byte{byte(i)}, nil)
	}
	for i := range 3 {
		mustPut(t, s, fmt.Sprintf("q%d/x", i), nil, nil)
	}
	keys, _, pages := listAll(t, s, "p/", "")
	if !slices.Equal(keys, want) || pages < 4 {
		t.Errorf("got %q in %d pages, want %q in 4", keys, pages, want)
	}
	keys, prefs, pages := listAll(t, s, "", "/")
	if len(keys) != 0 || !slices.Equal(prefs, []string{"p/", "q0/", "q1/", "q2/"}) || pages < 2 {
		t.Errorf("got %q %q in %d pages", keys, prefs, pages)
	}
}

// writeIn writes body to w in steps of step bytes.
func writeIn(t *testing.T, w Writer, body []byte, step int) {
	t.Helper()
	for off := 0; off < len(body); off += step {
		chunk := body[off:min(off+step, len(body))]
		n, err := w.Write(chunk)
		if err != nil || n != len(chunk) {
			t.Fatalf("Write at %d: n=%d err=%v", off, n, err)
		}
	}
}

func checkObject(t *testing.T, s Store, key string, body []byte, meta map[string]string) {
	t.Helper()
	got, info := mustGet(t, s, key, GetOptions{Length: -1})
	if !bytes.Equal(got, body) {
		t.Errorf("%q: got %d bytes, want %d (content differs)", key, len(got), len(body))
	}
	if info.Size != int64(len(body)) {
		t.Errorf("%q: Info.Size = %d, want %d", key, info.Size, len(body))
	}
	if meta != nil && !maps.Equal(info.Metadata, meta) {
		t.Errorf("%q: metadata %v, want %v", key, info.Metadata, meta)
	}
}

func testWriterSmall(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	for _, size := range []int{0, 1, 1000, h.partSize - 1, h.partSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			key := fmt.Sprintf("small/%d", size)
			body := randBytes(uint64(size), size)
			w, err := s.Create(ctx, key, map[string]string{"Size": fmt.Sprint(size)})
			if err != nil {
				t.Fatal(err)
			}
			writeIn(t, w, body, 333_333)
			info, err := w.Commit(ctx)
			if err != nil {
				t.Fatalf("Commit: %v", err)
			}
			head, err := s.Head(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(size) || info.ETag != head.ETag {
				t.Errorf("Commit info %+v, Head %+v", info, head)
			}
			checkObject(t, s, key, body, map[string]string{"size": fmt.Sprint(size)})
			if err := w.Abort(ctx); err != nil {
				t.Errorf("Abort after Commit: %v", err)
			}
			if _, err := w.Write([]byte("x")); err == nil {
				t.Errorf("Write after Commit succeeded")
			}
			checkObject(t, s, key, body, nil)
		})
	}
}

func testWriterMultipart(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	ps := h.partSize
	for _, tc := range []struct{ size, step int }{
		{2*ps + ps/5, 1 << 20},
		{ps + 11, ps},
		{2*ps + 7, 100_003},
	} {
		t.Run(fmt.Sprintf("%d-by-%d", tc.size, tc.step), func(t *testing.T) {
			key := fmt.Sprintf("big/%d-%d", tc.size, tc.step)
			body := randBytes(uint64(tc.size), tc.size)
			w, err := s.Create(ctx, key, map[string]string{"Envelope": "e"})
			if err != nil {
				t.Fatal(err)
			}
			writeIn(t, w, body, tc.step)
			info, err := w.Commit(ctx)
			if err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if info.Size != int64(tc.size) {
				t.Errorf("Commit size %d", info.Size)
			}
			checkObject(t, s, key, body, map[string]string{"envelope": "e"})
			got, _ := mustGet(t, s, key, GetOptions{Offset: int64(ps) - 10, Length: 20})
			if !bytes.Equal(got, body[ps-10:ps+10]) {
				t.Errorf("range across the part boundary differs")
			}
			if n := h.incomplete(t, s, key); n != 0 {
				t.Errorf("%d incomplete uploads left", n)
			}
		})
	}
}

func testWriterAbort(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	old := []byte("the old object")
	mustPut(t, s, "obj", old, map[string]string{"v": "1"})
	for _, size := range []int{10, 2*h.partSize + 1} {
		w, err := s.Create(ctx, "obj", map[string]string{"v": "2"})
		if err != nil {
			t.Fatal(err)
		}
		writeIn(t, w, randBytes(3, size), 1<<20)
		if err := w.Abort(ctx); err != nil {
			t.Fatalf("Abort: %v", err)
		}
		if err := w.Abort(ctx); err != nil {
			t.Errorf("second Abort: %v", err)
		}
		if _, err := w.Write([]byte("x")); !errors.Is(err, ErrAborted) {
			t.Errorf("Write after Abort = %v, want ErrAborted", err)
		}
		if _, err := w.Commit(ctx); !errors.Is(err, ErrAborted) {
			t.Errorf("Commit after Abort = %v, want ErrAborted", err)
		}
		checkObject(t, s, "obj", old, map[string]string{"v": "1"})
	}
	w, err := s.Create(ctx, "new", nil)
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, []byte("never visible"), 4)
	if err := w.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, "new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("aborted object: Head = %v, want ErrNotFound", err)
	}
	for _, key := range []string{"obj", "new"} {
		if n := h.incomplete(t, s, key); n != 0 {
			t.Errorf("%d incomplete uploads of %q left", n, key)
		}
	}
}

func testWriterFailure(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	old := []byte("the old object")
	mustPut(t, s, "obj", old, map[string]string{"v": "1"})
	fs := h.failing(t, s)
	w, err := fs.Create(ctx, "obj", map[string]string{"v": "2"})
	if err != nil {
		t.Fatal(err)
	}
	body := randBytes(4, 3*h.partSize+1)
	var werr error
	const step = 64 << 10
	for off := 0; off < len(body) && werr == nil; off += step {
		_, werr = w.Write(body[off:min(off+step, len(body))])
	}
	_, cerr := w.Commit(ctx)
	if cerr == nil {
		t.Fatalf("Commit succeeded despite failing parts (Write err %v)", werr)
	}
	if werr != nil {
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("Write error not sticky")
		}
	}
	checkObject(t, s, "obj", old, map[string]string{"v": "1"})
	if n := h.incomplete(t, s, "obj"); n != 0 {
		t.Errorf("%d incomplete uploads left", n)
	}
}

func testCopy(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	body := randBytes(5, 4321)
	src := "dir/sp ace+plus%25&é.bin"
	mustPut(t, s, src, body, map[string]string{"A": "1", "b": "2"})
	if _, err := s.Copy(ctx, src, "keep", CopyOptions{}); err != nil {
		t.Fatalf("Copy keep: %v", err)
	}
	checkObject(t, s, "keep", body, map[string]string{"a": "1", "b": "2"})
	info, err := s.Copy(ctx, src, "other dir/replace", CopyOptions{Metadata: map[string]string{"C": "3"}})
	if err != nil {
		t.Fatalf("Copy replace: %v", err)
	}
	if info.Size != int64(len(body)) || info.Key != "other dir/replace" {
		t.Errorf("Copy info %+v", info)
	}
	checkObject(t, s, "other dir/replace", body, map[string]string{"c": "3"})
	// In place, as a metadata update.
	if _, err := s.Copy(ctx, src, src, CopyOptions{Metadata: map[string]string{"d": "4"}}); err != nil {
		t.Fatalf("Copy in place: %v", err)
	}
	checkObject(t, s, src, body, map[string]string{"d": "4"})
	// Overwrite an existing destination; empty source.
	mustPut(t, s, "empty", nil, map[string]string{"e": "5"})
	if _, err := s.Copy(ctx, "empty", "keep", CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, "keep", nil, map[string]string{"e": "5"})
}

// testCopyIfMatch: a copy pinned to an ETag that is no longer src's fails
// with ErrPreconditionFailed and leaves dst (and src) as they were.
func testCopyIfMatch(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	v1 := mustPut(t, s, "f", []byte("version one"), map[string]string{"v": "1"})
	mustPut(t, s, "f", []byte("version two!"), map[string]string{"v": "2"})
	mustPut(t, s, "g", []byte("other"), map[string]string{"v": "g"})
	for _, dst := range []string{"f", "g", "new"} {
		_, err := s.Copy(ctx, "f", dst, CopyOptions{Metadata: map[string]string{"v": "1", "attr": "x"}, IfMatch: v1.ETag})
		if !errors.Is(err, ErrPreconditionFailed) {
			t.Errorf("Copy(f, %s) with the old ETag = %v, want ErrPreconditionFailed", dst, err)
		}
	}
	checkObject(t, s, "f", []byte("version two!"), map[string]string{"v": "2"})
	checkObject(t, s, "g", []byte("other"), map[string]string{"v": "g"})
	if _, err := s.Head(ctx, "new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head(new) after a failed copy = %v, want ErrNotFound", err)
	}
	cur, err := s.Head(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Copy(ctx, "f", "f", CopyOptions{Metadata: map[string]string{"v": "2", "attr": "y"}, IfMatch: cur.ETag}); err != nil {
		t.Fatalf("Copy with the current ETag: %v", err)
	}
	checkObject(t, s, "f", []byte("version two!"), map[string]string{"v": "2", "attr": "y"})
	if _, err := s.Copy(ctx, "missing", "x", CopyOptions{IfMatch: cur.ETag}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Copy(missing) with IfMatch = %v, want ErrNotFound", err)
	}
}

// testCopySource: a copy told what src is (CopyOptions.Source) is still
// pinned to IfMatch: a stale Source and ETag fail it, a missing src is
// ErrNotFound, and a current one copies the body with the metadata asked
// for, or src's own.
func testCopySource(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	v1 := mustPut(t, s, "f", []byte("version one"), map[string]string{"v": "1"})
	v2 := mustPut(t, s, "f", []byte("version two!"), map[string]string{"v": "2"})
	for _, dst := range []string{"f", "new"} {
		_, err := s.Copy(ctx, "f", dst, CopyOptions{Metadata: map[string]string{"v": "1", "attr": "x"}, IfMatch: v1.ETag, Source: v1})
		if !errors.Is(err, ErrPreconditionFailed) {
			t.Errorf("Copy(f, %s) with the old ETag and Source = %v, want ErrPreconditionFailed", dst, err)
		}
	}
	checkObject(t, s, "f", []byte("version two!"), map[string]string{"v": "2"})
	if _, err := s.Head(ctx, "new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head(new) after a failed copy = %v, want ErrNotFound", err)
	}
	cur, err := s.Head(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if !etagEqual(cur.ETag, v2.ETag) {
		t.Logf("the store's HEAD ETag %s differs from Put's %s", cur.ETag, v2.ETag)
	}
	if _, err := s.Copy(ctx, "f", "g", CopyOptions{IfMatch: cur.ETag, Source: cur}); err != nil {
		t.Fatalf("Copy(f, g) with the current Source: %v", err)
	}
	checkObject(t, s, "g", []byte("version two!"), map[string]string{"v": "2"})
	if _, err := s.Copy(ctx, "f", "f", CopyOptions{Metadata: map[string]string{"v": "2", "attr": "y"}, IfMatch: cur.ETag, Source: cur}); err != nil {
		t.Fatalf("self-copy with the current Source: %v", err)
	}
	checkObject(t, s, "f", []byte("version two!"), map[string]string{"v": "2", "attr": "y"})
	gone := *cur
	gone.Key = "missing"
	if _, err := s.Copy(ctx, "missing", "x", CopyOptions{IfMatch: cur.ETag, Source: &gone}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Copy(missing) with IfMatch and Source = %v, want ErrNotFound", err)
	}
}

// testCopyIfMatchRace races metadata self-copies (HEAD, then a copy with
// the HEAD's metadata pinned to its ETag) against overwrites: the metadata
// must always describe the body it sits on. Without the pin, about one
// copy in ten pairs an old "sum" with a new body.
func testCopyIfMatchRace(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	const rounds = 150
	sum := func(b []byte) string { return fmt.Sprintf("%x", b[:8]) }
	body := randBytes(1000, 512)
	mustPut(t, s, "f", body, map[string]string{"sum": sum(body)})
	var wg sync.WaitGroup
	wg.Add(1)
	stop := make(chan struct{})
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b := randBytes(uint64(2000+i), 512)
			if _, err := s.Put(ctx, "f", b, map[string]string{"sum": sum(b)}); err != nil {
				t.Errorf("Put: %v", err)
				return
			}
		}
	}()
	conflicts, broken := 0, 0
	for i := 0; i < rounds; i++ {
		info, err := s.Head(ctx, "f")
		if err != nil {
			t.Fatal(err)
		}
		meta := maps.Clone(info.Metadata)
		meta["attr"] = fmt.Sprint(i)
		_, err = s.Copy(ctx, "f", "f", CopyOptions{Metadata: meta, IfMatch: info.ETag})
		switch {
		case errors.Is(err, ErrPreconditionFailed):
			conflicts++
			continue
		case err != nil:
			t.Fatalf("Copy: %v", err)
		}
		// While our copy is the latest version, its metadata must be that
		// of its body.
		b, got := mustGet(t, s, "f", GetOptions{Length: -1})
		if got.Metadata["attr"] == meta["attr"] && got.Metadata["sum"] != sum(b) {
			broken++
		}
	}
	close(stop)
	waitOrFail(t, &wg, "the overwriting goroutine, stopped")
	t.Logf("%d of %d copies lost to an overwrite (412)", conflicts, rounds)
	if broken > 0 {
		t.Errorf("%d of %d metadata copies paired an old version's metadata with a newer body", broken, rounds)
	}
	b, info := mustGet(t, s, "f", GetOptions{Length: -1})
	if info.Metadata["sum"] != sum(b) {
		t.Errorf("metadata sum %s on a body with sum %s", info.Metadata["sum"], sum(b))
	}
}

func testDelete(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	mustPut(t, s, "d/obj", []byte("x"), nil)
	mustPut(t, s, "d/other", []byte("y"), nil)
	for range 2 {
		if err := s.Delete(ctx, "d/obj"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Head(ctx, "d/obj"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Head after Delete = %v", err)
		}
	}
	if err := s.Delete(ctx, "never/existed"); err != nil {
		t.Errorf("Delete(missing) = %v", err)
	}
	keys, _, _ := listAll(t, s, "", "")
	if !slices.Equal(keys, []string{"d/other"}) {
		t.Errorf("after Delete, listing = %q", keys)
	}
	mustPut(t, s, "m/", nil, map[string]string{"dir": "yes"})
	if info, err := s.Head(ctx, "m/"); err != nil || info.Metadata["dir"] != "yes" {
		t.Errorf("Head(marker) = %+v, %v", info, err)
	}
	if err := s.Delete(ctx, "m/"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, "m/"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head(marker) after Delete = %v", err)
	}
}

func testPrefixIsolation(t *testing.T, h harness) {
	if h.prefixed == nil {
		t.Skip("store has no prefixes")
	}
	ctx := context.Background()
	st := h.prefixed(t, "p", "p2/", "")
	p, p2, root := st[0], st[1], st[2]
	mustPut(t, p, "k", []byte("in p"), nil)
	mustPut(t, p2, "k", []byte("in p2"), nil)
	checkObject(t, p, "k", []byte("in p"), nil)
	checkObject(t, p2, "k", []byte("in p2"), nil)
	checkObject(t, root, "p/k", []byte("in p"), nil)
	for _, tc := range []struct {
		s    Store
		want []string
	}{{p, []string{"k"}}, {p2, []string{"k"}}, {root, []string{"p/k", "p2/k"}}} {
		if keys, _, _ := listAll(t, tc.s, "", ""); !slices.Equal(keys, tc.want) {
			t.Errorf("listing = %q, want %q", keys, tc.want)
		}
	}
	if err := p.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	checkObject(t, p2, "k", []byte("in p2"), nil)
	if _, err := p.Copy(ctx, "k", "x", CopyOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Copy across prefixes: %v", err)
	}
}

func testConcurrentWriters(t *testing.T, h harness) {
	s := h.newStore(t, 0)
	ctx := context.Background()
	const writers = 6
	body := func(i int) []byte { return randBytes(uint64(100+i), h.partSize+1000*i) }
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for i := range writers {
		for _, key := range []string{fmt.Sprintf("own/%d", i), "shared"} {
			wg.Go(func() {
				w, err := s.Create(ctx, key, map[string]string{"writer": fmt.Sprint(i)})
				if err != nil {
					errs <- err
					return
				}
				b := body(i)
				for off := 0; off < len(b); off += 1 << 20 {
					if _, err := w.Write(b[off:min(off+1<<20, len(b))]); err != nil {
						errs <- err
						return
					}
				}
				if _, err := w.Commit(ctx); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("writer: %v", err)
	}
	for i := range writers {
		checkObject(t, s, fmt.Sprintf("own/%d", i), body(i), map[string]string{"writer": fmt.Sprint(i)})
	}
	// The shared key holds one writer's body with that writer's metadata.
	_, info := mustGet(t, s, "shared", GetOptions{Length: 0})
	var i int
	if _, err := fmt.Sscan(info.Metadata["writer"], &i); err != nil {
		t.Fatalf("shared metadata %v", info.Metadata)
	}
	checkObject(t, s, "shared", body(i), nil)
}
