package cse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// encryptingKMS is fakeKMS with KMS Encrypt.
type encryptingKMS struct{ *fakeKMS }

func (f encryptingKMS) Encrypt(_ context.Context, in *kms.EncryptInput, _ ...func(*kms.Options)) (*kms.EncryptOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	blob := fmt.Sprintf("enc-%d-%s", f.next, *in.KeyId)
	f.blobs[blob] = fakeBlob{key: bytes.Clone(in.Plaintext), ec: maps.Clone(in.EncryptionContext)}
	return &kms.EncryptOutput{CiphertextBlob: []byte(blob), KeyId: in.KeyId}, nil
}

// TestWrapKeyRoundTrip: a data key generated under one key and wrapped
// again under another (KMS with either wrap, a keyring AES key) unwraps to
// the same key, with the caller's materials description kept and the
// content algorithm bound.
func TestWrapKeyRoundTrip(t *testing.T) {
	ctx := context.Background()
	src, err := NewKeyringProvider([]MasterKey{{Name: "old", AES: testBytes(1, 32)}}, "old")
	if err != nil {
		t.Fatal(err)
	}
	dk, _, err := src.GenerateKey(ctx, KeyRequest{CEKAlg: CEKAlgGCMCommit})
	if err != nil {
		t.Fatal(err)
	}
	fk := encryptingKMS{newFakeKMS()}
	ctxKMS, err := NewKMSProvider(ctx, fk, "alias/new", KMSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := NewKMSProvider(ctx, fk, "alias/new", KMSOptions{Wrap: WrapKMS})
	if err != nil {
		t.Fatal(err)
	}
	ring, err := NewKeyringProvider([]MasterKey{{Name: "new", AES: testBytes(2, 32)}}, "new")
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]interface {
		Provider
		KeyWrapper
	}{"kms+context": ctxKMS, "kms": legacy, "keyring": ring} {
		w, err := p.WrapKey(ctx, dk, KeyRequest{CEKAlg: CEKAlgGCMCommit, MatDesc: map[string]string{"Path": "s3://b/k"}})
		if err != nil {
			t.Fatalf("%s: WrapKey: %v", name, err)
		}
		if w.MatDesc["Path"] != "s3://b/k" || w.CEKAlg != CEKAlgGCMCommit {
			t.Fatalf("%s: wrapped key %+v lost the request", name, w)
		}
		got, err := p.DecryptKey(ctx, w)
		if err != nil || !bytes.Equal(got, dk) {
			t.Fatalf("%s: DecryptKey = %x, %v; want the original key", name, got, err)
		}
		w.CEKAlg = CEKAlgGCM // the binding: another content algorithm must not unwrap
		if name != "kms" {
			if _, err := p.DecryptKey(ctx, w); err == nil {
				t.Fatalf("%s: a key rebound to another content algorithm unwrapped", name)
			}
		}
	}
	if _, err := ring.WrapKey(ctx, dk[:7], KeyRequest{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a 7-byte key: %v, want ErrMalformed", err)
	}
	plain, _ := NewKMSProvider(ctx, newFakeKMS(), "k", KMSOptions{})
	if _, err := plain.WrapKey(ctx, dk, KeyRequest{}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a client without Encrypt: %v, want ErrUnsupported", err)
	}
}
