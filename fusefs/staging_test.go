package fusefs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func newTestStager(t *testing.T, limit int64) *stager {
	t.Helper()
	st, err := newStager(t.TempDir(), limit)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStageFileModel runs random writes, truncates and reads against an
// in-memory model of the file.
func TestStageFileModel(t *testing.T) {
	st := newTestStager(t, 0)
	sf, err := st.create()
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var model []byte
	for i := 0; i < 400; i++ {
		switch op := rng.IntN(10); {
		case op < 6:
			off := rng.Int64N(3 * stageBlock)
			n := rng.IntN(2*stageBlock + 10)
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(rng.IntN(256))
			}
			if _, err := sf.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
			if end := off + int64(n); end > int64(len(model)) {
				model = append(model, make([]byte, end-int64(len(model)))...)
			}
			copy(model[off:], data)
		case op < 8:
			size := rng.Int64N(4 * stageBlock)
			if err := sf.Truncate(size); err != nil {
				t.Fatal(err)
			}
			if size < int64(len(model)) {
				model = model[:size]
			} else {
				model = append(model, make([]byte, size-int64(len(model)))...)
			}
		default:
			if sf.Size() != int64(len(model)) {
				t.Fatalf("step %d: size %d, model %d", i, sf.Size(), len(model))
			}
			got, err := io.ReadAll(sf.reader())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model) {
				t.Fatalf("step %d: content differs from the model", i)
			}
			if len(model) > 0 {
				off := rng.Int64N(int64(len(model)))
				buf := make([]byte, rng.IntN(3*stageBlock)+1)
				n, err := sf.ReadAt(buf, off)
				want := model[off:min(int64(len(model)), off+int64(len(buf)))]
				if n != len(want) || !bytes.Equal(buf[:n], want) {
					t.Fatalf("step %d: ReadAt(%d, %d) = %d bytes, %v", i, len(buf), off, n, err)
				}
				if n < len(buf) && err != io.EOF {
					t.Fatalf("short ReadAt without io.EOF: %v", err)
				}
			}
		}
	}
}

// TestStageFileNoPlaintextOnDisk writes a marker and checks the file on disk.
func TestStageFileNoPlaintextOnDisk(t *testing.T) {
	st := newTestStager(t, 0)
	sf, err := st.create()
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	marker := bytes.Repeat([]byte("PLAINTEXT-MARKER-"), 10000)
	for _, off := range []int64{0, 7, 100000, 5 * stageBlock} {
		if _, err := sf.WriteAt(marker, off); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(st.dir)
	if len(ents) != 1 {
		t.Fatalf("staging dir has %d entries", len(ents))
	}
	raw, err := os.ReadFile(filepath.Join(st.dir, ents[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("PLAINTEXT-MARKER")) {
		t.Fatal("staging file holds plaintext")
	}
	sf.Close()
	if ents, _ := os.ReadDir(st.dir); len(ents) != 0 {
		t.Fatalf("staging file left after Close: %v", ents)
	}
}

// TestStageFileTamper: a modified or moved slot fails to read.
func TestStageFileTamper(t *testing.T) {
	st := newTestStager(t, 0)
	sf, err := st.create()
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	data := bytes.Repeat([]byte{1, 2, 3}, stageBlock)
	if _, err := sf.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// Swap slots 0 and 1: the block number in the additional data catches it.
	s0 := make([]byte, stageSlot)
	s1 := make([]byte, stageSlot)
	sf.f.ReadAt(s0, 0)
	sf.f.ReadAt(s1, stageSlot)
	sf.f.WriteAt(s1, 0)
	sf.f.WriteAt(s0, stageSlot)
	if _, err := sf.ReadAt(make([]byte, 10), 0); err == nil {
		t.Fatal("swapped slots read back")
	}
}

// TestStagerLimit: past the bound, writes fail with ENOSPC and the space is
// returned on Close.
func TestStagerLimit(t *testing.T) {
	st := newTestStager(t, 4*stageSlot)
	a, _ := st.create()
	if _, err := a.WriteAt(make([]byte, 3*stageBlock), 0); err != nil {
		t.Fatal(err)
	}
	b, _ := st.create()
	_, err := b.WriteAt(make([]byte, 2*stageBlock), 0)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write past the bound: %v, want ENOSPC", err)
	}
	if toErrno(err) != syscall.ENOSPC {
		t.Fatalf("errno %v", toErrno(err))
	}
	a.Close()
	if _, err := b.WriteAt(make([]byte, 2*stageBlock), 0); err != nil {
		t.Fatalf("after the space was returned: %v", err)
	}
	b.Close()
	if st.used != 0 {
		t.Fatalf("used %d after closing everything", st.used)
	}
}
