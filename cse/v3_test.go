package cse

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestGCMAADGrid: with additional data, EncryptWriterAAD and GCMSealerAAD
// equal a one-shot Seal(nil, iv, plain, aad) over sizes that take every
// sealing path (first chunk, two-pass, fused past 1 MiB), and the reader
// opens them; a different AAD fails authentication.
func TestGCMAADGrid(t *testing.T) {
	key, iv := testKeyIV(t)
	sizes := []int{0, 1, 16, 17, 64<<10 + 1, 1<<20 + 7, 3<<20 + 5}
	aads := [][]byte{commitAAD(), {1}, bytes.Repeat([]byte{7}, 16), bytes.Repeat([]byte{9}, 40)}
	for _, size := range sizes {
		plain := testBytes(uint64(size), size)
		for _, aad := range aads {
			t.Run(fmt.Sprintf("size=%d/aad=%d", size, len(aad)), func(t *testing.T) {
				want := stdGCM(t, key).Seal(nil, iv, plain, aad)
				var buf bytes.Buffer
				w, err := newEncryptWriterAAD(&buf, key, iv, aad)
				if err != nil {
					t.Fatal(err)
				}
				if err := writeInSteps(w, plain, 4096); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf.Bytes(), want) {
					t.Fatal("EncryptWriterAAD differs from one-shot Seal")
				}
				s, err := newGCMSealerAAD(key, iv, aad)
				if err != nil {
					t.Fatal(err)
				}
				ct := make([]byte, len(plain))
				if err := s.Seal(ct, plain); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(append(ct, s.Tag()...), want) {
					t.Fatal("GCMSealerAAD differs from one-shot Seal")
				}
				r, err := newGCMDecryptReaderAAD(bytes.NewReader(want), key, iv, aad)
				if err != nil {
					t.Fatal(err)
				}
				got, err := readInSteps(r, 65536)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("reader: %v", err)
				}
				r, _ = newGCMDecryptReaderAAD(bytes.NewReader(want), key, iv, append(aad, 0))
				if _, err := io.ReadAll(r); !errors.Is(err, ErrAuthentication) {
					t.Fatalf("other AAD: %v, want ErrAuthentication", err)
				}
				r, _ = newGCMDecryptReader(bytes.NewReader(want), key, iv)
				if _, err := io.ReadAll(r); !errors.Is(err, ErrAuthentication) {
					t.Fatalf("no AAD: %v, want ErrAuthentication", err)
				}
				if got, err := openGCMAAD(key, iv, want, aad); err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("openGCMAAD: %v", err)
				}
			})
		}
	}
}

// hkdfRef is RFC 5869 HKDF-SHA512 written out with crypto/hmac, as an
// independent reference for the crypto/hkdf calls in commit.go.
func hkdfRef(ikm, salt, info []byte, n int) []byte {
	ext := hmac.New(sha512.New, salt)
	ext.Write(ikm)
	prk := ext.Sum(nil)
	var out, prev []byte
	for i := byte(1); len(out) < n; i++ {
		h := hmac.New(sha512.New, prk)
		h.Write(prev)
		h.Write(info)
		h.Write([]byte{i})
		prev = h.Sum(nil)
		out = append(out, prev...)
	}
	return out[:n]
}

func TestCommitKeysReference(t *testing.T) {
	dk, id := testBytes(3, KeySize), testBytes(4, MessageIDSize)
	ck, commit, err := commitKeys(dk, id)
	if err != nil {
		t.Fatal(err)
	}
	if want := hkdfRef(dk, id, append([]byte{0x00, 0x73}, "COMMITKEY"...), 28); !bytes.Equal(commit, want) {
		t.Fatalf("commitment %x, want %x", commit, want)
	}
	if want := hkdfRef(dk, id, append([]byte{0x00, 0x73}, "DERIVEKEY"...), 32); !bytes.Equal(ck, want) {
		t.Fatalf("content key differs from the reference")
	}
	got, err := openCommitment(dk, id, commit)
	if err != nil || !bytes.Equal(got, ck) {
		t.Fatalf("openCommitment: %v", err)
	}
	if !bytes.Equal(CommitIV(), bytes.Repeat([]byte{1}, 12)) || !bytes.Equal(commitAAD(), []byte{0, 0x73}) {
		t.Fatal("suite constants")
	}
}

// TestOpenCommitmentRefuses: a different data key (key substitution), a
// changed message ID or commitment is ErrCommitment; wrong sizes ErrMalformed.
func TestOpenCommitmentRefuses(t *testing.T) {
	dk, id := testBytes(3, KeySize), testBytes(4, MessageIDSize)
	_, commit, err := commitKeys(dk, id)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	tests := []struct {
		name           string
		dk, id, commit []byte
		want           error
	}{
		{"other data key", testBytes(5, KeySize), id, commit, ErrCommitment},
		{"data key bit", flip(dk, 31), id, commit, ErrCommitment},
		{"message ID bit", dk, flip(id, 0), commit, ErrCommitment},
		{"commitment bit", dk, id, flip(commit, 27), ErrCommitment},
		{"commitment truncated", dk, id, commit[:27], ErrMalformed},
		{"commitment empty", dk, id, nil, ErrMalformed},
		{"message ID truncated", dk, id[:27], commit, ErrMalformed},
		{"16-byte data key", dk[:16], id, commit, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := openCommitment(tt.dk, tt.id, tt.commit)
			if !errors.Is(err, tt.want) || k != nil {
				t.Fatalf("got %x, %v; want %v", k, err, tt.want)
			}
		})
	}
}

func TestCommitmentPolicy(t *testing.T) {
	for _, tt := range []struct {
		in        string
		want      CommitmentPolicy
		writes    string
		readsV2   bool
		roundTrip bool
	}{
		{"forbid-encrypt-allow-decrypt", ForbidEncryptAllowDecrypt, CEKAlgGCM, true, true},
		{"REQUIRE_ENCRYPT_ALLOW_DECRYPT", RequireEncryptAllowDecrypt, CEKAlgGCMCommit, true, false},
		{"require-encrypt-require-decrypt", RequireEncryptRequireDecrypt, CEKAlgGCMCommit, false, true},
	} {
		p, err := ParseCommitmentPolicy(tt.in)
		if err != nil || p != tt.want {
			t.Fatalf("%s: %v, %v", tt.in, p, err)
		}
		if p.WriteCEKAlg() != tt.writes || p.AllowsRead(CEKAlgGCM) != tt.readsV2 || p.AllowsRead(CEKAlgCBC) != tt.readsV2 || !p.AllowsRead(CEKAlgGCMCommit) {
			t.Fatalf("%s: writes %s, reads V2 %v", p, p.WriteCEKAlg(), p.AllowsRead(CEKAlgGCM))
		}
		if tt.roundTrip && p.String() != tt.in {
			t.Fatalf("String() = %q", p)
		}
	}
	if _, err := ParseCommitmentPolicy("require"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown policy: %v", err)
	}
}

// TestKeyringV3Wraps: the keyring binds "115" into its wraps for V3 keys:
// the AES/GCM wrap's AAD and the RSA-OAEP pseudo key's suffix, so a V3 key
// cannot be presented as a V2 one or the reverse.
func TestKeyringV3Wraps(t *testing.T) {
	aes := MasterKey{Name: "a", AES: testBytes(8, 32)}
	rsaKey := MasterKey{Name: "r", RSA: testRSA(t)}
	for _, mk := range []MasterKey{aes, rsaKey} {
		kp, err := NewKeyringProvider([]MasterKey{mk}, mk.Name)
		if err != nil {
			t.Fatal(err)
		}
		key, w, err := kp.GenerateKey(t.Context(), KeyRequest{CEKAlg: CEKAlgGCMCommit})
		if err != nil {
			t.Fatal(err)
		}
		if w.CEKAlg != CEKAlgGCMCommit {
			t.Fatalf("CEKAlg %q", w.CEKAlg)
		}
		back, err := kp.DecryptKey(t.Context(), w)
		if err != nil || !bytes.Equal(back, key) {
			t.Fatalf("%s: unwrap: %v", w.WrapAlg, err)
		}
		w.CEKAlg = CEKAlgGCM
		if _, err := kp.DecryptKey(t.Context(), w); err == nil {
			t.Fatalf("%s: a V3 wrap unwrapped as V2", w.WrapAlg)
		}
	}
}

// v3Golden is one V3 object: its envelope as stored (metadata, and the
// instruction file when there is one), the body, and what it decrypts to.
type v3Golden struct {
	Description string            `json:"description"`
	Metadata    map[string]string `json:"metadata"`
	Instruction string            `json:"instruction,omitempty"`
	WrapAlg     string            `json:"wrap_alg"`
	MatDesc     map[string]string `json:"materials_description"`
	WrappedKey  string            `json:"wrapped_key_b64"`
	MessageID   string            `json:"message_id_b64"`
	Commitment  string            `json:"commitment_b64"`
	DataKey     string            `json:"data_key"`
	KEKAES      string            `json:"kek_aes_b64,omitempty"`
	KEKRSAFile  string            `json:"kek_rsa_pem_file,omitempty"`
	Ciphertext  string            `json:"ciphertext_b64"`
	Plaintext   string            `json:"plaintext_b64"`
}

// hkdfCommit derives the commitment and content key with hkdfRef only.
func hkdfCommit(dk, id []byte) (commit, ck []byte) {
	return hkdfRef(dk, id, append([]byte{0x00, 0x73}, "COMMITKEY"...), 28),
		hkdfRef(dk, id, append([]byte{0x00, 0x73}, "DERIVEKEY"...), 32)
}

// TestGenerateGoldenV3 writes the stdlib-only V3 vectors for the raw wraps,
// which no official Go client writes (v4.0.0 has only a KMS keyring):
//
//	go test ./cse/ -run TestGenerateGoldenV3 -args -update
//
// HKDF is hkdfRef (crypto/hmac), the AES/GCM wrap is a one-shot stdlib Seal
// with AAD "115" and the RSA-OAEP-SHA1 wrap stdlib OAEP of len||key||"115"
// (as the Java v4 AesKeyring and RsaKeyring do), the content a one-shot Seal
// under the derived key, IV 01×12, AAD 00 73. The v4-written vectors come
// from e2e/interop TestGenerateV4Golden.
func TestGenerateGoldenV3(t *testing.T) {
	if !*updateGolden {
		t.Skip("run with -update to write missing golden vectors")
	}
	dir := filepath.Join("testdata", "v3")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	plain := []byte("csefs V3 golden vector: key commitment binds the data key to the message ID.")
	for _, rsaWrap := range []bool{false, true} {
		dk := make([]byte, 32)
		id := make([]byte, MessageIDSize)
		_, _ = rand.Read(dk)
		_, _ = rand.Read(id)
		commit, ck := hkdfCommit(dk, id)
		md := map[string]string{KeyNameKey: "golden"}
		v := v3Golden{MatDesc: md, DataKey: b64.EncodeToString(dk), Plaintext: b64.EncodeToString(plain),
			MessageID: b64.EncodeToString(id), Commitment: b64.EncodeToString(commit)}
		var blob []byte
		file, code := "stdlib-aes-gcm.json", "02"
		if rsaWrap {
			file, code = "stdlib-rsa-oaep-sha1.json", "22"
			v.Description = "V3, RSA-OAEP-SHA1 wrap (pseudo key len||key||\"115\"), stdlib only"
			v.WrapAlg, v.KEKRSAFile = WrapRSAOAEPSHA1, "../rsa2048-test-key.pem"
			pseudo := append(append([]byte{32}, dk...), "115"...)
			var err error
			if blob, err = rsa.EncryptOAEP(sha1.New(), rand.Reader, &testRSA(t).PublicKey, pseudo, nil); err != nil {
				t.Fatal(err)
			}
		} else {
			v.Description = "V3, AES/GCM wrap (AAD \"115\"), stdlib only"
			kek := make([]byte, 32)
			_, _ = rand.Read(kek)
			v.WrapAlg, v.KEKAES = WrapAESGCM, b64.EncodeToString(kek)
			wiv := make([]byte, 12)
			_, _ = rand.Read(wiv)
			blob = append(wiv, stdGCM(t, kek).Seal(nil, wiv, dk, []byte("115"))...)
		}
		v.WrappedKey = b64.EncodeToString(blob)
		v.Ciphertext = b64.EncodeToString(stdGCM(t, ck).Seal(nil, bytes.Repeat([]byte{1}, 12), plain, []byte{0, 0x73}))
		mdJSON, _ := json.Marshal(md)
		v.Metadata = map[string]string{"x-amz-c": "115", "x-amz-3": v.WrappedKey, "x-amz-w": code,
			"x-amz-m": string(mdJSON), "x-amz-d": v.Commitment, "x-amz-i": v.MessageID}
		out, _ := json.MarshalIndent(v, "", "  ")
		writeNew(t, filepath.Join(dir, file), append(out, '\n'))
	}
}

// TestGoldenV3 opens every committed V3 vector: the commitment checks, the
// content key derived by this package decrypts the body to the plaintext,
// and, for the raw wraps, the keyring unwraps the stored key to the data key.
func TestGoldenV3(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "v3", "*.json"))
	if len(files) < 3 {
		t.Fatalf("found %d V3 golden vectors, want at least 3", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v v3Golden
			if err := json.Unmarshal(data, &v); err != nil {
				t.Fatal(err)
			}
			dec := func(s string) []byte {
				b, err := b64.DecodeString(s)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			dk, id, commit, ct, plain := dec(v.DataKey), dec(v.MessageID), dec(v.Commitment), dec(v.Ciphertext), dec(v.Plaintext)
			wantCommit, wantCK := hkdfCommit(dk, id)
			if !bytes.Equal(commit, wantCommit) {
				t.Fatal("stored commitment differs from the HKDF reference")
			}
			ck, err := openCommitment(dk, id, commit)
			if err != nil || !bytes.Equal(ck, wantCK) {
				t.Fatalf("openCommitment: %v", err)
			}
			r, err := newDecryptReader(bytes.NewReader(ct), ck, CEKAlgGCMCommit, CommitIV())
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("content: %v", err)
			}
			if _, err := openCommitment(testBytes(9, KeySize), id, commit); !errors.Is(err, ErrCommitment) {
				t.Fatalf("substituted key: %v", err)
			}
			if v.KEKAES == "" && v.KEKRSAFile == "" {
				return // a KMS wrap: checked against KMS in e2e/interop
			}
			mk := MasterKey{Name: "golden"}
			if v.KEKRSAFile != "" {
				pemData, err := os.ReadFile(filepath.Join("testdata", "v3", v.KEKRSAFile))
				if err != nil {
					t.Fatal(err)
				}
				if mk.RSA, err = parseRSAPrivateKey(pemData); err != nil {
					t.Fatal(err)
				}
			} else {
				mk.AES = dec(v.KEKAES)
			}
			kp, err := NewKeyringProvider([]MasterKey{mk}, "")
			if err != nil {
				t.Fatal(err)
			}
			got, err = kp.DecryptKey(t.Context(), WrappedKey{WrapAlg: v.WrapAlg, CEKAlg: CEKAlgGCMCommit, Blob: dec(v.WrappedKey), MatDesc: v.MatDesc})
			if err != nil || !bytes.Equal(got, dk) {
				t.Fatalf("keyring unwrap: %v", err)
			}
		})
	}
}
