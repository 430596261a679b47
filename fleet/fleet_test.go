package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

func keyring(t *testing.T, name string, seed byte) *cse.KeyringProvider {
	t.Helper()
	p, err := cse.NewKeyringProvider([]cse.MasterKey{{Name: name, AES: bytes.Repeat([]byte{seed}, 32)}}, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// unwrapWith unwraps with the first of ps that can.
func unwrapWith(ps ...cse.Provider) func(context.Context, cse.WrappedKey) ([]byte, string, error) {
	return func(ctx context.Context, w cse.WrappedKey) ([]byte, string, error) {
		var err error
		for _, p := range ps {
			var k []byte
			if k, err = p.DecryptKey(ctx, w); err == nil {
				return k, "", nil
			}
		}
		return nil, "", err
	}
}

type collect struct {
	bytes.Buffer
}

func (c *collect) results(t *testing.T, status Status) []string {
	var keys []string
	for _, l := range strings.Split(c.String(), "\n") {
		f := strings.Split(l, "\t")
		if len(f) >= 2 && f[0] == string(status) {
			keys = append(keys, strings.TrimPrefix(f[1], "file:///x/"))
		}
	}
	return keys
}

func options(s objectstore.Store, out io.Writer, unwrap ...cse.Provider) Options {
	return Options{Store: s, URI: "file:///x/", Unwrap: unwrapWith(unwrap...), Concurrency: 3,
		Report: &Reporter{W: out}}
}

func read(t *testing.T, s objectstore.Store, key string) ([]byte, *objectstore.Info) {
	t.Helper()
	rc, info, err := s.Get(context.Background(), key, objectstore.GetOptions{Length: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b, info
}

// TestFleetLocal: encrypt, verify, rewrap and verify again on a local store
// with keyring keys; what a second run does; damage found by verify.
func TestFleetLocal(t *testing.T) {
	ctx := context.Background()
	s, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, b := keyring(t, "a", 1), keyring(t, "b", 2)
	plain := map[string][]byte{}
	for i := range 20 {
		k := fmt.Sprintf("d/%02d", i)
		plain[k] = bytes.Repeat([]byte{byte(i)}, i*1000)
		if _, err := s.Put(ctx, k, plain[k], map[string]string{"user": "u", metadata.AttrMode: "100640"}); err != nil {
			t.Fatal(err)
		}
	}

	var out collect
	sum, err := Encrypt(ctx, ctx, options(s, &out, a), EncryptOptions{Provider: a})
	if err != nil || sum.Changed != 20 {
		t.Fatalf("encrypt: %+v %v\n%s", sum, err, out.String())
	}
	out.Reset()
	if sum, err := Encrypt(ctx, ctx, options(s, &out, a), EncryptOptions{Provider: a}); err != nil || sum.Skipped != 20 {
		t.Fatalf("second encrypt: %+v %v", sum, err)
	}
	if sum, err := Verify(ctx, ctx, options(s, &out, a)); err != nil || sum.Checked != 20 || sum.Failed != 0 {
		t.Fatalf("verify: %+v %v", sum, err)
	}
	_, before := read(t, s, "d/05")

	ro := RewrapOptions{Wrapper: func(cse.WrappedKey, int) cse.KeyWrapper { return b }, Target: "b", IsTarget: func(w cse.WrappedKey, _ string) bool { return w.MatDesc[cse.KeyNameKey] == "b" }}
	out.Reset()
	if sum, err := Rewrap(ctx, ctx, options(s, &out, a, b), ro); err != nil || sum.Changed != 20 {
		t.Fatalf("rewrap: %+v %v\n%s", sum, err, out.String())
	}
	raw, after := read(t, s, "d/05")
	if before.ETag != after.ETag || after.Metadata["user"] != "u" || after.Metadata[metadata.AttrMode] != "100640" {
		t.Fatalf("rewrap changed the body or lost metadata: %v → %v", before, after)
	}
	if sum, err := Rewrap(ctx, ctx, options(s, &out, a, b), ro); err != nil || sum.Skipped != 20 {
		t.Fatalf("second rewrap: %+v %v", sum, err)
	}
	// Only b now.
	if sum, err := Verify(ctx, ctx, options(s, &out, b)); err != nil || sum.Failed != 0 {
		t.Fatalf("verify with b: %+v %v", sum, err)
	}
	raw[100] ^= 1
	if _, err := s.Put(ctx, "d/05", raw, after.Metadata); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	sum, err = Verify(ctx, ctx, options(s, &out, b))
	if !errors.Is(err, ErrFailed) || sum.Failed != 1 || fmt.Sprint(out.results(t, StatusFailed)) != "[d/05]" {
		t.Fatalf("verify of a damaged object: %+v %v\n%s", sum, err, out.String())
	}
	if !strings.Contains(out.String(), "authentication failed") {
		t.Fatalf("failure without its cause: %s", out.String())
	}
}

// TestFleetStop: a run whose stop context is done takes no more objects and
// says it was interrupted.
func TestFleetStop(t *testing.T) {
	ctx := context.Background()
	s, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := s.Put(ctx, fmt.Sprintf("%02d", i), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	stop, cancel := context.WithCancel(ctx)
	cancel()
	var out collect
	a := keyring(t, "a", 1)
	sum, err := Encrypt(ctx, stop, options(s, &out, a), EncryptOptions{Provider: a})
	if !errors.Is(err, ErrInterrupted) || !sum.Interrupted || sum.Checked != 0 {
		t.Fatalf("stopped run: %+v %v", sum, err)
	}
	sum, err = Encrypt(ctx, ctx, options(s, &out, a), EncryptOptions{Provider: a})
	if err != nil || sum.Changed != 50 {
		t.Fatalf("run after the stop: %+v %v", sum, err)
	}
}

// TestFleetNothing: a target naming nothing is an error, not an empty
// success.
func TestFleetNothing(t *testing.T) {
	ctx := context.Background()
	s, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "dir/a", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	var out collect
	o := options(s, &out)
	for path, want := range map[string]error{"dri": ErrNothing, "dir/b": ErrNothing, "dir": nil, "dir/a": nil, "": nil} {
		o.Path = path
		if _, err := Verify(ctx, ctx, o); !errors.Is(err, want) {
			t.Errorf("verify %q: %v, want %v", path, err, want)
		}
	}
}
