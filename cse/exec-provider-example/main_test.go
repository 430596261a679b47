package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var testKEK = bytes.Repeat([]byte{7}, 32)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func call(t *testing.T, args []string, getenv func(string) string, req any) (response, int) {
	t.Helper()
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := run(args, bytes.NewReader(in), &out, getenv)
	var resp response
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
		t.Fatalf("output %q is not JSON: %v", out.String(), err)
	}
	if (code == 0) != (resp.Error == "") {
		t.Fatalf("exit %d with error %q", code, resp.Error)
	}
	return resp, code
}

func TestEncryptDecrypt(t *testing.T) {
	getenv := env(map[string]string{"CSEFS_EXAMPLE_KEY": base64.StdEncoding.EncodeToString(testKEK)})
	enc, code := call(t, nil, getenv, map[string]any{"version": 1, "operation": "encrypt", "object": "s3://b/k",
		"materials_description": map[string]string{"Path": "s3://b/k", "keyname": "caller"}, "cek_alg": cekAlgGCM})
	if code != 0 {
		t.Fatal(enc.Error)
	}
	if len(enc.Key) != 32 || len(enc.WrappedKey) != 60 || enc.WrapAlg != "AES/GCM" ||
		enc.MatDesc["keyname"] != "exec-example" || enc.MatDesc["Path"] != "s3://b/k" {
		t.Fatalf("encrypt response %d-byte key, %d-byte wrapped key, %q, %v", len(enc.Key), len(enc.WrappedKey), enc.WrapAlg, enc.MatDesc)
	}
	// §4.3, checked with the standard library directly.
	b, _ := aes.NewCipher(testKEK)
	g, _ := cipher.NewGCM(b)
	got, err := g.Open(nil, enc.WrappedKey[:12], enc.WrappedKey[12:], []byte("AES/GCM/NoPadding"))
	if err != nil || !bytes.Equal(got, enc.Key) {
		t.Fatalf("wrapped key is not IV || GCM(KEK, IV, key, AAD=cek alg): %v", err)
	}
	decReq := map[string]any{"version": 1, "operation": "decrypt", "object": "s3://b/k", "materials_description": enc.MatDesc,
		"wrapped_key": enc.WrappedKey, "wrap_alg": "AES/GCM", "cek_alg": cekAlgGCM}
	dec, code := call(t, nil, getenv, decReq)
	if code != 0 || !bytes.Equal(dec.Key, enc.Key) {
		t.Fatalf("decrypt: %d %q", code, dec.Error)
	}

	// One adversarial case per failure mode.
	tampered := bytes.Clone(enc.WrappedKey)
	tampered[20] ^= 1
	otherName := map[string]string{"keyname": "other"}
	for name, c := range map[string]struct {
		args   []string
		getenv func(string) string
		req    map[string]any
		want   string
	}{
		"tampered":     {nil, getenv, with(decReq, "wrapped_key", tampered), "does not authenticate"},
		"cek alg":      {nil, getenv, with(decReq, "cek_alg", "AES/CBC/PKCS5Padding"), "does not authenticate"},
		"short":        {nil, getenv, with(decReq, "wrapped_key", tampered[:40]), "40 bytes"},
		"wrap alg":     {nil, getenv, with(decReq, "wrap_alg", "kms+context"), "wrap algorithm"},
		"other name":   {nil, getenv, with(decReq, "materials_description", otherName), `"other"`},
		"wrong kek":    {nil, env(map[string]string{"CSEFS_EXAMPLE_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32))}), decReq, "does not authenticate"},
		"no key":       {nil, env(nil), decReq, "CSEFS_EXAMPLE_KEY"},
		"short key":    {nil, env(map[string]string{"CSEFS_EXAMPLE_KEY": "AAAA"}), decReq, "32 raw bytes"},
		"version":      {nil, getenv, with(decReq, "version", 2), "version 2"},
		"operation":    {nil, getenv, with(decReq, "operation", "rotate"), `"rotate"`},
		"enc cek alg":  {nil, getenv, with(with(decReq, "operation", "encrypt"), "cek_alg", "AES/CTR/NoPadding"), "content algorithm"},
		"bad flag":     {[]string{"-nope"}, getenv, decReq, "arguments"},
		"missing file": {[]string{"-key-file", filepath.Join(t.TempDir(), "absent")}, getenv, decReq, "master key file"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, code := call(t, c.args, c.getenv, c.req)
			if code != 1 || !strings.Contains(resp.Error, c.want) {
				t.Fatalf("exit %d, error %q, want it to mention %q", code, resp.Error, c.want)
			}
			if resp.Key != nil {
				t.Fatal("error response carries a key")
			}
		})
	}
}

func with(m map[string]any, k string, v any) map[string]any {
	c := map[string]any{}
	for kk, vv := range m {
		c[kk] = vv
	}
	c[k] = v
	return c
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	raw, b64 := filepath.Join(dir, "raw"), filepath.Join(dir, "b64")
	if err := os.WriteFile(raw, testKEK, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b64, []byte(base64.StdEncoding.EncodeToString(testKEK)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc, code := call(t, []string{"-key-file", raw, "-key-name", "n1"}, env(nil),
		map[string]any{"version": 1, "operation": "encrypt", "cek_alg": cekAlgGCM})
	if code != 0 || enc.MatDesc["keyname"] != "n1" {
		t.Fatalf("encrypt: %q %v", enc.Error, enc.MatDesc)
	}
	dec, code := call(t, []string{"-key-file", b64, "-key-name", "n1"}, env(nil),
		map[string]any{"version": 1, "operation": "decrypt", "materials_description": enc.MatDesc,
			"wrapped_key": enc.WrappedKey, "wrap_alg": "AES/GCM", "cek_alg": cekAlgGCM})
	if code != 0 || !bytes.Equal(dec.Key, enc.Key) {
		t.Fatalf("decrypt with the base64 file: %q", dec.Error)
	}
}

func TestNotJSON(t *testing.T) {
	var out bytes.Buffer
	if code := run(nil, strings.NewReader("{"), &out, env(nil)); code != 1 || !strings.Contains(out.String(), "not JSON") {
		t.Fatalf("exit %d, %s", code, out.String())
	}
}
