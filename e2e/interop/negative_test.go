package interop

// Negative cases against the real servers. Each asserts a sentinel with
// errors.Is and that the core reader returned no plaintext.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
)

const negSize = 1000

// expectFail reads key through the core and requires an error matching one of
// want (errors.Is) and no plaintext.
func expectFail(t *testing.T, e *env, p cse.Provider, key string, want ...error) {
	t.Helper()
	got, err := coreRead(ctx, e, p, key)
	if got != nil {
		t.Fatalf("core read %s returned %d bytes of plaintext (err %v)", key, len(got), err)
	}
	for _, w := range want {
		if errors.Is(err, w) {
			return
		}
	}
	t.Fatalf("core read %s: err = %v, want errors.Is one of %v", key, err, want)
}

// tampered writes a good negSize-byte object with p (object-metadata mode,
// V2 unless mode says otherwise), then stores mutate(body, metadata) under a
// new key, which it returns.
func tampered(t *testing.T, e *env, p cse.Provider, mutate func(body []byte, meta map[string]string) []byte, mode ...writeMode) string {
	t.Helper()
	key := "neg/" + t.Name()
	coreWrite(t, e, p, key+".orig", randBytes(t, negSize), append(mode, writeMode{})[0])
	body, meta := rawObject(t, e, key+".orig")
	body = mutate(body, meta)
	putRaw(t, e, key, body, meta)
	return key
}

// editMatDesc rewrites the stored x-amz-matdesc through f.
func editMatDesc(t *testing.T, meta map[string]string, f func(md map[string]string)) {
	t.Helper()
	md := map[string]string{}
	if err := json.Unmarshal([]byte(meta[metadata.KeyMatDesc]), &md); err != nil {
		t.Fatalf("stored matdesc: %v", err)
	}
	f(md)
	b, _ := json.Marshal(md)
	meta[metadata.KeyMatDesc] = string(b)
}

func ctxProvider(t *testing.T, e *env) cse.Provider {
	return newKMSProvider(t, e, e.KMSSRV.KeyID, cse.WrapKMSContext)
}

func TestFlippedBodyByte(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	key := tampered(t, e, p, func(b []byte, _ map[string]string) []byte { b[negSize/2] ^= 1; return b })
	expectFail(t, e, p, key, cse.ErrAuthentication)
}

func TestFlippedTag(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	key := tampered(t, e, p, func(b []byte, _ map[string]string) []byte { b[len(b)-1] ^= 0x80; return b })
	expectFail(t, e, p, key, cse.ErrAuthentication)
}

func TestFlippedIV(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	key := tampered(t, e, p, func(b []byte, meta map[string]string) []byte {
		iv, err := base64.StdEncoding.DecodeString(meta[metadata.KeyIV])
		if err != nil {
			t.Fatal(err)
		}
		iv[0] ^= 1
		meta[metadata.KeyIV] = base64.StdEncoding.EncodeToString(iv)
		return b
	})
	expectFail(t, e, p, key, cse.ErrAuthentication)
}

func TestTruncatedBody(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	t.Run("oneByte", func(t *testing.T) {
		key := tampered(t, e, p, func(b []byte, _ map[string]string) []byte { return b[:len(b)-1] })
		expectFail(t, e, p, key, cse.ErrAuthentication)
	})
	t.Run("shorterThanTag", func(t *testing.T) {
		key := tampered(t, e, p, func(b []byte, _ map[string]string) []byte { return b[:cse.TagSize-1] })
		expectFail(t, e, p, key, cse.ErrTruncated)
	})
}

// TestMatDescChanged: the stored matdesc is the KMS encryption context, so an
// added entry makes KMS refuse the unwrap.
func TestMatDescChanged(t *testing.T) {
	e := newEnv(t)
	for _, w := range coreWraps(e) {
		t.Run(w.wrap, func(t *testing.T) {
			p := newKMSProvider(t, e, w.keyID, w.wrap)
			key := tampered(t, e, p, func(b []byte, meta map[string]string) []byte {
				editMatDesc(t, meta, func(md map[string]string) { md["Path"] = "s3://elsewhere/x" })
				return b
			})
			expectFail(t, e, p, key, cse.ErrContextMismatch, cse.ErrKeyAccess)
		})
	}
}

// TestMatDescMissingCEKAlg: a kms+context matdesc must bind the content
// algorithm (§4.1 read step 2); missing or different, the core refuses before
// asking KMS.
func TestMatDescMissingCEKAlg(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	t.Run("missing", func(t *testing.T) {
		key := tampered(t, e, p, func(b []byte, meta map[string]string) []byte {
			editMatDesc(t, meta, func(md map[string]string) { delete(md, cse.ReservedCEKAlgKey) })
			return b
		})
		expectFail(t, e, p, key, cse.ErrContextMismatch)
	})
	t.Run("differs", func(t *testing.T) {
		key := tampered(t, e, p, func(b []byte, meta map[string]string) []byte {
			editMatDesc(t, meta, func(md map[string]string) { md[cse.ReservedCEKAlgKey] = cse.CEKAlgCBC })
			return b
		})
		expectFail(t, e, p, key, cse.ErrContextMismatch)
	})
}

func TestBothKeyEntries(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	key := tampered(t, e, p, func(b []byte, meta map[string]string) []byte {
		meta[metadata.KeyV1] = meta[metadata.KeyV2]
		return b
	})
	expectFail(t, e, p, key, metadata.ErrKeyConflict)
}

// TestWrongKey: a data key generated under key A does not unwrap as key B.
func TestWrongKey(t *testing.T) {
	e := newEnv(t)
	k := e.KMSSRV
	otherID, otherARN := k.NewKey(t)
	t.Run("kms+context/readerOnOtherKey", func(t *testing.T) {
		pa := newKMSProvider(t, e, k.KeyID, cse.WrapKMSContext)
		// StrictKeyID: by default the provider sends no KeyId and KMS uses
		// the key the blob names. AWS answers IncorrectKeyException
		// (ErrKeyAccess); local-kms answers InvalidCiphertextException
		// (ErrContextMismatch).
		pb := newKMSProvider(t, e, otherID, cse.WrapKMSContext, true)
		key := "neg/wrongkey/ctx"
		coreWrite(t, e, pa, key, randBytes(t, negSize), writeMode{})
		expectFail(t, e, pb, key, cse.ErrKeyAccess, cse.ErrContextMismatch)
	})
	t.Run("kms/claimsOtherKey", func(t *testing.T) {
		// Generated on A, but kms_cmk_id (and so the context) names B.
		pa := newKMSProvider(t, e, k.KeyARN, cse.WrapKMS)
		key := tampered(t, e, pa, func(b []byte, meta map[string]string) []byte {
			editMatDesc(t, meta, func(md map[string]string) { md[cse.LegacyKMSKeyIDKey] = otherARN })
			return b
		})
		pb := newKMSProvider(t, e, otherARN, cse.WrapKMS)
		expectFail(t, e, pb, key, cse.ErrKeyAccess, cse.ErrContextMismatch)
		expectFail(t, e, pa, key, cse.ErrKeyAccess, cse.ErrContextMismatch)
	})
}

func TestProviderRefusesUnusableKeys(t *testing.T) {
	e := newEnv(t)
	k := e.KMSSRV
	ids := map[string]string{"disabled": k.DisabledKeyID, "asymmetric": k.AsymmetricKeyID, "sign": k.SignKeyID, "missing": "alias/does-not-exist"}
	for name, id := range ids {
		t.Run(name, func(t *testing.T) {
			for _, wrap := range []string{cse.WrapKMSContext, cse.WrapKMS} {
				p, err := newKMSProviderErr(e, id, wrap)
				if !errors.Is(err, cse.ErrKeyUnusable) {
					t.Fatalf("NewKMSProvider(%s key, %s) = %v, %v; want ErrKeyUnusable", name, wrap, p, err)
				}
			}
		})
	}
}

// TestKeyDisabledAfterWrite: an object whose master key was disabled after it
// was written no longer decrypts.
func TestKeyDisabledAfterWrite(t *testing.T) {
	e := newEnv(t)
	id, _ := e.KMSSRV.NewKey(t)
	p := newKMSProvider(t, e, id, cse.WrapKMSContext)
	strict := newKMSProvider(t, e, id, cse.WrapKMSContext, true)
	key := "neg/disabled-later"
	plain := randBytes(t, negSize)
	coreWrite(t, e, p, key, plain, writeMode{})
	mustCoreRead(t, e, p, key, plain)
	if _, err := e.KMS.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	// With the KeyId sent, KMS answers DisabledException → ErrKeyUnusable.
	expectFail(t, e, strict, key, cse.ErrKeyUnusable)
	// Without it, AWS KMS still answers DisabledException, but local-kms
	// hides the key state behind AccessDeniedException (→ ErrKeyAccess).
	expectFail(t, e, p, key, cse.ErrKeyUnusable, cse.ErrKeyAccess)
	// NewKMSProvider now refuses the key outright.
	if _, err := newKMSProviderErr(e, id, cse.WrapKMSContext); !errors.Is(err, cse.ErrKeyUnusable) {
		t.Fatalf("NewKMSProvider(disabled key) err = %v, want ErrKeyUnusable", err)
	}
}

func TestMalformedMetadata(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	cases := map[string]func(meta map[string]string){
		"keyBase64":     func(m map[string]string) { m[metadata.KeyV2] = "!!not base64!!" },
		"ivBase64":      func(m map[string]string) { m[metadata.KeyIV] = "%%%" },
		"ivLength":      func(m map[string]string) { m[metadata.KeyIV] = base64.StdEncoding.EncodeToString(make([]byte, 16)) },
		"matdescJSON":   func(m map[string]string) { m[metadata.KeyMatDesc] = `{"aws:x-amz-cek-alg":` },
		"matdescArray":  func(m map[string]string) { m[metadata.KeyMatDesc] = `["a"]` },
		"wrapAlgAbsent": func(m map[string]string) { delete(m, metadata.KeyWrapAlg) },
		"tagLen":        func(m map[string]string) { m[metadata.KeyTagLen] = "96" },
		"cekAlg":        func(m map[string]string) { m[metadata.KeyCEKAlg] = "AES/CTR/NoPadding" },
		"ivMissing":     func(m map[string]string) { delete(m, metadata.KeyIV) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			key := tampered(t, e, p, func(b []byte, meta map[string]string) []byte { mutate(meta); return b })
			expectFail(t, e, p, key, metadata.ErrMalformed)
		})
	}
}

func TestInstructionFileMissing(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	key := "neg/instr-missing"
	coreWrite(t, e, p, key, randBytes(t, negSize), writeMode{instruction: true})
	if _, err := e.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &e.Bucket, Key: aws.String(metadata.InstructionKey(key))}); err != nil {
		t.Fatal(err)
	}
	expectFail(t, e, p, key, metadata.ErrNoInstructionFile)
}

func TestInstructionFileMalformed(t *testing.T) {
	e := newEnv(t)
	p := ctxProvider(t, e)
	key := "neg/instr-malformed"
	coreWrite(t, e, p, key, randBytes(t, negSize), writeMode{instruction: true})
	good, _ := rawObject(t, e, metadata.InstructionKey(key))
	var fields map[string]any
	if err := json.Unmarshal(good, &fields); err != nil {
		t.Fatal(err)
	}
	noIV := map[string]any{}
	for k, v := range fields {
		if !strings.EqualFold(k, metadata.KeyIV) {
			noIV[k] = v
		}
	}
	noIVBody, _ := json.Marshal(noIV)
	badB64 := map[string]any{}
	for k, v := range fields {
		badB64[k] = v
	}
	badB64[metadata.KeyV2] = "***"
	badB64Body, _ := json.Marshal(badB64)
	bodies := map[string][]byte{
		"notJSON":   []byte("{not json"),
		"truncated": good[:len(good)/2],
		"noIV":      noIVBody,
		"keyBase64": badB64Body,
		"array":     []byte(`[1,2]`),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			putRaw(t, e, metadata.InstructionKey(key), body, metadata.InstructionMetadata())
			expectFail(t, e, p, key, metadata.ErrMalformed)
		})
	}
}
