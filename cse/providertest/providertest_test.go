package providertest_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/cse/providertest"
)

// toy is a reference provider that binds everything: its blob is a nonce
// and AES-GCM of the data key under a master key, with the content
// algorithm and the materials description as additional data. It stores
// the caller's materials description as it is.
type toy struct{ aead cipher.AEAD }

const toyWrap = "providertest-toy"

func newToy(master []byte) *toy {
	block, err := aes.NewCipher(master)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &toy{aead}
}

func toyAAD(cekAlg string, md map[string]string) []byte {
	if len(md) == 0 {
		md = nil
	}
	b, _ := json.Marshal([]any{cekAlg, md}) // map keys sorted
	return b
}

func (p *toy) GenerateKey(_ context.Context, req cse.KeyRequest) ([]byte, cse.WrappedKey, error) {
	key := make([]byte, cse.KeySize)
	nonce := make([]byte, p.aead.NonceSize())
	_, _ = rand.Read(key)
	_, _ = rand.Read(nonce)
	md := maps.Clone(req.MatDesc)
	if md == nil {
		md = map[string]string{}
	}
	blob := p.aead.Seal(nonce, nonce, key, toyAAD(req.CEKAlg, md))
	return key, cse.WrappedKey{WrapAlg: toyWrap, CEKAlg: req.CEKAlg, Blob: blob, MatDesc: md}, nil
}

func (p *toy) DecryptKey(_ context.Context, w cse.WrappedKey) ([]byte, error) {
	if w.WrapAlg != toyWrap {
		return nil, fmt.Errorf("toy: wrap %q: %w", w.WrapAlg, cse.ErrUnsupported)
	}
	n := p.aead.NonceSize()
	if len(w.Blob) != n+cse.KeySize+p.aead.Overhead() {
		return nil, fmt.Errorf("toy: blob of %d bytes: %w", len(w.Blob), cse.ErrMalformed)
	}
	key, err := p.aead.Open(nil, w.Blob[:n], w.Blob[n:], toyAAD(w.CEKAlg, w.MatDesc))
	if err != nil {
		return nil, fmt.Errorf("toy: %w", cse.ErrAuthentication)
	}
	return key, nil
}

var toyErrors = map[providertest.Tamper][]error{
	providertest.CEKAlg:        {cse.ErrAuthentication},
	providertest.MatDescAdd:    {cse.ErrAuthentication},
	providertest.MatDescChange: {cse.ErrAuthentication},
	providertest.MatDescRemove: {cse.ErrAuthentication},
	providertest.WrapAlg:       {cse.ErrUnsupported},
	providertest.BlobBit:       {cse.ErrAuthentication},
	providertest.BlobTruncate:  {cse.ErrMalformed},
}

func newToyFactory() func(t *testing.T) cse.Provider {
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	return func(*testing.T) cse.Provider { return newToy(master) }
}

func TestToy(t *testing.T) {
	providertest.Run(t, newToyFactory(), providertest.Options{Errors: toyErrors})
}

// broken wraps the toy with one of the bugs the suite must catch.
type broken struct {
	*toy
	bug string

	mu    sync.Mutex
	cache map[string][]byte
}

func (b *broken) GenerateKey(ctx context.Context, req cse.KeyRequest) ([]byte, cse.WrappedKey, error) {
	if b.bug == "writes-request" && req.MatDesc != nil {
		req.MatDesc["broken"] = "1"
	}
	key, w, err := b.toy.GenerateKey(ctx, req)
	if err != nil {
		return nil, w, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.bug {
	case "aliases-request":
		if req.MatDesc != nil {
			w.MatDesc = req.MatDesc
		}
	case "shared-generated-key":
		b.cache[string(w.Blob)] = key // not a copy
	case "blob-only-cache":
		b.cache[string(w.Blob)] = bytes.Clone(key)
	case "same-key":
		if k, ok := b.cache[req.CEKAlg]; ok {
			return bytes.Clone(k), w, nil // another blob, the same key
		}
		b.cache[req.CEKAlg] = bytes.Clone(key)
	}
	return key, w, nil
}

func (b *broken) DecryptKey(ctx context.Context, w cse.WrappedKey) ([]byte, error) {
	b.mu.Lock()
	if k, ok := b.cache[string(w.Blob)]; ok && b.bug != "shared-decrypted-key" {
		b.mu.Unlock()
		return bytes.Clone(k), nil
	}
	if k, ok := b.cache["dec"+string(w.Blob)]; ok {
		b.mu.Unlock()
		return k, nil // the cache's own slice
	}
	b.mu.Unlock()
	if b.bug == "object-bound" && w.Object != "" && !strings.HasPrefix(w.Object, "s3://providertest-bucket/") {
		return nil, fmt.Errorf("broken: object %q: %w", w.Object, cse.ErrKeyAccess)
	}
	key, err := b.toy.DecryptKey(ctx, w)
	if err != nil {
		if b.bug == "wrong-sentinel" {
			return nil, fmt.Errorf("broken: %v: %w", err, cse.ErrKeyAccess)
		}
		return nil, err
	}
	if b.bug == "shared-decrypted-key" {
		b.mu.Lock()
		b.cache["dec"+string(w.Blob)] = key
		b.mu.Unlock()
	}
	return key, nil
}

// TestBroken runs the suite on a broken toy, in the child process that
// TestSuiteCatches starts.
func TestBroken(t *testing.T) {
	bug := os.Getenv("PROVIDERTEST_BROKEN")
	if bug == "" {
		t.Skip("run by TestSuiteCatches")
	}
	newToy := newToyFactory()
	errs := toyErrors
	if bug == "no-table" {
		errs = nil
	}
	providertest.Run(t, func(t *testing.T) cse.Provider {
		return &broken{toy: newToy(t).(*toy), bug: bug, cache: map[string][]byte{}}
	}, providertest.Options{Errors: errs, Rounds: 2})
}

// TestSuiteCatches checks that the suite fails each broken provider, in the
// subtest and with the complaint expected.
func TestSuiteCatches(t *testing.T) {
	if os.Getenv("PROVIDERTEST_BROKEN") != "" {
		t.Skip("in the child")
	}
	for _, c := range []struct{ bug, subtest, says string }{
		{"writes-request", "roundtrip/gcm/matdesc", "wrote to the caller's materials description"},
		{"same-key", "roundtrip/gcm/no-matdesc", "returned the same key"},
		{"blob-only-cache", "tamper/gcm/matdesc-add", "accepted tamper matdesc-add"},
		{"blob-only-cache", "tamper/gcm-commit/cekalg:AES/GCM/NoPadding", "accepted tamper"},
		{"wrong-sentinel", "tamper/gcm/blob-bit:first", "want an error wrapping one of"},
		{"no-table", "tamper/gcm/wrapalg:kms", "Options.Errors has no entry for gcm/wrapalg:kms, wrapalg:kms or wrapalg"},
		{"shared-generated-key", "ownership/zero-generated-key", "another key"},
		{"shared-decrypted-key", "ownership/zero-decrypted-key", "after the caller zeroed"},
		{"aliases-request", "ownership/request-matdesc-changed-after", "changed the wrapped one"},
		{"object-bound", "object", `DecryptKey with Object "s3://providertest-other/elsewhere"`},
	} {
		t.Run(c.bug+"/"+c.subtest, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBroken$")
			cmd.Env = append(os.Environ(), "PROVIDERTEST_BROKEN="+c.bug)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a provider with bug %s:\n%s", c.bug, out)
			}
			failed := "--- FAIL: TestBroken/" + c.subtest + " "
			i := strings.Index(string(out), failed)
			if i < 0 {
				t.Fatalf("no %q in:\n%s", failed, out)
			}
			if next, _, _ := strings.Cut(string(out[i+len(failed):]), "--- "); !strings.Contains(next, c.says) {
				t.Fatalf("%s does not say %q:\n%s", c.subtest, c.says, out[i:])
			}
		})
	}
}

// TestFakeKMS checks the failures FakeKMS answers as KMS does.
func TestFakeKMS(t *testing.T) {
	f := providertest.NewFakeKMS()
	ctx := t.Context()
	id := "alias/a"
	out, err := f.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &id, KeySpec: types.DataKeySpecAes256})
	if err != nil || len(out.Plaintext) != 32 || *out.KeyId != id {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	dec := func(f *providertest.FakeKMS, in *kms.DecryptInput) error {
		t.Helper()
		got, err := f.Decrypt(ctx, in)
		if err == nil && (!bytes.Equal(got.Plaintext, out.Plaintext) || *got.KeyId != id) {
			t.Fatal("Decrypt returned another key or key id")
		}
		return err
	}
	blob := out.CiphertextBlob
	// No context and an empty one are the same, as in KMS.
	for _, ec := range []map[string]string{nil, {}} {
		if err := dec(f, &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: ec}); err != nil {
			t.Fatalf("context %v: %v", ec, err)
		}
	}
	if err := dec(f, &kms.DecryptInput{CiphertextBlob: blob, KeyId: &id}); err != nil {
		t.Fatalf("with its KeyId: %v", err)
	}
	other := "alias/b"
	var incorrect *types.IncorrectKeyException
	if err := dec(f, &kms.DecryptInput{CiphertextBlob: blob, KeyId: &other}); !errors.As(err, &incorrect) {
		t.Fatalf("another KeyId: %v", err)
	}
	var invalid *types.InvalidCiphertextException
	for name, in := range map[string]*kms.DecryptInput{
		"context":     {CiphertextBlob: blob, EncryptionContext: map[string]string{"a": "b"}},
		"flipped bit": {CiphertextBlob: append(bytes.Clone(blob[:len(blob)-1]), blob[len(blob)-1]^1)},
		"truncated":   {CiphertextBlob: blob[:len(blob)-1]},
		"empty":       {},
		"long key id": {CiphertextBlob: []byte{0xff, 0xff, 1, 2, 3}},
	} {
		if err := dec(f, in); !errors.As(err, &invalid) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if err := dec(providertest.NewFakeKMS(), &kms.DecryptInput{CiphertextBlob: blob}); !errors.As(err, &invalid) {
		t.Fatalf("another FakeKMS: %v", err)
	}
}
