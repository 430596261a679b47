package metadata

import (
	"bytes"
	"encoding/base64"
	"errors"
	"maps"
	"mime"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/csefs/csefs/cse"
)

var (
	testBlob  = bytes.Repeat([]byte{0xA5}, 184) // a KMS-blob-sized wrapped key
	testIV12  = []byte("0123456789ab")
	testIV16  = []byte("0123456789abcdef")
	b64       = base64.StdEncoding.EncodeToString
	blobB64   = b64(testBlob)
	iv12B64   = b64(testIV12)
	iv16B64   = b64(testIV16)
	go3MatDsc = `{"Path":"s3://bucket/a","aws:x-amz-cek-alg":"AES/GCM/NoPadding","department":"x"}`
)

// go3Example is the §2 GO3 v3.1.0 example, as objectstore returns it (keys
// without the x-amz-meta- prefix).
func go3Example() map[string]string {
	return map[string]string{
		"x-amz-cek-alg":                    "AES/GCM/NoPadding",
		"x-amz-iv":                         iv12B64,
		"x-amz-key-v2":                     blobB64,
		"x-amz-matdesc":                    go3MatDsc,
		"x-amz-tag-len":                    "128",
		"x-amz-unencrypted-content-length": "1000",
		"x-amz-wrap-alg":                   "kms+context",
	}
}

func with(m map[string]string, kv ...string) map[string]string {
	m = maps.Clone(m)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func without(m map[string]string, keys ...string) map[string]string {
	m = maps.Clone(m)
	for _, k := range keys {
		delete(m, k)
	}
	return m
}

func cbcV2() map[string]string {
	return map[string]string{
		KeyV2: blobB64, KeyIV: iv16B64, KeyCEKAlg: cse.CEKAlgCBC, KeyWrapAlg: cse.WrapKMS,
		KeyMatDesc: `{"kms_cmk_id":"alias/emr"}`,
	}
}

func v1() map[string]string {
	return map[string]string{KeyV1: b64(testBlob[:48]), KeyIV: iv16B64, KeyMatDesc: `{}`}
}

func TestDetectGO3Example(t *testing.T) {
	e, err := Detect(go3Example())
	if err != nil {
		t.Fatal(err)
	}
	want := &Envelope{
		Version: 2, IV: testIV12, TagLenBits: 128, PlainLen: 1000,
		Key: cse.WrappedKey{
			WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCM, Blob: testBlob,
			MatDesc: map[string]string{"Path": "s3://bucket/a", cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "department": "x"},
		},
	}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("got %+v\nwant %+v", e, want)
	}
}

func TestDetect(t *testing.T) {
	v3 := map[string]string{"x-amz-3": "115", "x-amz-c": "x", "x-amz-d": "x", "x-amz-i": "x", "x-amz-w": "12"}
	tests := []struct {
		name    string
		meta    map[string]string
		err     error
		version int
		wrap    string
		cek     string
		tagLen  int
		plain   int64
		matdesc map[string]string
	}{
		{name: "v2 gcm", meta: go3Example(), version: 2, wrap: cse.WrapKMSContext, cek: cse.CEKAlgGCM, tagLen: 128, plain: 1000,
			matdesc: map[string]string{"Path": "s3://bucket/a", cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "department": "x"}},
		{name: "v2 gcm canonical case", meta: map[string]string{
			"X-Amz-Key-V2": blobB64, "X-Amz-Iv": iv12B64, "X-Amz-Cek-Alg": cse.CEKAlgGCM,
			"X-Amz-Wrap-Alg": cse.WrapKMS, "X-Amz-Matdesc": `{"a":"b"}`, "X-Amz-Tag-Len": "128",
		}, version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgGCM, tagLen: 128, plain: -1, matdesc: map[string]string{"a": "b"}},
		{name: "v2 gcm no tag-len", meta: without(go3Example(), KeyTagLen), version: 2, wrap: cse.WrapKMSContext, cek: cse.CEKAlgGCM, plain: 1000,
			matdesc: map[string]string{"Path": "s3://bucket/a", cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "department": "x"}},
		{name: "v2 cbc", meta: cbcV2(), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: -1,
			matdesc: map[string]string{cse.LegacyKMSKeyIDKey: "alias/emr"}},
		{name: "v2 cbc empty tag-len (§11.1)", meta: with(cbcV2(), KeyTagLen, ""), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: -1,
			matdesc: map[string]string{cse.LegacyKMSKeyIDKey: "alias/emr"}},
		{name: "v2 cbc tag-len ignored", meta: with(cbcV2(), KeyTagLen, "128"), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: -1,
			matdesc: map[string]string{cse.LegacyKMSKeyIDKey: "alias/emr"}},
		{name: "v2 no cek-alg means cbc", meta: without(cbcV2(), KeyCEKAlg), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: -1,
			matdesc: map[string]string{cse.LegacyKMSKeyIDKey: "alias/emr"}},
		{name: "v2 no matdesc", meta: without(cbcV2(), KeyMatDesc), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: -1, matdesc: map[string]string{}},
		{name: "v2 empty matdesc", meta: with(cbcV2(), KeyMatDesc, ""), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: -1, matdesc: map[string]string{}},
		{name: "v2 empty plain length", meta: with(cbcV2(), KeyPlainLen, ""), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: -1,
			matdesc: map[string]string{cse.LegacyKMSKeyIDKey: "alias/emr"}},
		{name: "v2 zero plain length", meta: with(cbcV2(), KeyPlainLen, "0"), version: 2, wrap: cse.WrapKMS, cek: cse.CEKAlgCBC, plain: 0,
			matdesc: map[string]string{cse.LegacyKMSKeyIDKey: "alias/emr"}},
		{name: "v1", meta: v1(), version: 1, wrap: cse.WrapV1, cek: cse.CEKAlgCBC, plain: -1, matdesc: map[string]string{}},
		{name: "v1 wrap-alg ignored", meta: with(v1(), KeyWrapAlg, "AESWrap", KeyPlainLen, "7"), version: 1, wrap: cse.WrapV1, cek: cse.CEKAlgCBC, plain: 7, matdesc: map[string]string{}},
		{name: "v1 gcm", meta: with(v1(), KeyCEKAlg, cse.CEKAlgGCM, KeyIV, iv12B64), version: 1, wrap: cse.WrapV1, cek: cse.CEKAlgGCM, plain: -1, matdesc: map[string]string{}},
		{name: "conflict", meta: with(go3Example(), KeyV1, blobB64), err: ErrKeyConflict},
		{name: "conflict without iv", meta: without(with(go3Example(), "X-Amz-Key", blobB64), KeyIV), err: ErrKeyConflict},
		{name: "v3 bad fields", meta: v3, err: ErrMalformed},
		{name: "v3 instruction file", meta: map[string]string{"x-amz-c": "x", "x-amz-d": "x", "X-Amz-I": "x"}, err: ErrNoEnvelope},
		{name: "v3 key only", meta: map[string]string{"x-amz-3": "115"}, err: ErrMalformed},
		{name: "v3 and v2 keys", meta: with(go3Example(), "x-amz-3", blobB64), err: ErrKeyConflict},
		{name: "v2 with a v3 key", meta: with(go3Example(), "x-amz-d", blobB64), err: ErrMalformed},
		{name: "v3 partial", meta: map[string]string{"x-amz-c": "x", "x-amz-d": "x"}, err: ErrNoEnvelope},
		{name: "key-v2 without iv", meta: without(go3Example(), KeyIV), err: ErrMalformed},
		{name: "key without iv", meta: without(v1(), KeyIV), err: ErrMalformed},
		{name: "iv only", meta: map[string]string{KeyIV: iv12B64}, err: ErrNoEnvelope},
		{name: "csefs attrs only", meta: map[string]string{AttrMode: "100644", "x-amz-matdesc": "{}"}, err: ErrNoEnvelope},
		{name: "empty", meta: map[string]string{}, err: ErrNoEnvelope},
		{name: "nil", meta: nil, err: ErrNoEnvelope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Detect(tt.meta)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if e != nil {
					t.Fatalf("envelope %+v with error", e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Version != tt.version || e.Key.WrapAlg != tt.wrap || e.Key.CEKAlg != tt.cek ||
				e.TagLenBits != tt.tagLen || e.PlainLen != tt.plain {
				t.Fatalf("got version=%d wrap=%q cek=%q tag=%d plain=%d", e.Version, e.Key.WrapAlg, e.Key.CEKAlg, e.TagLenBits, e.PlainLen)
			}
			if e.Key.MatDesc == nil || !maps.Equal(e.Key.MatDesc, tt.matdesc) {
				t.Fatalf("matdesc = %#v, want %#v", e.Key.MatDesc, tt.matdesc)
			}
			wantIV := testIV16
			if tt.cek == cse.CEKAlgGCM {
				wantIV = testIV12
			}
			if !bytes.Equal(e.IV, wantIV) {
				t.Fatalf("iv = %x", e.IV)
			}
		})
	}
}

func TestDetectMalformed(t *testing.T) {
	secret := b64([]byte("SECRET-KEY-BYTES-SECRET-KEY-BYTES"))
	tests := []struct {
		name  string
		meta  map[string]string
		field string
	}{
		{"key-v2 bad base64", with(go3Example(), KeyV2, secret+"!"), KeyV2},
		{"key-v2 unpadded", with(go3Example(), KeyV2, strings.TrimRight(b64([]byte("abcd")), "=")), KeyV2},
		{"key-v2 empty", with(go3Example(), KeyV2, ""), KeyV2},
		{"key bad base64", with(v1(), KeyV1, "%%%"), KeyV1},
		{"iv bad base64", with(go3Example(), KeyIV, "not base64!"), KeyIV},
		{"iv 16 for gcm", with(go3Example(), KeyIV, iv16B64), KeyIV},
		{"iv 12 for cbc", with(cbcV2(), KeyIV, iv12B64), KeyIV},
		{"iv 12 for v1", with(v1(), KeyIV, iv12B64), KeyIV},
		{"iv empty", with(go3Example(), KeyIV, ""), KeyIV},
		{"unknown cek-alg", with(go3Example(), KeyCEKAlg, "AES/CTR/NoPadding"), KeyCEKAlg},
		{"cek-alg wrong case", with(go3Example(), KeyCEKAlg, "aes/gcm/nopadding"), KeyCEKAlg},
		{"tag-len 96", with(go3Example(), KeyTagLen, "96"), KeyTagLen},
		{"tag-len text", with(go3Example(), KeyTagLen, "abc"), KeyTagLen},
		{"missing wrap-alg", without(go3Example(), KeyWrapAlg), KeyWrapAlg},
		{"empty wrap-alg", with(go3Example(), KeyWrapAlg, ""), KeyWrapAlg},
		{"wrap-alg not ASCII", with(go3Example(), KeyWrapAlg, "kms\xfe"), KeyWrapAlg},
		{"length text", with(go3Example(), KeyPlainLen, "1k"), KeyPlainLen},
		{"length negative", with(go3Example(), KeyPlainLen, "-1"), KeyPlainLen},
		{"length float", with(go3Example(), KeyPlainLen, "1.5"), KeyPlainLen},
		{"length overflow", with(go3Example(), KeyPlainLen, "99999999999999999999"), KeyPlainLen},
		{"matdesc syntax", with(go3Example(), KeyMatDesc, `{"a":`), KeyMatDesc},
		{"matdesc array", with(go3Example(), KeyMatDesc, `["a"]`), KeyMatDesc},
		{"matdesc number value", with(go3Example(), KeyMatDesc, `{"a":1}`), KeyMatDesc},
		{"matdesc nested", with(go3Example(), KeyMatDesc, `{"a":{"b":"c"}}`), KeyMatDesc},
		{"matdesc null", with(go3Example(), KeyMatDesc, `null`), KeyMatDesc},
		{"matdesc string", with(go3Example(), KeyMatDesc, `"x"`), KeyMatDesc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta := maps.Clone(tt.meta)
			if _, ok := meta[KeyV2]; ok && tt.field != KeyV2 {
				meta[KeyV2] = secret
			}
			e, err := Detect(meta)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if e != nil {
				t.Fatal("envelope returned with error")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
			if strings.Contains(err.Error(), strings.TrimRight(secret, "=")[:16]) || strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q leaks key bytes", err)
			}
		})
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	tests := []*Envelope{
		NewEnvelope(testIV12, cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCM, Blob: testBlob,
			MatDesc: map[string]string{cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "Path": "s3://b/k"}}, 1000),
		NewEnvelope(testIV12, cse.WrappedKey{WrapAlg: cse.WrapAESGCM, CEKAlg: cse.CEKAlgGCM, Blob: testBlob[:60]}, -1),
		NewEnvelope(testIV16, cse.WrappedKey{WrapAlg: cse.WrapKMS, CEKAlg: cse.CEKAlgCBC, Blob: testBlob,
			MatDesc: map[string]string{cse.LegacyKMSKeyIDKey: "arn:aws:kms:eu-west-1:1:key/x"}}, 0),
		NewEnvelope(testIV12, cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCM, Blob: testBlob,
			MatDesc: map[string]string{"dept": "Zürich-財務", "tricky": "=?UTF-8?B?QQ==?=", "emoji": "😀", "html": "<&>", "ctl": "\x01\n"}}, 5),
		{Version: 1, IV: testIV16, Key: cse.WrappedKey{CEKAlg: cse.CEKAlgCBC, Blob: testBlob[:48], MatDesc: map[string]string{}}, PlainLen: 3},
	}
	for _, e := range tests {
		m := e.Metadata()
		for k, v := range m {
			if k != strings.ToLower(k) || strings.HasPrefix(k, "x-amz-meta-") {
				t.Errorf("key %q", k)
			}
			for i := 0; i < len(v); i++ {
				if v[i] >= utf8.RuneSelf {
					t.Errorf("%s is not ASCII: %q", k, v)
				}
			}
		}
		if _, ok := m[KeyTagLen]; ok != (e.Key.CEKAlg == cse.CEKAlgGCM) {
			t.Errorf("tag-len present=%v for %s", ok, e.Key.CEKAlg)
		}
		if _, ok := m[KeyPlainLen]; ok != (e.PlainLen >= 0) {
			t.Errorf("length present=%v for PlainLen %d", ok, e.PlainLen)
		}
		got, err := Detect(m)
		if err != nil {
			t.Fatalf("Detect(%v): %v", m, err)
		}
		want := *e
		if want.Key.MatDesc == nil {
			want.Key.MatDesc = map[string]string{}
		}
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, &want)
		}
		got, err = ParseInstruction(e.Instruction())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("instruction round trip:\n got %+v\nwant %+v", got, &want)
		}
	}
}

func TestMetadataGCMExact(t *testing.T) {
	e := NewEnvelope(testIV12, cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCM, Blob: testBlob,
		MatDesc: map[string]string{"department": "x", cse.ReservedCEKAlgKey: cse.CEKAlgGCM, "Path": "s3://bucket/a"}}, 1000)
	if got, want := e.Metadata(), go3Example(); !maps.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

// doubleEncode does what S3 does to a non-ASCII header value: each UTF-8 byte
// becomes one rune, and the result is sent as an RFC 2047 word.
func doubleEncode(s string) string {
	var rs []rune
	for _, b := range []byte(s) {
		rs = append(rs, rune(b))
	}
	return mime.BEncoding.Encode("UTF-8", string(rs))
}

func TestDecodeValue(t *testing.T) {
	const orig = `{"dept":"Zürich-財務"}`
	enc := doubleEncode(orig)
	if !strings.HasPrefix(enc, "=?UTF-8?b?") && !strings.HasPrefix(enc, "=?UTF-8?B?") {
		t.Fatalf("encoding %q", enc)
	}
	tests := []struct{ in, want string }{
		{enc, orig},
		{`{"a":"b"}`, `{"a":"b"}`},
		{"", ""},
		{mime.BEncoding.Encode("UTF-8", "Zürich"), "Zürich"},      // single-encoded, invalid once re-read
		{mime.QEncoding.Encode("UTF-8", "財務"), "財務"},              // runes > 0xFF: kept
		{mime.QEncoding.Encode("ISO-8859-1", "Zürich"), "Zürich"}, // Latin-1 word
		{"=?bogus?X?abc?=", "=?bogus?X?abc?="},                    // undecodable word kept
		{"Zürich", "Zürich"},
		{"ZÃ¼rich", "Zürich"}, // double-encoded without the MIME layer
	}
	for _, tt := range tests {
		if got := DecodeValue(tt.in); got != tt.want {
			t.Errorf("DecodeValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	e, err := Detect(with(without(go3Example(), KeyMatDesc), "X-Amz-Matdesc", enc))
	if err != nil {
		t.Fatal(err)
	}
	if e.Key.MatDesc["dept"] != "Zürich-財務" || len(e.Key.MatDesc) != 1 {
		t.Fatalf("matdesc %#v", e.Key.MatDesc)
	}
}

func TestLookup(t *testing.T) {
	m := map[string]string{"X-Amz-Key-V2": "a", "x-amz-iv": "b"}
	if v, ok := Lookup(m, KeyV2); !ok || v != "a" {
		t.Fatal(v, ok)
	}
	if v, ok := Lookup(m, "X-AMZ-IV"); !ok || v != "b" {
		t.Fatal(v, ok)
	}
	if _, ok := Lookup(m, "x-amz-key"); ok {
		t.Fatal("prefix matched")
	}
	if _, ok := Lookup(map[string]string{"x-amz-\u212aey": "k"}, "x-amz-key"); ok {
		t.Fatal("Kelvin sign folded to k")
	}
	// Exact match wins; otherwise the smallest key, whatever the map order.
	dup := map[string]string{"X-Amz-Iv": "upper", "x-AMZ-iv": "mixed", "x-amz-iv": "exact"}
	for range 20 {
		if v, _ := Lookup(dup, KeyIV); v != "exact" {
			t.Fatal(v)
		}
		if v, _ := Lookup(dup, "X-AMZ-IV"); v != "upper" {
			t.Fatal(v)
		}
	}
}

func TestPlainSize(t *testing.T) {
	gcm := NewEnvelope(testIV12, cse.WrappedKey{CEKAlg: cse.CEKAlgGCM}, -1)
	cbc := func(p int64) *Envelope {
		return NewEnvelope(testIV16, cse.WrappedKey{CEKAlg: cse.CEKAlgCBC}, p)
	}
	tests := []struct {
		name   string
		e      *Envelope
		cipher int64
		size   int64
		known  bool
	}{
		{"gcm empty", gcm, 16, 0, true},
		{"gcm 1000", gcm, 1016, 1000, true},
		{"gcm short", gcm, 15, 0, false},
		{"gcm zero", gcm, 0, 0, false},
		{"gcm ignores stored length", NewEnvelope(testIV12, cse.WrappedKey{CEKAlg: cse.CEKAlgGCM}, 5), 1016, 1000, true},
		{"cbc 1000", cbc(1000), 1008, 1000, true},
		{"cbc 0", cbc(0), 16, 0, true},
		{"cbc 16", cbc(16), 32, 16, true},
		{"cbc 15", cbc(15), 16, 15, true},
		{"cbc unknown", cbc(-1), 1008, 0, false},
		{"cbc inconsistent", cbc(1000), 1024, 0, false},
		{"cbc length past body", cbc(2000), 1008, 0, false},
		{"unknown alg", &Envelope{PlainLen: 3}, 16, 0, false},
	}
	for _, tt := range tests {
		size, known := tt.e.PlainSize(tt.cipher)
		if size != tt.size || known != tt.known {
			t.Errorf("%s: PlainSize(%d) = %d, %v; want %d, %v", tt.name, tt.cipher, size, known, tt.size, tt.known)
		}
	}
}

func TestNewEnvelope(t *testing.T) {
	e := NewEnvelope(testIV16, cse.WrappedKey{CEKAlg: cse.CEKAlgCBC}, -7)
	if e.Version != 2 || e.TagLenBits != 0 || e.PlainLen != -1 {
		t.Fatalf("%+v", e)
	}
	e = NewEnvelope(testIV12, cse.WrappedKey{CEKAlg: cse.CEKAlgGCM}, 9)
	if e.Version != 2 || e.TagLenBits != 128 || e.PlainLen != 9 {
		t.Fatalf("%+v", e)
	}
}

func TestSize(t *testing.T) {
	m := map[string]string{"ab": "cde", "f": ""}
	if n := Size(m); n != 6 {
		t.Fatal(n)
	}
	m = map[string]string{"k": strings.Repeat("v", MaxUserMetadata-1)}
	if err := CheckSize(m); err != nil {
		t.Fatal(err)
	}
	m["k"] += "v"
	if err := CheckSize(m); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v", err)
	}
	// A large encryption context pushes the envelope past the limit.
	md := map[string]string{}
	for i := range 40 {
		md[strings.Repeat(string(rune('a'+i%26)), i+1)] = strings.Repeat("x", 40)
	}
	e := NewEnvelope(testIV12, cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCM, Blob: testBlob, MatDesc: md}, 1)
	if err := CheckSize(e.Metadata()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v", err)
	}
	if err := CheckSize(go3Example()); err != nil {
		t.Fatal(err)
	}
}
