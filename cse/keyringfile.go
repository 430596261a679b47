package cse

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
)

// KeyringOptions configures LoadKeyring.
type KeyringOptions struct {
	// BaseDir is where relative *_file paths resolve (the keyring file's
	// directory). Empty means the process's working directory.
	BaseDir string
	// KMS builds the provider for a kms_key_id entry (typically
	// NewKMSProvider with the mount's KMS client and wrap). Nil makes such
	// entries an error.
	KMS func(keyID string) (Provider, error)

	// getenv reads *_env variables; nil means os.Getenv. Tests set it.
	getenv func(string) string
}

// KeySpec describes the key AddKey adds: exactly one field is set.
type KeySpec struct {
	AES256     bool   // a new random AES-256 key, stored inline ("aes256")
	AESFile    string // "aes256_file"
	AESEnv     string // "aes256_env"
	RSAPEMFile string // "rsa_private_key_pem_file"
	KMSKeyID   string // "kms_key_id"
}

// Rule maps a key prefix to the provider that encrypts new objects under it.
type Rule struct {
	// Prefix is matched against KeyRequest.Key, the object's key within its
	// bucket (the mount's prefix included). "" matches every key.
	Prefix   string
	Provider Provider
}

// Keyring is a loaded keyring file (version 1 or 2): named master keys and
// key references, rules choosing the key for new objects, and a reader for
// every key. See LoadKeyring for the file format. Immutable and safe for
// concurrent use.
type Keyring struct {
	names   []string
	writers map[string]Provider
	rules   []Rule
	def     Provider
	reader  *keyringReader
}

// keyringFile is the version 1 keyring file NewKeyringFile writes (LoadKeyring
// reads it, and version 2).
type keyringFile struct {
	Version     int              `json:"version"`
	EncryptWith string           `json:"encrypt_with,omitempty"`
	Keys        []keyringFileKey `json:"keys"`
}

type keyringFileKey struct {
	Name          string `json:"name"`
	AES256        string `json:"aes256,omitempty"`
	RSAPrivateKey string `json:"rsa_private_key_pem,omitempty"`
}

// keyringFileV2 is the JSON form documented on LoadKeyring. Version 1 files
// are the subset without rules and references.
type keyringFileV2 struct {
	Version     int                `json:"version"`
	Keys        []keyringFileKeyV2 `json:"keys"`
	Rules       []keyringFileRule  `json:"rules,omitempty"`
	EncryptWith string             `json:"encrypt_with,omitempty"`
}

type keyringFileKeyV2 struct {
	Name             string `json:"name"`
	AES256           string `json:"aes256,omitempty"`
	AES256File       string `json:"aes256_file,omitempty"`
	AES256Env        string `json:"aes256_env,omitempty"`
	RSAPrivateKey    string `json:"rsa_private_key_pem,omitempty"`
	RSAPrivateKeyFil string `json:"rsa_private_key_pem_file,omitempty"`
	KMSKeyID         string `json:"kms_key_id,omitempty"`
}

type keyringFileRule struct {
	Prefix string `json:"prefix"`
	Key    string `json:"key"`
}

// sources returns the names of the key's non-empty source fields.
func (k keyringFileKeyV2) sources() []string {
	var s []string
	for _, f := range []struct {
		name, v string
	}{
		{"aes256", k.AES256}, {"aes256_file", k.AES256File}, {"aes256_env", k.AES256Env},
		{"rsa_private_key_pem", k.RSAPrivateKey}, {"rsa_private_key_pem_file", k.RSAPrivateKeyFil},
		{"kms_key_id", k.KMSKeyID},
	} {
		if f.v != "" {
			s = append(s, f.name)
		}
	}
	return s
}

func decodeKeyringFile(data []byte) (keyringFileV2, error) {
	var f keyringFileV2
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		// The decoder's message names an unknown field or a type, never a
		// value, so it is safe to show.
		return f, fmt.Errorf("cse: keyring file: %w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return f, fmt.Errorf("cse: keyring file: data after the JSON object: %w", ErrMalformed)
	}
	switch f.Version {
	case 1, 2:
	default:
		return f, fmt.Errorf("cse: keyring file: version %d, want 1 or 2: %w", f.Version, ErrMalformed)
	}
	if len(f.Keys) == 0 {
		return f, fmt.Errorf("cse: keyring file: keys: empty: %w", ErrMalformed)
	}
	seen := map[string]bool{}
	for i, fk := range f.Keys {
		if fk.Name == "" {
			return f, fmt.Errorf("cse: keyring file: keys[%d].name: empty: %w", i, ErrMalformed)
		}
		if seen[fk.Name] {
			return f, fmt.Errorf("cse: keyring file: keys[%d].name: %q used twice: %w", i, fk.Name, ErrMalformed)
		}
		seen[fk.Name] = true
		src := fk.sources()
		if len(src) != 1 {
			return f, fmt.Errorf("cse: keyring file: keys[%d] (%q): need exactly one of aes256, aes256_file, aes256_env, rsa_private_key_pem, rsa_private_key_pem_file, kms_key_id, have %d: %w", i, fk.Name, len(src), ErrMalformed)
		}
		if f.Version == 1 && src[0] != "aes256" && src[0] != "rsa_private_key_pem" {
			return f, fmt.Errorf("cse: keyring file: keys[%d].%s (%q): needs version 2: %w", i, src[0], fk.Name, ErrMalformed)
		}
	}
	if f.Version == 1 && len(f.Rules) > 0 {
		return f, fmt.Errorf("cse: keyring file: rules: need version 2: %w", ErrMalformed)
	}
	prefixes := map[string]bool{}
	for i, r := range f.Rules {
		if !seen[r.Key] {
			return f, fmt.Errorf("cse: keyring file: rules[%d].key: %q is not a key of the keyring: %w", i, r.Key, ErrMalformed)
		}
		if prefixes[r.Prefix] {
			return f, fmt.Errorf("cse: keyring file: rules[%d].prefix: %q used twice: %w", i, r.Prefix, ErrMalformed)
		}
		prefixes[r.Prefix] = true
		if r.Prefix == "" && f.EncryptWith != "" && f.EncryptWith != r.Key {
			return f, fmt.Errorf("cse: keyring file: rules[%d]: the default rule (prefix \"\") uses %q but encrypt_with is %q: %w", i, r.Key, f.EncryptWith, ErrMalformed)
		}
	}
	if f.EncryptWith != "" && !seen[f.EncryptWith] {
		return f, fmt.Errorf("cse: keyring file: encrypt_with: %q is not a key of the keyring: %w", f.EncryptWith, ErrMalformed)
	}
	if f.Version == 1 && f.EncryptWith == "" && len(f.Keys) == 1 {
		f.EncryptWith = f.Keys[0].Name // version 1: a single key is the default
	}
	return f, nil
}

// LoadKeyring parses a keyring file, version 1 (the keys only; NewKeyringFile
// writes one) or 2:
//
//	{
//	  "version": 2,
//	  "keys": [
//	    {"name": "default", "aes256": "<standard base64 of 32 bytes>"},
//	    {"name": "fin",     "aes256_file": "fin.key"},
//	    {"name": "env1",    "aes256_env": "CSEFS_KEY_ENV1"},
//	    {"name": "r",       "rsa_private_key_pem": "<PEM text of an RSA private key>"},
//	    {"name": "r2",      "rsa_private_key_pem_file": "/etc/csefs/r2.pem"},
//	    {"name": "k",       "kms_key_id": "alias/finance"}
//	  ],
//	  "rules": [{"prefix": "finance/", "key": "fin"}, {"prefix": "", "key": "default"}],
//	  "encrypt_with": "default"
//	}
//
// Each key has a unique non-empty name and exactly one source:
//
//   - aes256: standard padded base64 of 32 bytes.
//   - aes256_file: a file holding 32 raw bytes, or base64 text of 32 bytes
//     (surrounding white space ignored); a relative path resolves against
//     KeyringOptions.BaseDir.
//   - aes256_env: an environment variable holding base64 of 32 bytes.
//   - rsa_private_key_pem / rsa_private_key_pem_file: a PEM RSA private key
//     (PKCS#1 "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY"), inline or in a file.
//   - kms_key_id: a KMS key (id, ARN, alias/NAME), turned into a provider by
//     KeyringOptions.KMS; its objects are wrapped by KMS (kms+context unless
//     that provider is configured otherwise).
//
// New objects are written with AES/GCM (AES keys) or RSA-OAEP-SHA1 (RSA
// keys), and their materials description records {"keyname": NAME}; for KMS
// keys "keyname" joins the encryption context. On read, "keyname" selects the
// key; objects without it (written by other clients) are trial-decrypted as
// KeyringProvider documents, and KMS-wrapped objects go to the first KMS key.
//
// rules choose the key for a new object by the longest prefix of its key
// within the bucket (see Router); encrypt_with is the key used when no rule
// matches, the same as a rule with prefix "" (a file may have both only if
// they name the same key). With neither, the keyring is decrypt-only. A
// version 1 file with a single key and no encrypt_with encrypts with that key.
//
// Unknown fields are errors. Errors wrap ErrMalformed and name the field and
// key (never key material), except that errors from KeyringOptions.KMS are
// wrapped as they are. The file holds secrets (or paths to them) and should
// be mode 0600.
func LoadKeyring(data []byte, opt KeyringOptions) (*Keyring, error) {
	f, err := decodeKeyringFile(data)
	if err != nil {
		return nil, err
	}
	if opt.getenv == nil {
		opt.getenv = os.Getenv
	}
	var local []MasterKey
	defer func() {
		for _, k := range local {
			Zero(k.AES)
		}
	}()
	kr := &Keyring{writers: map[string]Provider{}, reader: &keyringReader{kinds: map[string]string{}}}
	kmsByName := map[string]Provider{}
	for i, fk := range f.Keys {
		kr.names = append(kr.names, fk.Name)
		field := fk.sources()[0]
		where := fmt.Sprintf("cse: keyring file: keys[%d].%s (%q)", i, field, fk.Name)
		mk := MasterKey{Name: fk.Name}
		switch field {
		case "aes256":
			mk.AES, err = decodeAES256(fk.AES256)
		case "aes256_env":
			v := opt.getenv(fk.AES256Env)
			if v == "" {
				return nil, fmt.Errorf("%s: environment variable %s is unset or empty: %w", where, fk.AES256Env, ErrMalformed)
			}
			mk.AES, err = decodeAES256(v)
			if err != nil {
				err = fmt.Errorf("environment variable %s: %w", fk.AES256Env, err)
			}
		case "aes256_file":
			mk.AES, err = readAES256File(resolve(opt.BaseDir, fk.AES256File))
		case "rsa_private_key_pem":
			mk.RSA, err = parseRSAPrivateKey([]byte(fk.RSAPrivateKey))
		case "rsa_private_key_pem_file":
			path := resolve(opt.BaseDir, fk.RSAPrivateKeyFil)
			var pemBytes []byte
			if pemBytes, err = readKeyFile(path); err == nil {
				mk.RSA, err = parseRSAPrivateKey(pemBytes)
				Zero(pemBytes)
				if err != nil {
					err = fmt.Errorf("%s: %w", path, err)
				}
			}
		case "kms_key_id":
			if opt.KMS == nil {
				return nil, fmt.Errorf("%s: no KMS client configured for KMS key references: %w", where, ErrMalformed)
			}
			p, err := opt.KMS(fk.KMSKeyID)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if p == nil {
				return nil, fmt.Errorf("%s: KMS returned no provider: %w", where, ErrMalformed)
			}
			kmsByName[fk.Name] = p
			kr.reader.kms = append(kr.reader.kms, namedProvider{fk.Name, p})
			kr.reader.kinds[fk.Name] = "KMS"
			continue
		}
		if err != nil {
			Zero(mk.AES)
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		local = append(local, mk)
		kr.reader.kinds[fk.Name] = "local"
	}
	if len(local) > 0 {
		if kr.reader.local, err = NewKeyringProvider(local, ""); err != nil {
			return nil, err
		}
	}
	for _, name := range kr.names {
		var gen Provider
		if p, ok := kmsByName[name]; ok {
			gen = &kmsKeyNamer{name: name, p: p}
		} else if gen, err = NewKeyringProvider(local, name); err != nil {
			return nil, err
		}
		kr.writers[name] = &keyringWriter{gen: gen, read: kr.reader}
	}
	for _, r := range f.Rules {
		kr.rules = append(kr.rules, Rule{Prefix: r.Prefix, Provider: kr.writers[r.Key]})
	}
	if f.EncryptWith != "" {
		kr.def = kr.writers[f.EncryptWith]
	}
	return kr, nil
}

func resolve(base, path string) string {
	if filepath.IsAbs(path) || base == "" {
		return path
	}
	return filepath.Join(base, path)
}

func decodeAES256(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != KeySize {
		Zero(b)
		return nil, fmt.Errorf("not standard base64 of 32 bytes: %w", ErrMalformed)
	}
	return b, nil
}

// maxKeyFile bounds what a key file may hold (a large RSA PEM is ~3.3 KiB).
const maxKeyFile = 64 << 10

// readKeyFile reads a regular file of at most maxKeyFile bytes, so that a
// path to a device or a FIFO cannot hang or exhaust the loader.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxKeyFile {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes: %w", path, maxKeyFile, ErrMalformed)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		Zero(b)
		return nil, fmt.Errorf("%s: %w: %v", path, ErrMalformed, err)
	}
	return b, nil
}

// readAES256File reads 32 raw bytes or base64 text of 32 bytes.
func readAES256File(path string) ([]byte, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer Zero(b)
	if len(b) == KeySize {
		return bytes.Clone(b), nil
	}
	k, err := decodeAES256(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %d bytes, neither 32 raw bytes nor base64 of 32 bytes: %w", path, len(b), ErrMalformed)
	}
	return k, nil
}

// parseRSAPrivateKey parses one PEM block holding an RSA private key, PKCS#1
// ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY").
func parseRSAPrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("not one PEM block: %w", ErrMalformed)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("PKCS#8 key is %T, not RSA: %w", k, ErrMalformed)
		}
		return rk, nil
	default:
		return nil, fmt.Errorf("PEM type %q: %w", block.Type, ErrMalformed)
	}
}

// Names returns the names of the keyring's keys, in file order.
func (k *Keyring) Names() []string { return append([]string(nil), k.names...) }

// Writer returns a provider whose GenerateKey encrypts new objects with the
// master key name and whose DecryptKey is Reader's. An unknown name gives
// ErrNoMasterKey. The same name always gives the same provider.
func (k *Keyring) Writer(name string) (Provider, error) {
	w, ok := k.writers[name]
	if !ok {
		return nil, fmt.Errorf("cse: keyring has no key %q: %w", name, ErrNoMasterKey)
	}
	return w, nil
}

// Rules returns the file's rules, in file order, with their keys resolved to
// Writer providers. Version 1 files have none.
func (k *Keyring) Rules() []Rule { return append([]Rule(nil), k.rules...) }

// Default returns encrypt_with's Writer, or nil for none.
func (k *Keyring) Default() Provider { return k.def }

// Reader returns a provider that decrypts with any key of the keyring: AES
// and RSA wraps with the local keys (by "keyname", or by trial), kms and
// kms+context through the KMS key named by "keyname" or else the first KMS
// key. A wrap the keyring has no key kind for gives ErrUnsupported, a
// "keyname" it does not hold (or of the wrong kind) ErrNoMasterKey naming the
// materials description. Its GenerateKey fails with ErrNoMasterKey.
func (k *Keyring) Reader() Provider { return k.reader }

// router returns a Router over the keyring's rules, with Default as the rule
// for prefix "" when the file has no such rule, reading with Reader and then
// extra, in order. Only tests use it: the mount builds its own Router
// (mount/provider.go), adding zones and its KMS keys.
func (k *Keyring) router(extra ...Provider) (*Router, error) {
	rules := k.Rules()
	hasDefault := false
	for _, r := range rules {
		hasDefault = hasDefault || r.Prefix == ""
	}
	if !hasDefault && k.def != nil {
		rules = append(rules, Rule{Prefix: "", Provider: k.def})
	}
	return NewRouter(rules, append([]Provider{k.reader}, extra...)...)
}

type namedProvider struct {
	name string
	p    Provider
}

// keyringReader is Keyring.Reader.
type keyringReader struct {
	local *KeyringProvider  // decrypt-only; nil with no local keys
	kms   []namedProvider   // KMS references in file order
	kinds map[string]string // key name → "local" or "KMS"
}

var _ Provider = (*keyringReader)(nil)

func (r *keyringReader) GenerateKey(context.Context, KeyRequest) ([]byte, WrappedKey, error) {
	return nil, WrappedKey{}, fmt.Errorf("cse: a keyring reader does not encrypt: %w", ErrNoMasterKey)
}

func (r *keyringReader) DecryptKey(ctx context.Context, w WrappedKey) ([]byte, error) {
	name, named := w.MatDesc[KeyNameKey]
	kind := r.kinds[name]
	if w.WrapAlg == WrapKMS || w.WrapAlg == WrapKMSContext {
		if len(r.kms) == 0 {
			return nil, fmt.Errorf("cse: keyring has no KMS key for a %q key: %w", w.WrapAlg, ErrUnsupported)
		}
		if !named {
			return r.kms[0].p.DecryptKey(ctx, w)
		}
		if kind != "KMS" {
			return nil, fmt.Errorf("cse: keyring has no KMS key %q for the %q key with materials description %s: %w", name, w.WrapAlg, describe(w.MatDesc), ErrNoMasterKey)
		}
		for _, np := range r.kms {
			if np.name == name {
				return np.p.DecryptKey(ctx, w)
			}
		}
	}
	if named && kind == "KMS" {
		return nil, fmt.Errorf("cse: key %q is a KMS key, but the object is wrapped with %q (materials description %s): %w", name, w.WrapAlg, describe(w.MatDesc), ErrNoMasterKey)
	}
	if r.local == nil {
		return nil, fmt.Errorf("cse: keyring has no local keys for the %q key with materials description %s: %w", w.WrapAlg, describe(w.MatDesc), ErrNoMasterKey)
	}
	return r.local.DecryptKey(ctx, w)
}

// keyringWriter encrypts with one key and decrypts with the whole keyring.
type keyringWriter struct {
	gen  Provider
	read Provider
}

var _ Provider = (*keyringWriter)(nil)

func (w *keyringWriter) GenerateKey(ctx context.Context, req KeyRequest) ([]byte, WrappedKey, error) {
	return w.gen.GenerateKey(ctx, req)
}

func (w *keyringWriter) DecryptKey(ctx context.Context, wk WrappedKey) ([]byte, error) {
	return w.read.DecryptKey(ctx, wk)
}

// kmsKeyNamer records the keyring's name of a KMS key in the materials
// description (and so in the encryption context) of the keys it generates.
type kmsKeyNamer struct {
	name string
	p    Provider
}

func (n *kmsKeyNamer) GenerateKey(ctx context.Context, req KeyRequest) ([]byte, WrappedKey, error) {
	md := make(map[string]string, len(req.MatDesc)+1)
	maps.Copy(md, req.MatDesc)
	md[KeyNameKey] = n.name
	req.MatDesc = md
	return n.p.GenerateKey(ctx, req)
}

func (n *kmsKeyNamer) DecryptKey(ctx context.Context, w WrappedKey) ([]byte, error) {
	return n.p.DecryptKey(ctx, w)
}

// NewKeyringFile returns a new keyring file holding one random AES-256 key
// named "default", which it encrypts with.
func NewKeyringFile() ([]byte, error) {
	key := make([]byte, KeySize)
	defer Zero(key)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("cse: random master key: %w: %w", ErrMalformed, err)
	}
	f := keyringFile{
		Version:     1,
		EncryptWith: "default",
		Keys:        []keyringFileKey{{Name: "default", AES256: base64.StdEncoding.EncodeToString(key)}},
	}
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	return append(out, '\n'), nil
}

// AddKey returns data, a keyring file, with the key name added as spec says,
// as version 2 JSON (a version 1 file is converted; a single key that was the
// implicit default becomes encrypt_with). Rules and encrypt_with are kept as
// they are: the new key encrypts nothing until a rule or encrypt_with names
// it. A name already in the file, or a spec without exactly one field,
// gives ErrMalformed. References (files, variables, KMS keys) are stored,
// not checked: load the result with LoadKeyring to check them.
func AddKey(data []byte, name string, spec KeySpec) ([]byte, error) {
	f, err := decodeKeyringFile(data)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("cse: keyring add: empty key name: %w", ErrMalformed)
	}
	for _, k := range f.Keys {
		if k.Name == name {
			return nil, fmt.Errorf("cse: keyring add: key %q already exists: %w", name, ErrMalformed)
		}
	}
	nk := keyringFileKeyV2{Name: name, AES256File: spec.AESFile, AES256Env: spec.AESEnv,
		RSAPrivateKeyFil: spec.RSAPEMFile, KMSKeyID: spec.KMSKeyID}
	n := len(nk.sources())
	if spec.AES256 {
		n++
	}
	if n != 1 {
		return nil, fmt.Errorf("cse: keyring add %q: need exactly one key source, have %d: %w", name, n, ErrMalformed)
	}
	if spec.AES256 {
		key := make([]byte, KeySize)
		defer Zero(key)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("cse: random master key: %w: %w", ErrMalformed, err)
		}
		nk.AES256 = base64.StdEncoding.EncodeToString(key)
	}
	f.Version = 2
	f.Keys = append(f.Keys, nk)
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cse: %w: %v", ErrMalformed, err)
	}
	return append(out, '\n'), nil
}
