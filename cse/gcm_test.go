package cse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

var gcmSizes = []int{0, 1, 15, 16, 17, 1000, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1<<20 + 7, 5<<20 + 7}
var gcmSteps = []int{1, 7, 16, 4096, 65536, 1 << 20}

// TestEncryptWriterGrid: EncryptWriter output equals one-shot Seal for every
// size × write step, and the decrypt reader returns the plaintext for every
// size × read step.
func TestEncryptWriterGrid(t *testing.T) {
	key, iv := testKeyIV(t)
	for _, size := range gcmSizes {
		plain := testBytes(uint64(size), size)
		want := stdSeal(t, key, iv, plain)
		for _, step := range gcmSteps {
			if testing.Short() && step < 16 && size > 1<<20 {
				continue
			}
			t.Run(fmt.Sprintf("size=%d/step=%d", size, step), func(t *testing.T) {
				var buf bytes.Buffer
				w, err := newEncryptWriter(&buf, key, iv)
				if err != nil {
					t.Fatal(err)
				}
				if err := writeInSteps(w, plain, step); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf.Bytes(), want) {
					t.Fatalf("EncryptWriter output differs from one-shot Seal")
				}
				r, err := newGCMDecryptReader(bytes.NewReader(want), key, iv)
				if err != nil {
					t.Fatal(err)
				}
				got, err := readInSteps(r, step)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("decrypted plaintext differs")
				}
			})
		}
	}
}

// TestGCMDecryptLent: a source that lends its buffer (Lender) decrypts to
// the same plaintext as one that is read, for every size × lend step × read
// step, and a tampered tag releases nothing of the last piece.
func TestGCMDecryptLent(t *testing.T) {
	key, iv := testKeyIV(t)
	for _, size := range []int{0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 4097, 64<<10 + 5, 1<<20 + 7, 3<<20 + 1} {
		plain := testBytes(uint64(size), size)
		body := stdSeal(t, key, iv, plain)
		for _, lend := range []int{1, 5, 16, 17, 31, 4096, 1 << 20, 8 << 20} {
			for _, step := range []int{4096, 4097, 65536, 1 << 20} {
				if testing.Short() && lend < 16 && size > 64<<10 {
					continue
				}
				l := &lender{body: body, step: lend}
				r, err := newGCMDecryptReader(l, key, iv)
				if err != nil {
					t.Fatal(err)
				}
				got, err := readInSteps(r, step)
				if err != nil {
					t.Fatalf("size %d lend %d step %d: %v", size, lend, step, err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("size %d lend %d step %d: plaintext differs", size, lend, step)
				}
				if l.lent == 0 && size > 0 {
					t.Fatalf("size %d: the reader never used Next", size)
				}
			}
		}
		bad := bytes.Clone(body)
		bad[len(bad)-1] ^= 1
		for _, lend := range []int{7, 4096, 1 << 20} {
			r, _ := newGCMDecryptReader(&lender{body: bad, step: lend}, key, iv)
			got, err := readInSteps(r, 1<<20)
			mustFail(t, err, ErrAuthentication)
			if len(plain) <= 1<<20-32 && len(got) != 0 {
				t.Fatalf("size %d lend %d: %d bytes released before the tag failed", size, lend, len(got))
			}
		}
		if size > 0 {
			r, _ := newGCMDecryptReader(&lender{body: body[:len(body)-1], step: 4096}, key, iv)
			_, err := readInSteps(r, 65536)
			if !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("size %d, one byte short: %v", size, err)
			}
		}
	}
}

// TestGCMDecryptReaderIOTest runs the reader through iotest.TestReader, also
// over a source that returns one byte at a time and data with EOF.
func TestGCMDecryptReaderIOTest(t *testing.T) {
	key, iv := testKeyIV(t)
	for _, size := range []int{0, 1, 17, 1000, 64<<10 + 1, 300001} {
		plain := testBytes(uint64(size), size)
		body := stdSeal(t, key, iv, plain)
		srcs := map[string]func() io.Reader{
			"plain":    func() io.Reader { return bytes.NewReader(body) },
			"onebyte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(body)) },
			"dataeof":  func() io.Reader { return iotest.DataErrReader(bytes.NewReader(body)) },
			"halfread": func() io.Reader { return iotest.HalfReader(bytes.NewReader(body)) },
		}
		for name, src := range srcs {
			t.Run(fmt.Sprintf("%d/%s", size, name), func(t *testing.T) {
				r, err := newGCMDecryptReader(src(), key, iv)
				if err != nil {
					t.Fatal(err)
				}
				if err := iotest.TestReader(r, plain); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestGCMSealerParts: sealing in place in parts of 16-multiples, then a last
// part of any length, equals one-shot Seal.
func TestGCMSealerParts(t *testing.T) {
	key, iv := testKeyIV(t)
	partSets := [][]int{
		{},
		{5},
		{16, 16, 3},
		{4096, 65536 + 16, 1 << 20, 0, 17},
		{8 << 20, 5<<20 + 16, 1},
		{64<<10 + 16, 64<<10 - 16, 48, 64 << 10},
	}
	for _, parts := range partSets {
		t.Run(fmt.Sprint(parts), func(t *testing.T) {
			total := 0
			for _, p := range parts {
				total += p
			}
			plain := testBytes(uint64(total), total)
			want := stdSeal(t, key, iv, plain)
			s, err := newGCMSealer(key, iv)
			if err != nil {
				t.Fatal(err)
			}
			buf := bytes.Clone(plain)
			off := 0
			for _, p := range parts {
				if err := s.Seal(buf[off:off+p], buf[off:off+p]); err != nil {
					t.Fatal(err)
				}
				off += p
			}
			if s.Size() != int64(total) {
				t.Fatalf("Size %d, want %d", s.Size(), total)
			}
			got := append(buf, s.Tag()...)
			if !bytes.Equal(got, want) {
				t.Fatal("parts differ from one-shot Seal")
			}
		})
	}
}

func mustPanic(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("no panic")
		}
		if !strings.HasPrefix(fmt.Sprint(r), "cse: internal error:") {
			t.Fatalf("panic %v lacks the internal-error prefix", r)
		}
	}()
	f()
}

func TestGCMSealerMisuse(t *testing.T) {
	key, iv := testKeyIV(t)
	s, _ := newGCMSealer(key, iv)
	b := make([]byte, 32)
	if err := s.Seal(b[:17], b[:17]); err != nil {
		t.Fatal(err)
	}
	mustPanic(t, func() { _ = s.Seal(b[:16], b[:16]) })

	s, _ = newGCMSealer(key, iv)
	_ = s.Tag()
	mustPanic(t, func() { _ = s.Seal(b[:16], b[:16]) })

	s, _ = newGCMSealer(key, iv)
	mustPanic(t, func() { _ = s.Seal(b[:1], b[:16]) })

	_, err := newGCMSealer(key, iv[:11])
	mustFail(t, err, ErrMalformed)
	_, err = newGCMSealer(key[:31], iv)
	mustFail(t, err, ErrMalformed)
}

func TestGCMTooLarge(t *testing.T) {
	key, iv := testKeyIV(t)
	s, _ := newGCMSealer(key, iv)
	s.core.n = MaxGCMPlaintext - 16 // pretend 64 GiB went by
	b := make([]byte, 32)
	if err := s.Seal(b[:16], b[:16]); err != nil {
		t.Fatalf("up to the limit: %v", err)
	}
	mustFail(t, s.Seal(b[:16], b[:16]), ErrTooLarge)

	w, _ := newEncryptWriter(io.Discard, key, iv)
	w.s.core.n = MaxGCMPlaintext
	_, err := w.Write([]byte{1})
	mustFail(t, err, ErrTooLarge)
	_, err = w.Write([]byte{1})
	mustFail(t, err, ErrTooLarge) // sticky
}

// openAll decrypts body with the streaming reader (64 KiB reads) and
// returns what it released and the final error.
func openAll(t *testing.T, key, iv, body []byte) ([]byte, error) {
	t.Helper()
	r, err := newGCMDecryptReader(bytes.NewReader(body), key, iv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readInSteps(r, 64<<10)
	if err == nil {
		return got, nil
	}
	// Sticky: the same error again.
	if _, err2 := r.Read(make([]byte, 10)); !errors.Is(err2, err) && err2.Error() != err.Error() {
		t.Fatalf("error not sticky: %v then %v", err, err2)
	}
	return got, err
}

func TestGCMTamperBody(t *testing.T) {
	key, iv := testKeyIV(t)
	for _, size := range []int{1, 1000, 200000} {
		plain := testBytes(3, size)
		body := stdSeal(t, key, iv, plain)
		for _, pos := range []int{0, size / 2, size - 1} {
			bad := bytes.Clone(body)
			bad[pos] ^= 0x01
			got, err := openAll(t, key, iv, bad)
			mustFail(t, err, ErrAuthentication)
			if size <= 64<<10 && len(got) != 0 {
				t.Fatalf("size %d: %d bytes released before the tag check", size, len(got))
			}
			_, err = openGCM(key, iv, bad)
			mustFail(t, err, ErrAuthentication)
		}
	}
}

func TestGCMTamperTag(t *testing.T) {
	key, iv := testKeyIV(t)
	body := stdSeal(t, key, iv, testBytes(4, 1000))
	for _, pos := range []int{len(body) - 16, len(body) - 1} {
		bad := bytes.Clone(body)
		bad[pos] ^= 0x80
		got, err := openAll(t, key, iv, bad)
		mustFail(t, err, ErrAuthentication)
		if len(got) != 0 {
			t.Fatal("plaintext released with a bad tag")
		}
	}
}

func TestGCMWrongIV(t *testing.T) {
	key, iv := testKeyIV(t)
	body := stdSeal(t, key, iv, testBytes(5, 1000))
	bad := bytes.Clone(iv)
	bad[11] ^= 1
	_, err := openAll(t, key, bad, body)
	mustFail(t, err, ErrAuthentication)
}

func TestGCMWrongKey(t *testing.T) {
	key, iv := testKeyIV(t)
	body := stdSeal(t, key, iv, testBytes(6, 1000))
	bad := bytes.Clone(key)
	bad[0] ^= 1
	_, err := openAll(t, bad, iv, body)
	mustFail(t, err, ErrAuthentication)
}

func TestGCMTruncated(t *testing.T) {
	key, iv := testKeyIV(t)
	for _, size := range []int{0, 1000, 70000} {
		body := stdSeal(t, key, iv, testBytes(7, size))
		for _, cut := range []int{1, 8, 15, 16, 17, 100} {
			if cut > len(body) {
				continue
			}
			_, err := openAll(t, key, iv, body[:len(body)-cut])
			if len(body)-cut < TagSize {
				mustFail(t, err, ErrTruncated)
			} else {
				mustFail(t, err, ErrAuthentication)
			}
		}
	}
	_, err := openAll(t, key, iv, nil)
	mustFail(t, err, ErrTruncated)
	_, err = openGCM(key, iv, make([]byte, 15))
	mustFail(t, err, ErrTruncated)
}

func TestGCMExtended(t *testing.T) {
	key, iv := testKeyIV(t)
	body := stdSeal(t, key, iv, testBytes(8, 1000))
	_, err := openAll(t, key, iv, append(bytes.Clone(body), 0))
	mustFail(t, err, ErrAuthentication)
}

func TestGCMSourceError(t *testing.T) {
	key, iv := testKeyIV(t)
	body := stdSeal(t, key, iv, testBytes(9, 1000))
	boom := errors.New("boom")
	r, _ := newGCMDecryptReader(&errAfterReader{r: bytes.NewReader(body[:500]), err: boom}, key, iv)
	_, err := io.ReadAll(r)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestEncryptWriterStickyError(t *testing.T) {
	key, iv := testKeyIV(t)
	w, _ := newEncryptWriter(&failWriter{n: 1}, key, iv)
	_, err := w.Write(make([]byte, 200000))
	if err == nil {
		t.Fatal("no error from failing dst")
	}
	if _, err2 := w.Write([]byte{1}); err2 != err {
		t.Fatalf("not sticky: %v", err2)
	}
	if err2 := w.Close(); err2 != err {
		t.Fatalf("Close not sticky: %v", err2)
	}

	w, _ = newEncryptWriter(io.Discard, key, iv)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// TestDecryptGCMRange: every sampled range [a,b) of a 1000-byte object
// decrypts to the plaintext slice.
func TestDecryptGCMRange(t *testing.T) {
	key, iv := testKeyIV(t)
	plain := testBytes(10, 1000)
	body := stdSeal(t, key, iv, plain)
	var pts []int
	for i := 0; i <= 1000; i += 13 {
		pts = append(pts, i)
	}
	pts = append(pts, 15, 16, 17, 31, 32, 33, 984, 999, 1000)
	for _, a := range pts {
		for _, b := range pts {
			if b < a {
				continue
			}
			dst := make([]byte, b-a)
			if err := decryptGCMRange(key, iv, int64(a), dst, body[a:b]); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst, plain[a:b]) {
				t.Fatalf("range [%d,%d) differs", a, b)
			}
		}
	}
	mustFail(t, decryptGCMRange(key, iv[:8], 0, nil, nil), ErrMalformed)
	mustFail(t, decryptGCMRange(key, iv, -1, nil, nil), ErrMalformed)
	mustFail(t, decryptGCMRange(key, iv, MaxGCMPlaintext, make([]byte, 1), make([]byte, 1)), ErrMalformed)
}

// TestDecryptGCMRangeCounter pins the counter layout IV || BE32(2+k) at a
// large block number, which the 1000-byte test cannot reach.
func TestDecryptGCMRangeCounter(t *testing.T) {
	key, iv := testKeyIV(t)
	s, _ := newGCMSealer(key, iv)
	plain := testBytes(11, 3<<20)
	ct := make([]byte, len(plain))
	_ = s.Seal(ct, plain)
	off := (3 << 20) - 4099
	dst := make([]byte, 4099)
	if err := decryptGCMRange(key, iv, int64(off), dst, ct[off:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, plain[off:]) {
		t.Fatal("differs")
	}
}

func TestGCMSizes(t *testing.T) {
	for _, c := range []struct {
		cipher, plain int64
		err           error
	}{
		{0, 0, ErrTruncated}, {15, 0, ErrTruncated}, {16, 0, nil}, {1016, 1000, nil},
		{MaxGCMPlaintext + 16, MaxGCMPlaintext, nil}, {MaxGCMPlaintext + 17, 0, ErrMalformed},
	} {
		p, err := GCMPlainSize(c.cipher)
		if c.err != nil {
			mustFail(t, err, c.err)
			continue
		}
		if err != nil || p != c.plain {
			t.Fatalf("GCMPlainSize(%d) = %d, %v", c.cipher, p, err)
		}
		if gcmCipherSize(p) != c.cipher {
			t.Fatalf("gcmCipherSize(%d) = %d", p, gcmCipherSize(p))
		}
	}
}

func TestNewDecryptReaderDispatch(t *testing.T) {
	key, iv := testKeyIV(t)
	plain := testBytes(12, 100)
	r, err := newDecryptReader(bytes.NewReader(stdSeal(t, key, iv, plain)), key, CEKAlgGCM, iv)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("GCM: %v", err)
	}
	civ := testBytes(13, CBCIVSize)
	r, err = newDecryptReader(bytes.NewReader(cbcEncrypt(t, key, civ, plain)), key, CEKAlgCBC, civ)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("CBC: %v", err)
	}
	_, err = newDecryptReader(nil, key, "AES/CTR/NoPadding", iv)
	mustFail(t, err, ErrUnsupported)
	_, err = newDecryptReader(nil, key, CEKAlgGCM, civ)
	mustFail(t, err, ErrMalformed)
	_, err = newDecryptReader(nil, key, CEKAlgCBC, iv)
	mustFail(t, err, ErrMalformed)
}

func TestGFInv(t *testing.T) {
	one := gfElem{hi: 1 << 63}
	for _, x := range []gfElem{one, {hi: 1}, {lo: 1}, {0x0123456789abcdef, 0xfedcba9876543210}} {
		if got := gfMul(x, gfInv(x)); got != one {
			t.Fatalf("x·x^-1 = %v for x = %v", got, x)
		}
	}
}

// TestGCMSealerFusedPath forces the fused 16-byte-nonce path from the second
// chunk on (fusedAfter = 0) and checks in-place, out-of-place and
// EncryptWriter sealing against one-shot Seal, across chunk boundaries and
// with final pieces of every length mod 16.
func TestGCMSealerFusedPath(t *testing.T) {
	old := fusedAfter
	fusedAfter = 0
	defer func() { fusedAfter = old }()
	key, iv := testKeyIV(t)
	for _, size := range []int{ghashChunk + 1, ghashChunk + 16, 2*ghashChunk + 15, 3*ghashChunk + 100, 1<<20 + 7} {
		plain := testBytes(uint64(size), size)
		want := stdSeal(t, key, iv, plain)
		for _, part := range []int{16, 4096, ghashChunk, ghashChunk + 16, 1 << 20} {
			t.Run(fmt.Sprintf("size=%d/part=%d", size, part), func(t *testing.T) {
				inPlace := bytes.Clone(plain)
				outOfPlace := make([]byte, size)
				s1, _ := newGCMSealer(key, iv)
				s2, _ := newGCMSealer(key, iv)
				for off := 0; off < size; off += part {
					end := min(off+part, size)
					_ = s1.Seal(inPlace[off:end], inPlace[off:end])
					_ = s2.Seal(outOfPlace[off:end], plain[off:end])
				}
				if !bytes.Equal(append(inPlace, s1.Tag()...), want) {
					t.Fatal("in place differs")
				}
				if !bytes.Equal(append(outOfPlace, s2.Tag()...), want) {
					t.Fatal("out of place differs")
				}
				var buf bytes.Buffer
				w, _ := newEncryptWriter(&buf, key, iv)
				_ = writeInSteps(w, plain, part)
				_ = w.Close()
				if !bytes.Equal(buf.Bytes(), want) {
					t.Fatal("EncryptWriter differs")
				}
			})
		}
	}
}

// TestGCMSealerLeavesSpareCapacity: Seal must not touch dst beyond
// len(src), even when dst has spare capacity.
func TestGCMSealerLeavesSpareCapacity(t *testing.T) {
	old := fusedAfter
	fusedAfter = 0
	defer func() { fusedAfter = old }()
	key, iv := testKeyIV(t)
	buf := bytes.Repeat([]byte{0xAA}, 3*ghashChunk+64)
	s, _ := newGCMSealer(key, iv)
	for off := 0; off < 3*ghashChunk; off += ghashChunk {
		part := buf[off : off+ghashChunk]
		_ = s.Seal(part, part)
		if !bytes.Equal(buf[off+ghashChunk:], bytes.Repeat([]byte{0xAA}, len(buf)-off-ghashChunk)) {
			t.Fatalf("bytes after part %d changed", off/ghashChunk)
		}
	}
}
