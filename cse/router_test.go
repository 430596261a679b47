package cse

import (
	"context"
	"fmt"
	"testing"
)

// stubProvider answers with fixed results and counts calls.
type stubProvider struct {
	name       string
	decryptErr error
	calls      int
}

func (s *stubProvider) GenerateKey(context.Context, KeyRequest) ([]byte, WrappedKey, error) {
	return make([]byte, KeySize), WrappedKey{WrapAlg: WrapAESGCM, MatDesc: map[string]string{"by": s.name}}, nil
}

func (s *stubProvider) DecryptKey(context.Context, WrappedKey) ([]byte, error) {
	s.calls++
	if s.decryptErr != nil {
		return nil, s.decryptErr
	}
	return []byte(s.name), nil
}

func TestRouterRuleSelection(t *testing.T) {
	p := func(n string) *stubProvider { return &stubProvider{name: n} }
	rules := []Rule{{"a/", p("a")}, {"a/b/", p("ab")}, {"a/b/c", p("abc")}, {"", p("default")}, {"x", p("x")}}
	r, err := NewRouter(rules)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"a/1": "a", "a/b/1": "ab", "a/b/c": "abc", "a/b/cd/e": "abc", "a/b": "a", "a": "default",
		"xy": "x", "": "default", "b/a/": "default",
	} {
		_, w, err := r.GenerateKey(t.Context(), KeyRequest{Key: key})
		if err != nil || w.MatDesc["by"] != want {
			t.Errorf("%q: chose %q (%v), want %q", key, w.MatDesc["by"], err, want)
		}
		if prefix, ok := r.RuleFor(key); !ok || (prefix == "" && want != "default") {
			t.Errorf("RuleFor(%q) = %q, %v", key, prefix, ok)
		}
	}
	// Without a default, unmatched keys have no master key.
	r, _ = NewRouter(rules[:3])
	_, _, err = r.GenerateKey(t.Context(), KeyRequest{Key: "z/1"})
	mustFail(t, err, ErrNoMasterKey)
	if _, ok := r.RuleFor("z/1"); ok {
		t.Fatal("RuleFor matched without a rule")
	}
	// The caller's slice is not reordered.
	if rules[0].Prefix != "a/" {
		t.Fatal("NewRouter sorted the caller's rules")
	}
}

func TestNewRouterErrors(t *testing.T) {
	p := &stubProvider{}
	for name, c := range map[string]struct {
		rules   []Rule
		readers []Provider
	}{
		"duplicate prefix":  {[]Rule{{"a/", p}, {"a/", p}}, nil},
		"duplicate default": {[]Rule{{"", p}, {"", p}}, nil},
		"nil rule provider": {[]Rule{{"a/", nil}}, nil},
		"nil reader":        {nil, []Provider{p, nil}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewRouter(c.rules, c.readers...)
			mustFail(t, err, ErrMalformed)
		})
	}
}

func TestRouterDecryptPrecedence(t *testing.T) {
	unsupported := fmt.Errorf("first: %w", ErrUnsupported)
	unsupported2 := fmt.Errorf("second: %w", ErrUnsupported)
	noKey := fmt.Errorf("no key {\"keyname\":\"x\"}: %w", ErrNoMasterKey)
	noKey2 := fmt.Errorf("other no key: %w", ErrNoMasterKey)
	auth := fmt.Errorf("tag: %w", ErrAuthentication)
	access := fmt.Errorf("kms: %w", ErrKeyAccess)
	for name, c := range map[string]struct {
		errs      []error // nil: succeeds
		want      error   // nil: success
		wantCalls []int
	}{
		"first succeeds":           {[]error{nil, nil}, nil, []int{1, 0}},
		"skip unsupported":         {[]error{unsupported, nil}, nil, []int{1, 1}},
		"skip no key":              {[]error{noKey, nil}, nil, []int{1, 1}},
		"authentication stops":     {[]error{unsupported, auth, nil}, auth, []int{1, 1, 0}},
		"key access stops":         {[]error{access, nil}, access, []int{1, 0}},
		"no key beats unsupported": {[]error{unsupported, noKey, unsupported2}, noKey, []int{1, 1, 1}},
		"first no key":             {[]error{noKey, noKey2}, noKey, []int{1, 1}},
		"all unsupported":          {[]error{unsupported, unsupported2}, unsupported, []int{1, 1}},
	} {
		t.Run(name, func(t *testing.T) {
			var readers []Provider
			var stubs []*stubProvider
			for i, e := range c.errs {
				s := &stubProvider{name: fmt.Sprint(i), decryptErr: e}
				stubs = append(stubs, s)
				readers = append(readers, s)
			}
			r, err := NewRouter(nil, readers...)
			if err != nil {
				t.Fatal(err)
			}
			key, err := r.DecryptKey(t.Context(), WrappedKey{WrapAlg: WrapAESGCM})
			if c.want == nil {
				if err != nil || len(key) == 0 {
					t.Fatalf("got %v", err)
				}
			} else if err != c.want { // the reader's own error, unwrapped
				t.Fatalf("got %v, want %v", err, c.want)
			}
			for i, s := range stubs {
				if s.calls != c.wantCalls[i] {
					t.Fatalf("reader %d called %d times, want %d", i, s.calls, c.wantCalls[i])
				}
			}
		})
	}
}

func TestRouterReadersDefaultToRules(t *testing.T) {
	a := &stubProvider{name: "a", decryptErr: fmt.Errorf("x: %w", ErrNoMasterKey)}
	b := &stubProvider{name: "b"}
	r, _ := NewRouter([]Rule{{"a/", a}, {"b/", b}})
	if key, err := r.DecryptKey(t.Context(), WrappedKey{}); err != nil || string(key) != "b" {
		t.Fatalf("got %q, %v", key, err)
	}
	empty, _ := NewRouter(nil)
	_, err := empty.DecryptKey(t.Context(), WrappedKey{MatDesc: map[string]string{"keyname": "q"}})
	mustFail(t, err, ErrNoMasterKey)
}
