package cse

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// keyringFixture writes the referenced key files into a temporary directory
// and returns load options for them.
type keyringFixture struct {
	dir            string
	aes            map[string][]byte // key name → AES key
	aesB64, pkcs1  string
	rsa            *rsa.PrivateKey
	kms            *fakeKMS
	opt            KeyringOptions
	kmsConstructed []string
}

func newKeyringFixture(t *testing.T) *keyringFixture {
	t.Helper()
	fx := &keyringFixture{dir: t.TempDir(), rsa: testRSA(t), kms: newFakeKMS(), aes: map[string][]byte{
		"inline": testBytes(60, 32), "raw": testBytes(61, 32), "b64file": testBytes(62, 32), "env": testBytes(63, 32),
	}}
	fx.aesB64 = base64.StdEncoding.EncodeToString(fx.aes["inline"])
	fx.pkcs1 = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(fx.rsa)}))
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(fx.dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("raw.key", fx.aes["raw"])
	write("b64.key", []byte("  "+base64.StdEncoding.EncodeToString(fx.aes["b64file"])+"\n"))
	write("short.key", testBytes(64, 31))
	write("rsa.pem", []byte(fx.pkcs1))
	env := map[string]string{"ENV_KEY": base64.StdEncoding.EncodeToString(fx.aes["env"]), "SHORT": "AAAA", "BAD": "!!!!"}
	fx.opt = KeyringOptions{
		BaseDir: fx.dir,
		getenv:  func(k string) string { return env[k] },
		KMS: func(keyID string) (Provider, error) {
			fx.kmsConstructed = append(fx.kmsConstructed, keyID)
			return NewKMSProvider(context.Background(), fx.kms, keyID, KMSOptions{})
		},
	}
	return fx
}

func (fx *keyringFixture) file(t *testing.T, v map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type kv = map[string]string

// TestLoadKeyringSources round-trips a data key through every key source.
func TestLoadKeyringSources(t *testing.T) {
	fx := newKeyringFixture(t)
	data := fx.file(t, map[string]any{"version": 2, "keys": []kv{
		{"name": "inline", "aes256": fx.aesB64},
		{"name": "raw", "aes256_file": "raw.key"},
		{"name": "b64file", "aes256_file": filepath.Join(fx.dir, "b64.key")},
		{"name": "env", "aes256_env": "ENV_KEY"},
		{"name": "rsa", "rsa_private_key_pem": fx.pkcs1},
		{"name": "rsafile", "rsa_private_key_pem_file": "rsa.pem"},
		{"name": "k", "kms_key_id": "alias/k"},
	}})
	kr, err := LoadKeyring(data, fx.opt)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"inline", "raw", "b64file", "env", "rsa", "rsafile", "k"}; !slices.Equal(kr.Names(), want) {
		t.Fatalf("names %v", kr.Names())
	}
	if kr.Default() != nil || len(kr.Rules()) != 0 {
		t.Fatal("a keyring without rules or encrypt_with must be decrypt-only")
	}
	wantWrap := map[string]string{"inline": WrapAESGCM, "raw": WrapAESGCM, "b64file": WrapAESGCM, "env": WrapAESGCM,
		"rsa": WrapRSAOAEPSHA1, "rsafile": WrapRSAOAEPSHA1, "k": WrapKMSContext}
	for _, name := range kr.Names() {
		t.Run(name, func(t *testing.T) {
			w, err := kr.Writer(name)
			if err != nil {
				t.Fatal(err)
			}
			if w2, _ := kr.Writer(name); w2 != w {
				t.Fatal("Writer returns a new provider each time")
			}
			key, wk, err := w.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM, MatDesc: kv{"Path": "s3://b/x"}})
			if err != nil {
				t.Fatal(err)
			}
			if wk.WrapAlg != wantWrap[name] || wk.MatDesc[KeyNameKey] != name || wk.MatDesc["Path"] != "s3://b/x" {
				t.Fatalf("wrapped with %q, matdesc %v", wk.WrapAlg, wk.MatDesc)
			}
			// Independent check of the local wraps with the standard library.
			switch {
			case fx.aes[name] != nil:
				g := stdGCM(t, fx.aes[name])
				got, err := g.Open(nil, wk.Blob[:12], wk.Blob[12:], []byte("AES/GCM/NoPadding"))
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("stdlib cannot open the AES/GCM wrap: %v", err)
				}
			case wk.WrapAlg == WrapRSAOAEPSHA1:
				got, err := rsa.DecryptOAEP(sha1.New(), nil, fx.rsa, wk.Blob, nil)
				if err != nil || !bytes.Equal(got, append(append([]byte{32}, key...), "AES/GCM/NoPadding"...)) {
					t.Fatalf("stdlib sees a different pseudo key: %v", err)
				}
			case wk.WrapAlg == WrapKMSContext:
				if fx.kms.lastGen.EncryptionContext[KeyNameKey] != "k" {
					t.Fatalf("keyname not in the encryption context: %v", fx.kms.lastGen.EncryptionContext)
				}
			}
			for _, r := range []Provider{kr.Reader(), w} {
				got, err := r.DecryptKey(t.Context(), wk)
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("decrypt: %v", err)
				}
			}
		})
	}
	if _, err := kr.Writer("nope"); !errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("Writer(unknown) = %v", err)
	}
	if _, _, err := kr.Reader().GenerateKey(t.Context(), KeyRequest{}); !errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("Reader().GenerateKey = %v", err)
	}
}

func stdGCM(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestLoadKeyringErrors(t *testing.T) {
	fx := newKeyringFixture(t)
	aes := fx.aesB64
	v2 := func(keys []kv, extra ...any) []byte {
		m := map[string]any{"version": 2, "keys": keys}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return fx.file(t, m)
	}
	noKMS := fx.opt
	noKMS.KMS = nil
	for name, c := range map[string]struct {
		data  []byte
		opt   *KeyringOptions
		field string
		want  error
	}{
		"not json":          {[]byte("{"), nil, "keyring file", ErrMalformed},
		"trailing data":     {append(v2([]kv{{"name": "a", "aes256": aes}}), "{}"...), nil, "after the JSON", ErrMalformed},
		"version 3":         {fx.file(t, map[string]any{"version": 3, "keys": []kv{{"name": "a", "aes256": aes}}}), nil, "version 3", ErrMalformed},
		"no keys":           {v2(nil), nil, "keys", ErrMalformed},
		"unknown field":     {v2([]kv{{"name": "a", "aes256": aes}}, "colour", "red"), nil, "colour", ErrMalformed},
		"unknown key field": {v2([]kv{{"name": "a", "aes128": aes}}), nil, "aes128", ErrMalformed},
		"no name":           {v2([]kv{{"aes256": aes}}), nil, "keys[0].name", ErrMalformed},
		"duplicate names":   {v2([]kv{{"name": "a", "aes256": aes}, {"name": "a", "aes256_env": "ENV_KEY"}}), nil, `keys[1].name: "a" used twice`, ErrMalformed},
		"two sources":       {v2([]kv{{"name": "a", "aes256": aes, "aes256_env": "ENV_KEY"}}), nil, "exactly one", ErrMalformed},
		"no source":         {v2([]kv{{"name": "a"}}), nil, "exactly one", ErrMalformed},
		"bad base64":        {v2([]kv{{"name": "a", "aes256": "!!!!"}}), nil, "keys[0].aes256", ErrMalformed},
		"short inline":      {v2([]kv{{"name": "a", "aes256": "AAAA"}}), nil, "keys[0].aes256", ErrMalformed},
		"missing file":      {v2([]kv{{"name": "a", "aes256_file": "absent.key"}}), nil, "absent.key", ErrMalformed},
		"device file":       {v2([]kv{{"name": "a", "aes256_file": "/dev/zero"}}), nil, "not a regular file", ErrMalformed},
		"directory pem":     {v2([]kv{{"name": "a", "rsa_private_key_pem_file": "."}}), nil, "not a regular file", ErrMalformed},
		"short file":        {v2([]kv{{"name": "a", "aes256_file": "short.key"}}), nil, "31 bytes", ErrMalformed},
		"env unset":         {v2([]kv{{"name": "a", "aes256_env": "UNSET"}}), nil, "UNSET", ErrMalformed},
		"env short":         {v2([]kv{{"name": "a", "aes256_env": "SHORT"}}), nil, "SHORT", ErrMalformed},
		"env bad base64":    {v2([]kv{{"name": "a", "aes256_env": "BAD"}}), nil, "BAD", ErrMalformed},
		"bad pem":           {v2([]kv{{"name": "a", "rsa_private_key_pem": "nope"}}), nil, "keys[0].rsa_private_key_pem", ErrMalformed},
		"missing pem file":  {v2([]kv{{"name": "a", "rsa_private_key_pem_file": "absent.pem"}}), nil, "absent.pem", ErrMalformed},
		"pem file not pem":  {v2([]kv{{"name": "a", "rsa_private_key_pem_file": "raw.key"}}), nil, "raw.key", ErrMalformed},
		"kms without KMS":   {v2([]kv{{"name": "a", "kms_key_id": "alias/k"}}), &noKMS, "kms_key_id", ErrMalformed},
		"kms unusable":      {v2([]kv{{"name": "a", "kms_key_id": "alias/k"}}), nil, "alias/k", nil},
		"unknown rule key":  {v2([]kv{{"name": "a", "aes256": aes}}, "rules", []kv{{"prefix": "x/", "key": "b"}}), nil, `rules[0].key: "b"`, ErrMalformed},
		"duplicate prefix": {v2([]kv{{"name": "a", "aes256": aes}}, "rules", []kv{{"prefix": "x/", "key": "a"}, {"prefix": "x/", "key": "a"}}),
			nil, `rules[1].prefix: "x/"`, ErrMalformed},
		"default conflict": {v2([]kv{{"name": "a", "aes256": aes}, {"name": "b", "aes256_env": "ENV_KEY"}}, "rules", []kv{{"prefix": "", "key": "a"}}, "encrypt_with", "b"),
			nil, "encrypt_with", ErrMalformed},
		"unknown encrypt_with": {v2([]kv{{"name": "a", "aes256": aes}}, "encrypt_with", "z"), nil, `encrypt_with: "z"`, ErrMalformed},
		"v2 field in v1":       {fx.file(t, map[string]any{"version": 1, "keys": []kv{{"name": "a", "aes256_env": "ENV_KEY"}}}), nil, "needs version 2", ErrMalformed},
		"rules in v1": {fx.file(t, map[string]any{"version": 1, "keys": []kv{{"name": "a", "aes256": aes}}, "rules": []kv{{"prefix": "", "key": "a"}}}),
			nil, "rules: need version 2", ErrMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			opt := fx.opt
			if c.opt != nil {
				opt = *c.opt
			}
			if name == "kms unusable" {
				fx.kms.describe = apiErr{"NotFoundException"}
				defer func() { fx.kms.describe = nil }()
				c.want = ErrKeyUnusable
			}
			_, err := LoadKeyring(c.data, opt)
			mustFail(t, err, c.want)
			if !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %q does not name %q", err, c.field)
			}
			for _, secret := range []string{aes, "MII", base64.StdEncoding.EncodeToString(fx.aes["env"])} {
				if strings.Contains(err.Error(), secret) {
					t.Fatal("error message contains key material")
				}
			}
		})
	}
}

// TestLoadKeyringVersion1 keeps reading version 1 files with their rules.
func TestKeyringFile(t *testing.T) {
	data, err := NewKeyringFile()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := LoadKeyring(data, KeyringOptions{})
	if err != nil || kr.Default() == nil {
		t.Fatalf("%v\n%s", err, data)
	}
	p := kr.Default()
	key, w, err := p.GenerateKey(t.Context(), KeyRequest{})
	if err != nil || w.MatDesc[KeyNameKey] != "default" {
		t.Fatalf("generate: %v %v", err, w.MatDesc)
	}
	if got, err := p.DecryptKey(t.Context(), w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("decrypt: %v", err)
	}
	data2, _ := NewKeyringFile()
	if bytes.Equal(data, data2) {
		t.Fatal("two keyring files share a key")
	}

	// A version 1 file with PKCS#1 and PKCS#8 RSA keys. (LoadKeyring's
	// errors are TestLoadKeyringErrors'.)
	priv := testRSA(t)
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}))
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	pkcs8 := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	aes := base64.StdEncoding.EncodeToString(testBytes(47, 32))
	file := func(v any) []byte { b, _ := json.Marshal(v); return b }
	type k = map[string]string
	good := file(map[string]any{"version": 1, "encrypt_with": "r8", "keys": []k{
		{"name": "a", "aes256": aes}, {"name": "r1", "rsa_private_key_pem": pkcs1}, {"name": "r8", "rsa_private_key_pem": pkcs8}}})
	kr, err = LoadKeyring(good, KeyringOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, w, err := kr.Default().GenerateKey(t.Context(), KeyRequest{}); err != nil || w.WrapAlg != WrapRSAOAEPSHA1 {
		t.Fatalf("rsa keyring: %v", err)
	}
}

func TestLoadKeyringVersion1(t *testing.T) {
	data, err := NewKeyringFile()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := LoadKeyring(data, KeyringOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kr.Default() == nil {
		t.Fatal("a single-key version 1 keyring encrypts with its key")
	}
	key, w, err := kr.Default().GenerateKey(t.Context(), KeyRequest{})
	if err != nil || w.MatDesc[KeyNameKey] != "default" {
		t.Fatalf("generate: %v %v", err, w.MatDesc)
	}
	if got, err := kr.Reader().DecryptKey(t.Context(), w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the keyring cannot read what it wrote: %v", err)
	}
	aes := base64.StdEncoding.EncodeToString(testBytes(65, 32))
	two, _ := json.Marshal(map[string]any{"version": 1, "keys": []kv{{"name": "a", "aes256": aes}, {"name": "b", "aes256": aes}}})
	kr, err = LoadKeyring(two, KeyringOptions{})
	if err != nil || kr.Default() != nil {
		t.Fatalf("several keys, no encrypt_with: %v, default %v", err, kr.Default())
	}
}

func TestKeyringRules(t *testing.T) {
	fx := newKeyringFixture(t)
	data := fx.file(t, map[string]any{"version": 2,
		"keys": []kv{{"name": "default", "aes256": fx.aesB64}, {"name": "fin", "aes256_file": "raw.key"},
			{"name": "fin-eu", "rsa_private_key_pem_file": "rsa.pem"}},
		"rules":        []kv{{"prefix": "finance/", "key": "fin"}, {"prefix": "finance/eu/", "key": "fin-eu"}},
		"encrypt_with": "default"})
	kr, err := LoadKeyring(data, fx.opt)
	if err != nil {
		t.Fatal(err)
	}
	rules := kr.Rules()
	if len(rules) != 2 || rules[0].Prefix != "finance/" || rules[1].Prefix != "finance/eu/" {
		t.Fatalf("rules %+v", rules)
	}
	if fin, _ := kr.Writer("fin"); rules[0].Provider != fin {
		t.Fatal("a rule's provider is not the key's Writer")
	}
	r, err := kr.router()
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"finance/a.csv": "fin", "finance/eu/b.csv": "fin-eu", "finance/euro.csv": "fin",
		"finance": "default", "hr/x": "default", "": "default",
	} {
		_, w, err := r.GenerateKey(t.Context(), KeyRequest{Key: key})
		if err != nil || w.MatDesc[KeyNameKey] != want {
			t.Fatalf("%q: encrypted with %q (%v), want %q", key, w.MatDesc[KeyNameKey], err, want)
		}
	}
	if p, ok := r.RuleFor("finance/eu/x"); !ok || p != "finance/eu/" {
		t.Fatalf("RuleFor = %q %v", p, ok)
	}
	if p, ok := r.RuleFor("hr/x"); !ok || p != "" {
		t.Fatalf("RuleFor(default) = %q %v", p, ok)
	}
	// The same default given twice (rule and encrypt_with) is accepted.
	data = fx.file(t, map[string]any{"version": 2, "keys": []kv{{"name": "d", "aes256": fx.aesB64}},
		"rules": []kv{{"prefix": "", "key": "d"}}, "encrypt_with": "d"})
	if kr, err = LoadKeyring(data, fx.opt); err != nil {
		t.Fatal(err)
	}
	if _, err = kr.router(); err != nil {
		t.Fatal(err)
	}
	// Decrypt-only keyrings route no writes.
	data = fx.file(t, map[string]any{"version": 2, "keys": []kv{{"name": "d", "aes256": fx.aesB64}}})
	kr, _ = LoadKeyring(data, fx.opt)
	r, _ = kr.router()
	_, _, err = r.GenerateKey(t.Context(), KeyRequest{Key: "x"})
	mustFail(t, err, ErrNoMasterKey)
	if _, ok := r.RuleFor("x"); ok {
		t.Fatal("RuleFor on a decrypt-only keyring")
	}
}

// TestKeyringReader covers read-side selection between local and KMS keys.
func TestKeyringReader(t *testing.T) {
	fx := newKeyringFixture(t)
	data := fx.file(t, map[string]any{"version": 2, "keys": []kv{
		{"name": "a", "aes256": fx.aesB64}, {"name": "k", "kms_key_id": "alias/k"}, {"name": "k2", "kms_key_id": "alias/k2"}}})
	kr, err := LoadKeyring(data, fx.opt)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fx.kmsConstructed, []string{"alias/k", "alias/k2"}) {
		t.Fatalf("KMS providers built for %v", fx.kmsConstructed)
	}
	rd := kr.Reader()
	wk2, _ := kr.Writer("k2")
	key, w, err := wk2.GenerateKey(t.Context(), KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rd.DecryptKey(t.Context(), w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("by keyname: %v", err)
	}
	// A KMS object from another writer (no keyname): the first KMS key.
	direct, _ := NewKMSProvider(t.Context(), fx.kms, "alias/other", KMSOptions{})
	key, w, _ = direct.GenerateKey(t.Context(), KeyRequest{})
	if got, err := rd.DecryptKey(t.Context(), w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("no keyname: %v", err)
	}
	// A KMS wrap naming a local key, an unknown key; a local wrap naming a KMS key.
	named := func(w WrappedKey, name string) WrappedKey {
		w.MatDesc = kv{KeyNameKey: name, ReservedCEKAlgKey: CEKAlgGCM}
		return w
	}
	for _, c := range []WrappedKey{named(w, "a"), named(w, "gone"),
		{WrapAlg: WrapAESGCM, CEKAlg: CEKAlgGCM, Blob: make([]byte, 60), MatDesc: kv{KeyNameKey: "k"}}} {
		_, err := rd.DecryptKey(t.Context(), c)
		mustFail(t, err, ErrNoMasterKey)
		if !strings.Contains(err.Error(), `"keyname":"`+c.MatDesc[KeyNameKey]+`"`) {
			t.Fatalf("message does not name the description: %v", err)
		}
	}
	// A keyring without KMS keys declines KMS wraps as not its kind, and
	// one without local keys declines local wraps as not its keys.
	local, _ := LoadKeyring(fx.file(t, map[string]any{"version": 2, "keys": []kv{{"name": "a", "aes256": fx.aesB64}}}), fx.opt)
	_, err = local.Reader().DecryptKey(t.Context(), w)
	mustFail(t, err, ErrUnsupported)
	kmsOnly, _ := LoadKeyring(fx.file(t, map[string]any{"version": 2, "keys": []kv{{"name": "k", "kms_key_id": "alias/k"}}}), fx.opt)
	_, err = kmsOnly.Reader().DecryptKey(t.Context(), WrappedKey{WrapAlg: WrapAESGCM, CEKAlg: CEKAlgGCM, Blob: make([]byte, 60), MatDesc: kv{}})
	mustFail(t, err, ErrNoMasterKey)
	// A KMS error is passed on, not turned into "no key".
	fx.kms.fail = apiErr{"AccessDeniedException"}
	_, err = rd.DecryptKey(t.Context(), w)
	mustFail(t, err, ErrKeyAccess)
}

func TestAddKey(t *testing.T) {
	fx := newKeyringFixture(t)
	v1, err := NewKeyringFile()
	if err != nil {
		t.Fatal(err)
	}
	data, err := AddKey(v1, "second", KeySpec{AES256: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name string
		spec KeySpec
	}{
		{"fin", KeySpec{AESFile: "raw.key"}},
		{"env", KeySpec{AESEnv: "ENV_KEY"}},
		{"rsa", KeySpec{RSAPEMFile: "rsa.pem"}},
		{"k", KeySpec{KMSKeyID: "alias/k"}},
	} {
		if data, err = AddKey(data, step.name, step.spec); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
	}
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil || f["version"] != float64(2) || f["encrypt_with"] != "default" {
		t.Fatalf("converted file: %v\n%s", err, data)
	}
	kr, err := LoadKeyring(data, fx.opt)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if want := []string{"default", "second", "fin", "env", "rsa", "k"}; !slices.Equal(kr.Names(), want) {
		t.Fatalf("names %v", kr.Names())
	}
	if _, w, err := kr.Default().GenerateKey(t.Context(), KeyRequest{}); err != nil || w.MatDesc[KeyNameKey] != "default" {
		t.Fatalf("the default changed: %v %v", err, w.MatDesc)
	}
	second, _ := kr.Writer("second")
	key, w, _ := second.GenerateKey(t.Context(), KeyRequest{})
	if got, err := kr.Reader().DecryptKey(t.Context(), w); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("added random key: %v", err)
	}
	again, _ := AddKey(v1, "second", KeySpec{AES256: true})
	if bytes.Equal(again, data[:len(again)]) {
		t.Fatal("two added keys are equal")
	}
	for name, c := range map[string]struct {
		data []byte
		name string
		spec KeySpec
	}{
		"duplicate":   {data, "fin", KeySpec{AES256: true}},
		"no name":     {data, "", KeySpec{AES256: true}},
		"no source":   {data, "x", KeySpec{}},
		"two sources": {data, "x", KeySpec{AES256: true, AESEnv: "E"}},
		"bad file":    {[]byte("{"), "x", KeySpec{AES256: true}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := AddKey(c.data, c.name, c.spec)
			mustFail(t, err, ErrMalformed)
		})
	}
}

// TestKeyringObjectStdlib writes whole objects through a loaded keyring
// (GenerateKey → EncryptWriter) and reads them back with standard-library
// code only, following s3ec-format.md §4.3–4.4 and §3.
func TestKeyringObjectStdlib(t *testing.T) {
	fx := newKeyringFixture(t)
	data := fx.file(t, map[string]any{"version": 2, "keys": []kv{
		{"name": "a", "aes256_file": "raw.key"}, {"name": "r", "rsa_private_key_pem_file": "rsa.pem"}}})
	kr, err := LoadKeyring(data, fx.opt)
	if err != nil {
		t.Fatal(err)
	}
	plain := testBytes(66, 200_000)
	for _, name := range []string{"a", "r"} {
		t.Run(name, func(t *testing.T) {
			w, _ := kr.Writer(name)
			key, wk, err := w.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCM})
			if err != nil {
				t.Fatal(err)
			}
			iv := testBytes(67, GCMIVSize)
			var body bytes.Buffer
			ew, err := newEncryptWriter(&body, key, iv)
			if err != nil {
				t.Fatal(err)
			}
			if err := writeInSteps(ew, plain, 7777); err != nil {
				t.Fatal(err)
			}
			if err := ew.Close(); err != nil {
				t.Fatal(err)
			}
			// Unwrap with the standard library.
			var cek []byte
			switch name {
			case "a":
				if wk.WrapAlg != "AES/GCM" || len(wk.Blob) != 60 {
					t.Fatalf("wrap %q of %d bytes", wk.WrapAlg, len(wk.Blob))
				}
				cek, err = stdGCM(t, fx.aes["raw"]).Open(nil, wk.Blob[:12], wk.Blob[12:], []byte("AES/GCM/NoPadding"))
			case "r":
				if wk.WrapAlg != "RSA-OAEP-SHA1" || len(wk.Blob) != fx.rsa.Size() {
					t.Fatalf("wrap %q of %d bytes", wk.WrapAlg, len(wk.Blob))
				}
				var pseudo []byte
				pseudo, err = rsa.DecryptOAEP(sha1.New(), nil, fx.rsa, wk.Blob, nil)
				if err == nil && (len(pseudo) != 50 || pseudo[0] != 32 || string(pseudo[33:]) != "AES/GCM/NoPadding") {
					t.Fatalf("pseudo key layout %x", pseudo)
				}
				if err == nil {
					cek = pseudo[1:33]
				}
			}
			if err != nil {
				t.Fatalf("stdlib unwrap: %v", err)
			}
			got, err := stdGCM(t, cek).Open(nil, iv, body.Bytes(), nil)
			if err != nil || !bytes.Equal(got, plain) || body.Len() != len(plain)+16 {
				t.Fatalf("stdlib open of the body: %v", err)
			}
		})
	}
}

// FuzzLoadKeyring: arbitrary files never panic, hang or load half-valid.
func FuzzLoadKeyring(f *testing.F) {
	aes := base64.StdEncoding.EncodeToString(testBytes(80, 32))
	for _, seed := range []string{
		`{"version":2,"keys":[{"name":"a","aes256":"` + aes + `"}],"rules":[{"prefix":"x/","key":"a"}],"encrypt_with":"a"}`,
		`{"version":2,"keys":[{"name":"e","aes256_env":"K"},{"name":"f","aes256_file":"k"}]}`,
		`{"version":1,"keys":[{"name":"a","aes256":"` + aes + `"}]}`,
		`{"version":2,"keys":[{"name":"k","kms_key_id":"alias/x"}],"rules":[{"prefix":"","key":"k"}]}`,
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k"), testBytes(81, 32), 0o600); err != nil {
		f.Fatal(err)
	}
	opt := KeyringOptions{BaseDir: dir, getenv: func(string) string { return aes }}
	f.Fuzz(func(t *testing.T, data []byte) {
		kr, err := LoadKeyring(data, opt)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		for _, n := range kr.Names() {
			if _, err := kr.Writer(n); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := kr.router(); err != nil {
			t.Fatal(err)
		}
		if _, err := AddKey(data, "fuzz-added-key", KeySpec{AESEnv: "K"}); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
	})
}
