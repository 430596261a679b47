package fusefs

import (
	"context"
	"errors"
	"testing"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

func TestSameBody(t *testing.T) {
	mk := func() *object {
		return &object{kind: kindEncrypted, plainSize: 100, info: objectstore.Info{Size: 116, ETag: "a"},
			env: &metadata.Envelope{Version: 2, IV: []byte("iv-iv-iv-iv-"), TagLenBits: 128, PlainLen: 100,
				Key: cse.WrappedKey{WrapAlg: "kms+context", CEKAlg: "AES/GCM/NoPadding", Blob: []byte("blob"), MatDesc: map[string]string{"k": "v"}}}}
	}
	o := mk()
	same := mk()
	same.info.ETag = "b"
	if !sameBody(o, same) {
		t.Error("a metadata copy (new ETag, same envelope) is not taken as the same body")
	}
	for name, change := range map[string]func(n *object){
		"iv":        func(n *object) { n.env.IV = []byte("other-iv-12b") },
		"key":       func(n *object) { n.env.Key.Blob = []byte("other") },
		"size":      func(n *object) { n.info.Size++ },
		"plainsize": func(n *object) { n.plainSize++ },
		"matdesc":   func(n *object) { n.env.Key.MatDesc = map[string]string{"k": "w"} },
		"plaintext": func(n *object) { n.env, n.kind = nil, kindPlain },
	} {
		n := mk()
		change(n)
		if sameBody(o, n) {
			t.Errorf("%s changed: taken as the same body", name)
		}
	}
}

func TestPinRenewsOnce(t *testing.T) {
	renews := 0
	p := &etagPin{etag: "old", renew: func(ctx context.Context, old string) (string, error) {
		renews++
		return "new", nil
	}}
	var seen []string
	err := p.do(context.Background(), func(etag string) error {
		seen = append(seen, etag)
		if etag == "old" {
			return objectstore.ErrPreconditionFailed
		}
		return nil
	})
	if err != nil || len(seen) != 2 || seen[1] != "new" || renews != 1 || p.get() != "new" {
		t.Fatalf("err %v, tried %v, %d renews, pin %q", err, seen, renews, p.get())
	}
	// A renewed pin that fails again fails the read: no loop.
	p.renew = func(ctx context.Context, old string) (string, error) {
		return "", objectstore.ErrPreconditionFailed
	}
	err = p.do(context.Background(), func(string) error { return objectstore.ErrPreconditionFailed })
	if !errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("replaced object: %v, want ErrPreconditionFailed", err)
	}
}
