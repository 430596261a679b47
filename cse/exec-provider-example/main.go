// Command exec-provider-example is an example materials provider for
// csefs --materials-provider exec:PROGRAM (the protocol is documented on
// cse.ExecProvider). It holds one AES-256 master key and wraps data keys with
// the S3EC "AES/GCM" wrap (s3ec-format.md §4.3), so what it writes is also
// readable by the AWS S3 Encryption Clients and by a csefs keyring holding
// the same key under the same name.
//
// Usage:
//
//	exec-provider-example [-key-file FILE | -key-env VAR] [-key-name NAME]
//
// The master key is read from FILE (32 raw bytes or base64 text of 32 bytes)
// or from the environment variable VAR (base64; default CSEFS_EXAMPLE_KEY).
// NAME (default "exec-example") is stored as "keyname" in the materials
// description of every object it encrypts, and objects naming another key are
// refused. It uses only the standard library, so it can be copied as the
// start of a real provider (one that fetches its key from a vault, say).
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const (
	wrapAESGCM = "AES/GCM"
	cekAlgGCM  = "AES/GCM/NoPadding"
	cekAlgV3   = "115" // the key-committing V3 suite (--commitment-policy require-*)
	keyNameKey = "keyname"
)

type request struct {
	Version    int               `json:"version"`
	Operation  string            `json:"operation"`
	Object     string            `json:"object"`
	MatDesc    map[string]string `json:"materials_description"`
	CEKAlg     string            `json:"cek_alg"`
	WrappedKey []byte            `json:"wrapped_key"`
	WrapAlg    string            `json:"wrap_alg"`
}

type response struct {
	Key        []byte            `json:"key,omitempty"`
	WrappedKey []byte            `json:"wrapped_key,omitempty"`
	WrapAlg    string            `json:"wrap_alg,omitempty"`
	MatDesc    map[string]string `json:"materials_description,omitempty"`
	Error      string            `json:"error,omitempty"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Getenv))
}

// run serves one request and returns the exit status. Failures are answered
// with {"error": ...} on stdout and status 1; nothing secret is ever printed
// except the data key in a successful response.
func run(args []string, stdin io.Reader, stdout io.Writer, getenv func(string) string) int {
	resp, err := serve(args, stdin, getenv)
	if err != nil {
		resp = response{Error: err.Error()}
	}
	out, _ := json.Marshal(resp)
	clear(resp.Key)
	out = append(out, '\n')
	_, werr := stdout.Write(out)
	clear(out)
	if err != nil || werr != nil {
		return 1
	}
	return 0
}

func serve(args []string, stdin io.Reader, getenv func(string) string) (response, error) {
	fs := flag.NewFlagSet("exec-provider-example", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	keyFile := fs.String("key-file", "", "file holding the master key (32 raw bytes or base64)")
	keyEnv := fs.String("key-env", "CSEFS_EXAMPLE_KEY", "environment variable holding the master key (base64)")
	keyName := fs.String("key-name", "exec-example", "the master key's name, stored as keyname in the materials description")
	if err := fs.Parse(args); err != nil {
		return response{}, fmt.Errorf("arguments: %v", err)
	}
	var req request
	dec := json.NewDecoder(io.LimitReader(stdin, 1<<20))
	if err := dec.Decode(&req); err != nil {
		return response{}, errors.New("request is not JSON")
	}
	if req.Version != 1 {
		return response{}, fmt.Errorf("protocol version %d, want 1", req.Version)
	}
	kek, err := masterKey(*keyFile, *keyEnv, getenv)
	if err != nil {
		return response{}, err
	}
	defer clear(kek)
	block, err := aes.NewCipher(kek)
	if err != nil {
		return response{}, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return response{}, err
	}
	switch req.Operation {
	case "encrypt":
		if req.CEKAlg != cekAlgGCM && req.CEKAlg != cekAlgV3 {
			return response{}, fmt.Errorf("content algorithm %q, want %s or %s", req.CEKAlg, cekAlgGCM, cekAlgV3)
		}
		key := make([]byte, 32)
		iv := make([]byte, gcm.NonceSize())
		if _, err := rand.Read(key); err != nil {
			return response{}, err
		}
		if _, err := rand.Read(iv); err != nil {
			return response{}, err
		}
		md := map[string]string{}
		for k, v := range req.MatDesc {
			md[k] = v
		}
		md[keyNameKey] = *keyName
		// §4.3: IV || AES-GCM(KEK, IV, data key, AAD = content algorithm) || tag.
		wrapped := gcm.Seal(iv, iv, key, []byte(req.CEKAlg))
		return response{Key: key, WrappedKey: wrapped, WrapAlg: wrapAESGCM, MatDesc: md}, nil
	case "decrypt":
		if req.WrapAlg != wrapAESGCM {
			return response{}, fmt.Errorf("wrap algorithm %q, want %s", req.WrapAlg, wrapAESGCM)
		}
		if name, ok := req.MatDesc[keyNameKey]; ok && name != *keyName {
			return response{}, fmt.Errorf("object was wrapped with key %q, this provider holds %q", name, *keyName)
		}
		n := gcm.NonceSize()
		if len(req.WrappedKey) != n+32+gcm.Overhead() {
			return response{}, fmt.Errorf("wrapped key of %d bytes, want %d", len(req.WrappedKey), n+32+gcm.Overhead())
		}
		key, err := gcm.Open(nil, req.WrappedKey[:n], req.WrappedKey[n:], []byte(req.CEKAlg))
		if err != nil {
			return response{}, errors.New("wrapped key does not authenticate (wrong master key, content algorithm or tampered)")
		}
		return response{Key: key}, nil
	default:
		return response{}, fmt.Errorf("operation %q, want encrypt or decrypt", req.Operation)
	}
}

// masterKey reads the master key from file, or else from the variable env.
func masterKey(file, env string, getenv func(string) string) ([]byte, error) {
	var text []byte
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("master key file: %v", err)
		}
		if len(b) == 32 {
			return b, nil
		}
		text = b
	} else {
		v := getenv(env)
		if v == "" {
			return nil, fmt.Errorf("no master key: set %s or pass -key-file", env)
		}
		text = []byte(v)
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(text)))
	clear(text)
	if err != nil || len(key) != 32 {
		clear(key)
		return nil, errors.New("master key is not 32 raw bytes or base64 of 32 bytes")
	}
	return key, nil
}
