package cse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// fakeKMS is an in-memory KMSClient. A blob decrypts only with the exact
// encryption context it was generated with, like KMS.
type fakeKMS struct {
	mu       sync.Mutex
	meta     *types.KeyMetadata
	describe error // returned by DescribeKey
	fail     error // returned by GenerateDataKey and Decrypt
	blobs    map[string]fakeBlob
	lastGen  *kms.GenerateDataKeyInput
	lastDec  *kms.DecryptInput
	next     byte
}

type fakeBlob struct {
	key []byte
	ec  map[string]string
}

func newFakeKMS() *fakeKMS {
	return &fakeKMS{
		meta: &types.KeyMetadata{KeyState: types.KeyStateEnabled, Enabled: true,
			KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt},
		blobs: map[string]fakeBlob{},
	}
}

var _ KMSClient = (*fakeKMS)(nil)

func (f *fakeKMS) DescribeKey(_ context.Context, in *kms.DescribeKeyInput, _ ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	if f.describe != nil {
		return nil, f.describe
	}
	return &kms.DescribeKeyOutput{KeyMetadata: f.meta}, nil
}

func (f *fakeKMS) GenerateDataKey(_ context.Context, in *kms.GenerateDataKeyInput, _ ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastGen = in
	if f.fail != nil {
		return nil, f.fail
	}
	f.next++
	key := testBytes(uint64(100+f.next), 32)
	blob := fmt.Sprintf("blob-%d-%s", f.next, *in.KeyId)
	f.blobs[blob] = fakeBlob{key: bytes.Clone(key), ec: maps.Clone(in.EncryptionContext)}
	return &kms.GenerateDataKeyOutput{Plaintext: key, CiphertextBlob: []byte(blob), KeyId: in.KeyId}, nil
}

func (f *fakeKMS) Decrypt(_ context.Context, in *kms.DecryptInput, _ ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastDec = in
	if f.fail != nil {
		return nil, f.fail
	}
	b, ok := f.blobs[string(in.CiphertextBlob)]
	if !ok || !maps.Equal(b.ec, in.EncryptionContext) {
		return nil, &types.InvalidCiphertextException{Message: ptr("bad")}
	}
	return &kms.DecryptOutput{Plaintext: bytes.Clone(b.key)}, nil
}

func ptr[T any](v T) *T { return &v }

// apiErr is an API error with a code, like smithy.GenericAPIError.
type apiErr struct{ code string }

func (e apiErr) Error() string     { return e.code + ": denied" }
func (e apiErr) ErrorCode() string { return e.code }

func TestKMSContextWrap(t *testing.T) {
	f := newFakeKMS()
	p, err := NewKMSProvider(t.Context(), f, "alias/test", KMSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := KeyRequest{CEKAlg: CEKAlgGCM, MatDesc: map[string]string{"Path": "s3://b/k", "JobflowId": "j-1"}}
	key, w, err := p.GenerateKey(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	wantEC := map[string]string{"Path": "s3://b/k", "JobflowId": "j-1", ReservedCEKAlgKey: CEKAlgGCM}
	if !maps.Equal(f.lastGen.EncryptionContext, wantEC) || !maps.Equal(w.MatDesc, wantEC) {
		t.Fatalf("EC %v, matdesc %v, want %v", f.lastGen.EncryptionContext, w.MatDesc, wantEC)
	}
	if *f.lastGen.KeyId != "alias/test" || f.lastGen.KeySpec != types.DataKeySpecAes256 {
		t.Fatalf("GenerateDataKey input %+v", f.lastGen)
	}
	if w.WrapAlg != WrapKMSContext || w.CEKAlg != CEKAlgGCM || len(key) != 32 {
		t.Fatalf("wrapped %+v", w)
	}
	if _, ok := req.MatDesc[ReservedCEKAlgKey]; ok {
		t.Fatal("caller's map was modified")
	}
	got, err := p.DecryptKey(t.Context(), w)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("DecryptKey: %v", err)
	}
	if f.lastDec.KeyId != nil {
		t.Fatal("Decrypt sent a KeyId by default")
	}
	if !maps.Equal(f.lastDec.EncryptionContext, wantEC) {
		t.Fatalf("Decrypt EC %v", f.lastDec.EncryptionContext)
	}
	strict, _ := NewKMSProvider(t.Context(), f, "alias/test", KMSOptions{StrictKeyID: true})
	if _, err := strict.DecryptKey(t.Context(), w); err != nil || f.lastDec.KeyId == nil || *f.lastDec.KeyId != "alias/test" {
		t.Fatalf("strict: %v", err)
	}
}

func TestKMSContextReservedKey(t *testing.T) {
	p, _ := NewKMSProvider(t.Context(), newFakeKMS(), "k", KMSOptions{})
	_, _, err := p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM, MatDesc: map[string]string{ReservedCEKAlgKey: CEKAlgGCM}})
	mustFail(t, err, ErrContextMismatch)
}

func TestKMSContextCEKAlgBinding(t *testing.T) {
	f := newFakeKMS()
	p, _ := NewKMSProvider(t.Context(), f, "k", KMSOptions{})
	_, w, err := p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM})
	if err != nil {
		t.Fatal(err)
	}
	// Missing reserved key (SES-written objects, §11.4).
	missing := w
	missing.MatDesc = map[string]string{}
	f.lastDec = nil
	_, err = p.DecryptKey(t.Context(), missing)
	mustFail(t, err, ErrContextMismatch)
	// Object claims CBC but the key was bound to GCM.
	mismatched := w
	mismatched.CEKAlg = CEKAlgCBC
	_, err = p.DecryptKey(t.Context(), mismatched)
	mustFail(t, err, ErrContextMismatch)
	if f.lastDec != nil {
		t.Fatal("KMS was called despite the failed binding check")
	}
	// A changed context reaches KMS, which refuses it.
	changed := w
	changed.MatDesc = maps.Clone(w.MatDesc)
	changed.MatDesc["extra"] = "x"
	_, err = p.DecryptKey(t.Context(), changed)
	mustFail(t, err, ErrContextMismatch)
}

func TestKMSLegacyWrap(t *testing.T) {
	f := newFakeKMS()
	p, err := NewKMSProvider(t.Context(), f, "arn:aws:kms:us-east-1:111122223333:key/abc", KMSOptions{Wrap: WrapKMS})
	if err != nil {
		t.Fatal(err)
	}
	key, w, err := p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM, MatDesc: map[string]string{"Path": "s3://b/k"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{LegacyKMSKeyIDKey: "arn:aws:kms:us-east-1:111122223333:key/abc", "Path": "s3://b/k"}
	if !maps.Equal(w.MatDesc, want) || !maps.Equal(f.lastGen.EncryptionContext, want) || w.WrapAlg != WrapKMS {
		t.Fatalf("matdesc %v EC %v", w.MatDesc, f.lastGen.EncryptionContext)
	}
	got, err := p.DecryptKey(t.Context(), w)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("DecryptKey: %v", err)
	}
	// The request wins on conflicts (§4.2).
	_, w2, _ := p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgCBC, MatDesc: map[string]string{LegacyKMSKeyIDKey: "alias/other"}})
	if w2.MatDesc[LegacyKMSKeyIDKey] != "alias/other" || w2.CEKAlg != CEKAlgCBC {
		t.Fatalf("merge: %v", w2.MatDesc)
	}
	// kms_cmk_id is required on read.
	noID := w
	noID.MatDesc = map[string]string{"Path": "s3://b/k"}
	_, err = p.DecryptKey(t.Context(), noID)
	mustFail(t, err, ErrContextMismatch)
	// A kms+context provider still reads legacy kms objects.
	pc, _ := NewKMSProvider(t.Context(), f, "other", KMSOptions{})
	if got, err := pc.DecryptKey(t.Context(), w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("cross read: %v", err)
	}
	_, err = pc.DecryptKey(t.Context(), WrappedKey{WrapAlg: WrapAESGCM})
	mustFail(t, err, ErrUnsupported)
	_, err = NewKMSProvider(t.Context(), f, "k", KMSOptions{Wrap: "AES/GCM"})
	mustFail(t, err, ErrUnsupported)
}

func TestKMSKeyRefusedAtConstruction(t *testing.T) {
	for _, c := range []struct {
		name string
		meta *types.KeyMetadata
		err  error
		msg  string
	}{
		{"disabled", &types.KeyMetadata{KeyState: types.KeyStateDisabled, KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeEncryptDecrypt}, nil, "disabled"},
		{"pending deletion", &types.KeyMetadata{KeyState: types.KeyStatePendingDeletion}, nil, "KeyState PendingDeletion"},
		{"asymmetric", &types.KeyMetadata{KeyState: types.KeyStateEnabled, Enabled: true, KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeEncryptDecrypt}, nil, "asymmetric (KeySpec RSA_2048)"},
		{"sign", &types.KeyMetadata{KeyState: types.KeyStateEnabled, Enabled: true, KeySpec: types.KeySpecSymmetricDefault, KeyUsage: types.KeyUsageTypeSignVerify}, nil, "KeyUsage SIGN_VERIFY"},
		{"not found", nil, &types.NotFoundException{Message: ptr("no such key")}, "not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeKMS()
			f.meta, f.describe = c.meta, c.err
			_, err := NewKMSProvider(t.Context(), f, "alias/mine", KMSOptions{})
			mustFail(t, err, ErrKeyUnusable)
			if !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "alias/mine") {
				t.Fatalf("message %q lacks %q or the key name", err, c.msg)
			}
		})
	}
	// Emulators that omit KeySpec/KeyUsage are accepted.
	f := newFakeKMS()
	f.meta = &types.KeyMetadata{KeyState: types.KeyStateEnabled, Enabled: true}
	if _, err := NewKMSProvider(t.Context(), f, "k", KMSOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestKMSErrorMapping(t *testing.T) {
	for _, c := range []struct {
		err  error
		want error
	}{
		{&types.InvalidCiphertextException{}, ErrContextMismatch},
		{&types.IncorrectKeyException{}, ErrKeyAccess},
		{apiErr{"AccessDeniedException"}, ErrKeyAccess},
		{&types.DisabledException{}, ErrKeyUnusable},
		{&types.KMSInvalidStateException{}, ErrKeyUnusable},
		{&types.NotFoundException{}, ErrKeyUnusable},
		{&types.KeyUnavailableException{}, ErrKeyUnusable},
		{errors.New("connection reset"), ErrKeyService},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), ErrKeyService},
		{apiErr{"ThrottlingException"}, ErrKeyService},
		{apiErr{"SomethingNew"}, ErrKeyAccess},
	} {
		t.Run(fmt.Sprintf("%T", c.err), func(t *testing.T) {
			f := newFakeKMS()
			p, _ := NewKMSProvider(t.Context(), f, "k", KMSOptions{})
			_, w, _ := p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM})
			f.fail = c.err
			_, err := p.DecryptKey(t.Context(), w)
			mustFail(t, err, c.want)
			if !errors.Is(err, c.err) {
				t.Fatal("original KMS error not wrapped")
			}
			if errors.Is(c.err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "KMS timeout") {
				t.Errorf("error %q does not say KMS timeout", err)
			}
			_, _, err = p.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM})
			mustFail(t, err, c.want)
		})
	}
}
