// Package providertest is a contract suite for cse.Provider
// implementations: what every provider, decorator and router promises its
// callers, checked the same way for each. Only tests import it: those of
// the packages that have providers (cse, keycache) call Run on each of
// them. FakeKMS, an in-memory KMS, lets them run KMSProvider without AWS.
//
// Run checks, as subtests:
//
//   - roundtrip: GenerateKey then DecryptKey gives back the same
//     cse.KeySize-byte key, for each content algorithm the provider supports,
//     with and without a caller materials description. The wrapped key
//     names the content algorithm and keeps the caller's entries; the
//     caller's map is not written to; every key is fresh; and a new instance
//     of the provider unwraps what another instance wrapped.
//   - tamper: a changed CEKAlg, materials-description entry (added, changed,
//     removed), WrapAlg or Blob (a flipped bit, a truncation) makes
//     DecryptKey fail with one of the sentinels Options.Errors allows for
//     that tamper; succeeding is a failure, unless Options.Errors says the
//     wrap does not bind what was changed (Accepted), and even then the key
//     must be the original one.
//   - ownership: keys and wrapped keys are the caller's. Zeroing a key
//     GenerateKey or DecryptKey returned, changing the request's
//     materials description after GenerateKey, or scribbling over the Blob
//     and materials description passed to DecryptKey or returned by
//     GenerateKey changes nothing the provider answers later (this catches
//     caches and pools that hand out or keep shared slices and maps).
//   - concurrent: 16 goroutines generate and unwrap keys at once, and unwrap
//     one shared wrapped key; every result round-trips and every key is
//     distinct. Run it under -race.
//   - object: WrappedKey.Object, which the wrap does not bind, makes no
//     difference to DecryptKey.
package providertest

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/csefs/csefs/cse"
)

// Tamper names one way Run changes a wrapped key before DecryptKey. The
// tampers of one kind are told apart by their target (see Of); Run's
// subtests are named after them.
type Tamper string

// The kinds of tamper.
const (
	// CEKAlg: WrappedKey.CEKAlg is replaced, Of each other content
	// algorithm (cse.CEKAlgGCM, cse.CEKAlgGCMCommit, cse.CEKAlgCBC). If the
	// materials description records the algorithm (kms+context's
	// cse.ReservedCEKAlgKey), the entry is changed with it, so that the
	// tamper reaches the wrap's binding and not only the provider's
	// consistency check (MatDescChange of that entry is that check).
	CEKAlg Tamper = "cekalg"
	// MatDescAdd: an entry "providertest-added" is added.
	MatDescAdd Tamper = "matdesc-add"
	// MatDescChange: the value of one entry is changed, Of each entry name.
	MatDescChange Tamper = "matdesc-change"
	// MatDescRemove: one entry is removed, Of each entry name.
	MatDescRemove Tamper = "matdesc-remove"
	// WrapAlg: WrappedKey.WrapAlg is replaced, Of each other wrap of cse
	// except cse.WrapV1 (V1 RSA PKCS#1 v1.5 has no integrity: about one
	// wrong blob in 50,000 passes its padding check, which would make the
	// suite flaky), and Of UnknownWrap.
	WrapAlg Tamper = "wrapalg"
	// BlobBit: one bit of the Blob is flipped, Of "first", "middle" and
	// "last" byte.
	BlobBit Tamper = "blob-bit"
	// BlobTruncate: the Blob is cut, Of "last-byte" (one byte less), "half"
	// and "empty".
	BlobTruncate Tamper = "blob-truncate"
)

// UnknownWrap is the wrap algorithm no provider knows, a target of WrapAlg.
const UnknownWrap = "providertest-unknown"

// Of returns the tamper of kind t aimed at target, as Run names it:
// MatDescChange.Of(cse.KeyNameKey) is "matdesc-change:keyname".
func (t Tamper) Of(target string) Tamper { return t + ":" + Tamper(target) }

// For narrows t to wrapped keys generated for the content algorithm alg, as
// Run's subtests are named: CEKAlg.Of(cse.CEKAlgCBC).For(cse.CEKAlgGCM) is
// "gcm/cekalg:AES/CBC/PKCS5Padding".
func (t Tamper) For(alg string) Tamper { return Tamper(algName(alg)) + "/" + t }

// kind returns the kind of a targeted tamper ("matdesc-change" of
// "matdesc-change:keyname").
func (t Tamper) kind() Tamper {
	k, _, _ := strings.Cut(string(t), ":")
	return Tamper(k)
}

// Accepted, listed in Options.Errors for a tamper, allows DecryptKey to
// succeed on it, provided it returns the original key: for what the wrap
// does not bind (the S3EC AES/GCM wrap binds the content algorithm but not
// the materials description, whose "keyname" only selects the master key).
//
//lint:ignore ST1012 a marker in Options.Errors, never returned as an error
var Accepted = errors.New("providertest: tamper accepted")

// Options describe the provider under test.
type Options struct {
	// CEKAlgs are the content algorithms GenerateKey supports; nil means
	// cse.CEKAlgGCM and cse.CEKAlgGCMCommit.
	CEKAlgs []string
	// Errors lists, for each tamper, the sentinels DecryptKey may fail with
	// (errors.Is), and Accepted if it may succeed. A tamper of a key
	// generated for content algorithm alg is looked up as
	// tamper.For(alg) first (MatDescChange.Of("keyname").For(cse.CEKAlgGCM)),
	// then as the tamper (MatDescChange.Of("keyname")), then as its kind
	// (MatDescChange). Every tamper Run applies must be found: a missing
	// entry fails the test, naming what DecryptKey returned.
	Errors map[Tamper][]error
	// Rounds is how many round trips each of the 16 goroutines of the
	// concurrent subtest makes; 0 means 8.
	Rounds int
}

// The request Run makes, unless a subtest says otherwise.
const (
	testObject = "s3://providertest-bucket/dir/object"
	testKey    = "dir/object"
)

// callerMatDesc returns a fresh copy of the caller materials description Run
// uses (EMRFS's entries).
func callerMatDesc() map[string]string {
	return map[string]string{"Path": testObject, "JobflowId": "j-providertest"}
}

// Run runs the contract suite. newProvider returns a new instance of the
// provider each time it is called, over the same master keys, so that one
// instance unwraps what another wrapped (it may register cleanups on the t
// it is given).
func Run(t *testing.T, newProvider func(t *testing.T) cse.Provider, opt Options) {
	t.Helper()
	if opt.CEKAlgs == nil {
		opt.CEKAlgs = []string{cse.CEKAlgGCM, cse.CEKAlgGCMCommit}
	}
	if opt.Rounds <= 0 {
		opt.Rounds = 8
	}
	s := &suite{newProvider: newProvider, opt: opt}
	t.Run("roundtrip", s.roundTrip)
	t.Run("tamper", s.tamper)
	t.Run("ownership", s.ownership)
	t.Run("concurrent", s.concurrent)
	t.Run("object", s.object)
}

type suite struct {
	newProvider func(t *testing.T) cse.Provider
	opt         Options
}

// algName names a content algorithm in subtest names.
func algName(alg string) string {
	switch alg {
	case cse.CEKAlgGCM:
		return "gcm"
	case cse.CEKAlgGCMCommit:
		return "gcm-commit"
	}
	return alg
}

// cloneWrapped returns a deep copy of w, as storing it with an object and
// reading it back would.
func cloneWrapped(w cse.WrappedKey) cse.WrappedKey {
	w.Blob = bytes.Clone(w.Blob)
	w.MatDesc = maps.Clone(w.MatDesc)
	return w
}

// generate calls GenerateKey and checks what every provider returns.
func generate(t *testing.T, p cse.Provider, req cse.KeyRequest) ([]byte, cse.WrappedKey) {
	t.Helper()
	asked := maps.Clone(req.MatDesc)
	key, w, err := p.GenerateKey(t.Context(), req)
	if err != nil {
		t.Fatalf("GenerateKey(%s, %v): %v", req.CEKAlg, req.MatDesc, err)
	}
	if len(key) != cse.KeySize {
		t.Fatalf("GenerateKey returned a %d-byte key, want %d", len(key), cse.KeySize)
	}
	if bytes.Count(key, []byte{0}) == len(key) {
		t.Fatal("GenerateKey returned an all-zero key")
	}
	if w.CEKAlg != req.CEKAlg {
		t.Fatalf("GenerateKey(%s) wrapped the key for %q", req.CEKAlg, w.CEKAlg)
	}
	if w.WrapAlg == "" || len(w.Blob) == 0 {
		t.Fatalf("GenerateKey returned wrap algorithm %q and a %d-byte blob", w.WrapAlg, len(w.Blob))
	}
	for k, v := range asked {
		if got, ok := w.MatDesc[k]; !ok || got != v {
			t.Fatalf("the wrapped materials description %v lost the caller's entry %q: %q", w.MatDesc, k, v)
		}
	}
	if !maps.Equal(req.MatDesc, asked) {
		t.Fatalf("GenerateKey wrote to the caller's materials description: %v, was %v", req.MatDesc, asked)
	}
	return key, w
}

// decrypt calls DecryptKey and checks that it returns want.
func decrypt(t *testing.T, p cse.Provider, w cse.WrappedKey, want []byte) {
	t.Helper()
	got, err := p.DecryptKey(t.Context(), w)
	if err != nil {
		t.Fatalf("DecryptKey(%s, %s, %v): %v", w.WrapAlg, w.CEKAlg, w.MatDesc, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("DecryptKey returned another key (%d bytes) than GenerateKey", len(got))
	}
}

func (s *suite) roundTrip(t *testing.T) {
	for _, alg := range s.opt.CEKAlgs {
		for _, withMD := range []bool{false, true} {
			name := algName(alg) + "/no-matdesc"
			if withMD {
				name = algName(alg) + "/matdesc"
			}
			t.Run(name, func(t *testing.T) {
				p := s.newProvider(t)
				req := cse.KeyRequest{CEKAlg: alg, Object: testObject, Key: testKey}
				if withMD {
					req.MatDesc = callerMatDesc()
				}
				key, w := generate(t, p, req)
				decrypt(t, p, w, key)
				decrypt(t, p, cloneWrapped(w), key)
				// Fresh keys: the same request again gives another key and
				// another blob.
				key2, w2 := generate(t, p, req)
				if bytes.Equal(key, key2) || bytes.Equal(w.Blob, w2.Blob) {
					t.Fatal("two GenerateKey calls returned the same key or blob")
				}
				decrypt(t, p, w2, key2)
				decrypt(t, p, w, key)
				// Another instance (another mount) reads what this one wrote.
				decrypt(t, s.newProvider(t), cloneWrapped(w), key)
			})
		}
	}
}

// tampered is one tamper applied to a wrapped key.
type tampered struct {
	name Tamper
	w    cse.WrappedKey
}

var otherWraps = []string{cse.WrapKMSContext, cse.WrapKMS, cse.WrapAESGCM, cse.WrapRSAOAEPSHA1,
	cse.WrapAESWrap, cse.WrapRSAOAEPSHA256, UnknownWrap}

// tampers returns every tamper of w, each applied to its own copy.
func tampers(w cse.WrappedKey) []tampered {
	var out []tampered
	add := func(name Tamper, change func(w *cse.WrappedKey)) {
		c := cloneWrapped(w)
		if c.MatDesc == nil {
			c.MatDesc = map[string]string{}
		}
		change(&c)
		out = append(out, tampered{name, c})
	}
	for _, alg := range []string{cse.CEKAlgGCM, cse.CEKAlgGCMCommit, cse.CEKAlgCBC} {
		if alg == w.CEKAlg {
			continue
		}
		add(CEKAlg.Of(alg), func(c *cse.WrappedKey) {
			if v, ok := c.MatDesc[cse.ReservedCEKAlgKey]; ok && v == c.CEKAlg {
				c.MatDesc[cse.ReservedCEKAlgKey] = alg
			}
			c.CEKAlg = alg
		})
	}
	add(MatDescAdd, func(c *cse.WrappedKey) { c.MatDesc["providertest-added"] = "1" })
	for _, k := range slices.Sorted(maps.Keys(w.MatDesc)) {
		add(MatDescChange.Of(k), func(c *cse.WrappedKey) { c.MatDesc[k] += "-tampered" })
		add(MatDescRemove.Of(k), func(c *cse.WrappedKey) { delete(c.MatDesc, k) })
	}
	for _, wrap := range otherWraps {
		if wrap == w.WrapAlg {
			continue
		}
		add(WrapAlg.Of(wrap), func(c *cse.WrappedKey) { c.WrapAlg = wrap })
	}
	n := len(w.Blob)
	add(BlobBit.Of("first"), func(c *cse.WrappedKey) { c.Blob[0] ^= 0x01 })
	add(BlobBit.Of("middle"), func(c *cse.WrappedKey) { c.Blob[n/2] ^= 0x10 })
	add(BlobBit.Of("last"), func(c *cse.WrappedKey) { c.Blob[n-1] ^= 0x80 })
	add(BlobTruncate.Of("last-byte"), func(c *cse.WrappedKey) { c.Blob = c.Blob[:n-1] })
	add(BlobTruncate.Of("half"), func(c *cse.WrappedKey) { c.Blob = c.Blob[:n/2] })
	add(BlobTruncate.Of("empty"), func(c *cse.WrappedKey) { c.Blob = c.Blob[:0] })
	return out
}

// allowed returns what Options.Errors allows for tamper, and whether it has
// an entry.
func (s *suite) allowed(tamper Tamper, alg string) ([]error, bool) {
	for _, k := range []Tamper{tamper.For(alg), tamper, tamper.kind()} {
		if errs, ok := s.opt.Errors[k]; ok {
			return errs, true
		}
	}
	return nil, false
}

func (s *suite) tamper(t *testing.T) {
	for _, alg := range s.opt.CEKAlgs {
		t.Run(algName(alg), func(t *testing.T) {
			p := s.newProvider(t)
			key, w := generate(t, p, cse.KeyRequest{CEKAlg: alg, MatDesc: callerMatDesc(), Object: testObject, Key: testKey})
			for _, tc := range tampers(w) {
				t.Run(string(tc.name), func(t *testing.T) {
					s.checkTamper(t, p, tc, alg, key)
				})
			}
			// The tampers changed copies only.
			decrypt(t, p, w, key)
		})
	}
}

func (s *suite) checkTamper(t *testing.T, p cse.Provider, tc tampered, alg string, key []byte) {
	t.Helper()
	got, err := p.DecryptKey(t.Context(), tc.w)
	allowed, ok := s.allowed(tc.name, alg)
	if err == nil && !bytes.Equal(got, key) {
		t.Fatalf("DecryptKey accepted tamper %s and returned another key", tc.name)
	}
	if !ok {
		result := "succeeded (with the original key)"
		if err != nil {
			result = "failed: " + err.Error()
		}
		t.Fatalf("Options.Errors has no entry for %s, %s or %s; DecryptKey %s", tc.name.For(alg), tc.name, tc.name.kind(), result)
	}
	if err == nil {
		if !slices.Contains(allowed, Accepted) {
			t.Fatalf("DecryptKey accepted tamper %s (it returned the original key); want an error wrapping one of %v", tc.name, allowed)
		}
		return
	}
	for _, want := range allowed {
		if want != Accepted && errors.Is(err, want) {
			return
		}
	}
	t.Fatalf("tamper %s: DecryptKey: %v; want an error wrapping one of %v", tc.name, err, allowed)
}

func (s *suite) ownership(t *testing.T) {
	alg := s.opt.CEKAlgs[0]
	req := func() cse.KeyRequest {
		return cse.KeyRequest{CEKAlg: alg, MatDesc: callerMatDesc(), Object: testObject, Key: testKey}
	}
	t.Run("zero-generated-key", func(t *testing.T) {
		p := s.newProvider(t)
		key, w := generate(t, p, req())
		want := bytes.Clone(key)
		cse.Zero(key)
		decrypt(t, p, w, want)
	})
	t.Run("zero-decrypted-key", func(t *testing.T) {
		p := s.newProvider(t)
		key, w := generate(t, p, req())
		for range 3 {
			got, err := p.DecryptKey(t.Context(), w)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatal("DecryptKey returned another key after the caller zeroed an earlier result")
			}
			cse.Zero(got)
		}
	})
	t.Run("request-matdesc-changed-after", func(t *testing.T) {
		p := s.newProvider(t)
		r := req()
		key, w := generate(t, p, r)
		stored := maps.Clone(w.MatDesc)
		r.MatDesc["Path"] = "s3://providertest-bucket/changed"
		r.MatDesc["providertest-added"] = "1"
		delete(r.MatDesc, "JobflowId")
		if !maps.Equal(w.MatDesc, stored) {
			t.Fatalf("changing the request's materials description after GenerateKey changed the wrapped one: %v, was %v", w.MatDesc, stored)
		}
		decrypt(t, p, w, key)
		// The next key for the same request is not affected either.
		key2, w2 := generate(t, p, req())
		decrypt(t, p, w2, key2)
	})
	t.Run("generated-wrapped-key-scribbled", func(t *testing.T) {
		p := s.newProvider(t)
		key, w := generate(t, p, req())
		saved := cloneWrapped(w)
		scribble(&w)
		decrypt(t, p, saved, key)
		key2, w2 := generate(t, p, req())
		decrypt(t, p, w2, key2)
	})
	t.Run("decrypted-wrapped-key-scribbled", func(t *testing.T) {
		p := s.newProvider(t)
		key, w := generate(t, p, req())
		passed := cloneWrapped(w)
		decrypt(t, p, passed, key)
		scribble(&passed)
		decrypt(t, p, cloneWrapped(w), key)
	})
}

// scribble overwrites w's Blob and materials description in place, as a
// caller reusing its buffers would.
func scribble(w *cse.WrappedKey) {
	cse.Zero(w.Blob)
	if w.MatDesc == nil {
		return
	}
	for k := range w.MatDesc {
		w.MatDesc[k] = ""
	}
	w.MatDesc["providertest-scribbled"] = "1"
}

func (s *suite) concurrent(t *testing.T) {
	const goroutines = 16
	p := s.newProvider(t)
	sharedKey, shared := generate(t, p, cse.KeyRequest{CEKAlg: s.opt.CEKAlgs[0], MatDesc: callerMatDesc(), Object: testObject, Key: testKey})
	var (
		mu   sync.Mutex
		seen = map[string]bool{string(sharedKey): true}
		wg   sync.WaitGroup
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range s.opt.Rounds {
				req := cse.KeyRequest{CEKAlg: s.opt.CEKAlgs[(g+i)%len(s.opt.CEKAlgs)], Object: testObject, Key: testKey}
				if (g+i)%2 == 0 {
					req.MatDesc = callerMatDesc()
				}
				key, w, err := p.GenerateKey(t.Context(), req)
				if err != nil {
					t.Errorf("goroutine %d: GenerateKey: %v", g, err)
					return
				}
				if len(key) != cse.KeySize || w.CEKAlg != req.CEKAlg {
					t.Errorf("goroutine %d: GenerateKey returned a %d-byte key for %q", g, len(key), w.CEKAlg)
					return
				}
				mu.Lock()
				dup := seen[string(key)]
				seen[string(key)] = true
				mu.Unlock()
				if dup {
					t.Errorf("goroutine %d: GenerateKey returned a key it had returned before", g)
					return
				}
				for _, c := range []struct {
					w    cse.WrappedKey
					want []byte
				}{{w, key}, {cloneWrapped(shared), sharedKey}} {
					got, err := p.DecryptKey(t.Context(), c.w)
					if err != nil {
						t.Errorf("goroutine %d: DecryptKey: %v", g, err)
						return
					}
					if !bytes.Equal(got, c.want) {
						t.Errorf("goroutine %d: DecryptKey returned another key", g)
						return
					}
					cse.Zero(got)
				}
				cse.Zero(key)
			}
		})
	}
	wg.Wait()
}

func (s *suite) object(t *testing.T) {
	p := s.newProvider(t)
	for _, genObject := range []string{testObject, ""} {
		r := cse.KeyRequest{CEKAlg: s.opt.CEKAlgs[0], MatDesc: callerMatDesc(), Object: genObject, Key: testKey}
		key, w := generate(t, p, r)
		for _, obj := range []string{"", testObject, "s3://providertest-other/elsewhere"} {
			c := cloneWrapped(w)
			c.Object = obj
			got, err := p.DecryptKey(t.Context(), c)
			if err != nil || !bytes.Equal(got, key) {
				t.Fatalf("generated with Object %q, DecryptKey with Object %q: %v (same key: %v)", genObject, obj, err, err == nil && bytes.Equal(got, key))
			}
		}
	}
}
