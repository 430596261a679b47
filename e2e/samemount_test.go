package e2e

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// versionContent is version v of a file: every 4 KiB block starts with the
// version and block number, and the rest is filled from them, so any block
// names the version it came from.
func versionContent(v, size int) []byte {
	b := make([]byte, size)
	for blk := 0; blk*4096 < size; blk++ {
		p := b[blk*4096 : min(size, (blk+1)*4096)]
		s := uint64(v)<<32 | uint64(blk)
		for i := 0; i+8 <= len(p); i += 8 {
			s = s*6364136223846793005 + 1442695040888963407
			binary.LittleEndian.PutUint64(p[i:], s)
		}
		copy(p, fmt.Sprintf("v%06d b%06d ", v, blk))
	}
	return b
}

// TestSameMountReadersSeeWholeVersions: while one file of 12 MiB is
// overwritten again and again (O_TRUNC, streamed in 128 KiB writes), readers
// in the same mount open and read it whole. Every read must be exactly one
// committed version, and one that was current while the read's open ran:
// never empty, never a prefix of the version being written, never a mix.
// A read may instead fail with ESTALE when a commit replaces the version it
// was pinned to (docs/semantics.md, "Readers in the writer's mount").
func TestSameMountReadersSeeWholeVersions(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	const size, versions, readers = 12 << 20, 24, 4
	p := m.path("torn")

	type version struct {
		hash            [32]byte
		closing, closed time.Time // before close(2), after it returned
	}
	var mu sync.Mutex
	byHash := map[[32]byte]int{}
	vs := make([]version, versions+1)
	record := func(v int, c []byte) {
		mu.Lock()
		defer mu.Unlock()
		h := sha256.Sum256(c)
		byHash[h] = v
		vs[v].hash = h
	}
	v0 := versionContent(0, size)
	record(0, v0)
	if err := os.WriteFile(p, v0, 0o644); err != nil {
		t.Fatal(err)
	}
	vs[0].closed = time.Now()

	stop := make(chan struct{})
	type readResult struct {
		start, opened time.Time
		hash          [32]byte
		n             int
		err           error
	}
	results := make(chan readResult, 4096)
	var wg sync.WaitGroup
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var res readResult
				res.start = time.Now()
				f, err := os.Open(p)
				res.opened = time.Now()
				if err != nil {
					res.err = err
					results <- res
					continue
				}
				b, err := io.ReadAll(f)
				f.Close()
				res.hash, res.n, res.err = sha256.Sum256(b), len(b), err
				results <- res
			}
		}()
	}

	writeErr := func() error {
		for v := 1; v <= versions; v++ {
			c := versionContent(v, size)
			record(v, c)
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				return err
			}
			for off := 0; off < size; off += 128 << 10 {
				if _, err := f.Write(c[off : off+128<<10]); err != nil {
					f.Close()
					return err
				}
			}
			mu.Lock()
			vs[v].closing = time.Now()
			mu.Unlock()
			if err := f.Close(); err != nil {
				return fmt.Errorf("close of version %d: %w", v, err)
			}
			mu.Lock()
			vs[v].closed = time.Now()
			mu.Unlock()
		}
		return nil
	}()
	close(stop)
	wg.Wait()
	close(results)
	if writeErr != nil {
		t.Fatal(writeErr)
	}

	var whole, stale, bad int
	fail := func(format string, a ...any) {
		if bad < 10 {
			t.Errorf(format, a...)
		}
		bad++
	}
	for res := range results {
		switch {
		case errors.Is(res.err, syscall.ESTALE):
			stale++
			continue
		case res.err != nil:
			fail("read failed: %v", res.err)
			continue
		}
		v, ok := byHash[res.hash]
		if !ok {
			fail("read %d bytes matching no version (empty, a prefix or a mix)", res.n)
			continue
		}
		// v must have been committed, or committing, before the open
		// returned, and not replaced by a later commit before it began.
		if v > 0 && !vs[v].closing.Before(res.opened) {
			fail("read version %d whole before its close(2) began: uncommitted bytes", v)
			continue
		}
		if v < versions && !vs[v+1].closed.IsZero() && vs[v+1].closed.Before(res.start) {
			fail("read version %d after version %d was committed", v, v+1)
			continue
		}
		whole++
	}
	t.Logf("%d overwrites, %d reads: %d whole versions, %d ESTALE, %d bad", versions, whole+stale+bad, whole, stale, bad)
	if whole < versions {
		t.Errorf("only %d whole reads in %d overwrites", whole, versions)
	}
}

// TestMmapShared: with every handle direct I/O, MAP_SHARED still works
// (CAP_DIRECT_IO_ALLOW_MMAP, granted by this kernel, so the mount logs no
// warning about it): a change made through a shared writable map is
// uploaded at close, and a read-only shared map shows it. With --page-cache
// (no direct I/O, for kernels before 6.6) the same holds.
func TestMmapShared(t *testing.T) {
	w := newWorld(t)
	t.Run("direct-io", func(t *testing.T) {
		m := w.mount(t, "direct/")
		checkMmapShared(t, m)
		if log := m.logText(t); strings.Contains(log, "cannot map direct-I/O files shared") {
			t.Errorf("the kernel did not grant CAP_DIRECT_IO_ALLOW_MMAP:\n%s", log)
		}
	})
	t.Run("page-cache", func(t *testing.T) {
		checkMmapShared(t, w.mount(t, "cached/", "--page-cache"))
	})
}

func checkMmapShared(t *testing.T, m *mounted) {
	t.Helper()
	if err := os.WriteFile(m.path("f"), []byte("hello world, mmap me"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, 20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		t.Fatalf("mmap MAP_SHARED read-write: %v", err)
	}
	copy(b, "HELLO")
	if err := syscall.Munmap(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	const want = "HELLO world, mmap me"
	if got, err := os.ReadFile(m.path("f")); err != nil || string(got) != want {
		t.Fatalf("after the mapped write: %q, %v", got, err)
	}
	r, err := os.Open(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err = syscall.Mmap(int(r.Fd()), 0, 20, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap MAP_SHARED read-only: %v", err)
	}
	got := string(b)
	syscall.Munmap(b)
	if got != want {
		t.Errorf("read-only map: %q, want %q", got, want)
	}
}
