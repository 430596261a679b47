package cse

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// testBytes returns n deterministic pseudo-random bytes for the seed.
func testBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	b := make([]byte, n)
	r := rand.NewChaCha8(s)
	_, _ = r.Read(b)
	return b
}

func testKeyIV(t testing.TB) (key, iv []byte) {
	t.Helper()
	return testBytes(1, KeySize), testBytes(2, GCMIVSize)
}

// stdSeal is the reference: the standard library's one-shot GCM.
func stdSeal(t testing.TB, key, iv, plain []byte) []byte {
	t.Helper()
	return stdGCM(t, key).Seal(nil, iv, plain, nil)
}

// stepWriter forwards to w in pieces of at most step bytes.
func writeInSteps(w io.Writer, p []byte, step int) error {
	for len(p) > 0 {
		k := min(step, len(p))
		n, err := w.Write(p[:k])
		if err != nil {
			return err
		}
		if n != k {
			return io.ErrShortWrite
		}
		p = p[k:]
	}
	return nil
}

// readInSteps reads r to EOF with a buffer of step bytes.
func readInSteps(r io.Reader, step int) ([]byte, error) {
	var out bytes.Buffer
	buf := make([]byte, step)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// mustFail asserts err wraps want.
func mustFail(t *testing.T, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want an error wrapping %v", err, want)
	}
}

// errAfterReader returns data then a non-EOF error.
type errAfterReader struct {
	r   io.Reader
	err error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

// lender is a Lender over body that lends at most step bytes at a time and
// scribbles over what it lent before, so that a reader keeping a lent slice
// past the next call reads garbage.
type lender struct {
	body []byte
	step int
	last []byte // the copy lent last
	lent int    // lends so far
}

var _ Lender = (*lender)(nil)

func (l *lender) Read(p []byte) (int, error) {
	panic("lender: Read called: the decryptor must use Next")
}

func (l *lender) Next(n int) ([]byte, error) {
	if n <= 0 {
		panic("lender: Next with n <= 0")
	}
	for i := range l.last {
		l.last[i] ^= 0xa5
	}
	if len(l.body) == 0 {
		return nil, io.EOF
	}
	k := min(n, l.step, len(l.body))
	l.last = bytes.Clone(l.body[:k])
	l.body = l.body[k:]
	l.lent++
	return l.last, nil
}
