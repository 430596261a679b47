package metadata

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"testing"

	"github.com/csefs/csefs/cse"
)

// go1Instruction is the §6 observed GO1 body, with valid IV/key values.
func go1Instruction(tagLen, plainLen string) []byte {
	return []byte(`{"x-amz-iv":"` + iv12B64 + `","x-amz-key-v2":"` + blobB64 +
		`","x-amz-matdesc":"{\"JobflowId\":\"j-TEST\",\"aws:x-amz-cek-alg\":\"AES/GCM/NoPadding\"}","x-amz-wrap-alg":"kms+context",` +
		`"x-amz-cek-alg":"AES/GCM/NoPadding","x-amz-tag-len":` + tagLen + `,"x-amz-unencrypted-content-length":` + plainLen + `}`)
}

func TestParseInstructionGO1(t *testing.T) {
	want := &Envelope{
		Version: 2, IV: testIV12, TagLenBits: 128, PlainLen: 1000,
		Key: cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCM, Blob: testBlob,
			MatDesc: map[string]string{"JobflowId": "j-TEST", cse.ReservedCEKAlgKey: cse.CEKAlgGCM}},
	}
	for _, tc := range []struct{ name, tag, plain string }{
		{"strings", `"128"`, `"1000"`},
		{"numbers", `128`, `1000`},
		{"mixed", ` 128 `, `"1000"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseInstruction(go1Instruction(tc.tag, tc.plain))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(e, want) {
				t.Fatalf("got %+v\nwant %+v", e, want)
			}
			e2, err := ParseInstruction(e.Instruction())
			if err != nil || !reflect.DeepEqual(e2, want) {
				t.Fatalf("round trip: %+v, %v", e2, err)
			}
		})
	}
}

func TestParseInstructionErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		err  error
	}{
		{"not json", `{`, ErrMalformed},
		{"null", `null`, ErrMalformed},
		{"array", `[]`, ErrMalformed},
		{"empty object", `{}`, ErrNoEnvelope},
		{"unrelated members", `{"a":1,"b":[true]}`, ErrNoEnvelope},
		{"iv as number", string(go1Instruction(`128`, `1000`)[:0]) + `{"x-amz-iv":1234,"x-amz-key-v2":"` + blobB64 + `"}`, ErrMalformed},
		{"tag-len bool", string(go1Instruction(`true`, `1`)), ErrMalformed},
		{"tag-len 96", string(go1Instruction(`96`, `1`)), ErrMalformed},
		{"tag-len float", string(go1Instruction(`128.0`, `1`)), ErrMalformed},
		{"length negative", string(go1Instruction(`128`, `-1`)), ErrMalformed},
		{"length exponent", string(go1Instruction(`128`, `1e3`)), ErrMalformed},
		{"length null", string(go1Instruction(`128`, `null`)), ErrMalformed},
		{"matdesc object not string", `{"x-amz-iv":"` + iv12B64 + `","x-amz-key-v2":"` + blobB64 +
			`","x-amz-wrap-alg":"kms","x-amz-cek-alg":"AES/GCM/NoPadding","x-amz-matdesc":{"a":"b"}}`, ErrMalformed},
		{"conflict", `{"x-amz-iv":"` + iv16B64 + `","x-amz-key":"` + blobB64 + `","X-Amz-Key-V2":"` + blobB64 + `"}`, ErrKeyConflict},
		{"v3 object keys in the file", `{"x-amz-c":"a","x-amz-d":"b","x-amz-i":"c","x-amz-3":"d"}`, ErrMalformed},
		{"v3 without object keys", `{"x-amz-3":"` + blobB64 + `","x-amz-w":"12","x-amz-t":"{}"}`, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseInstruction([]byte(tt.body))
			if !errors.Is(err, tt.err) || e != nil {
				t.Fatalf("got %v, %v; want %v", e, err, tt.err)
			}
		})
	}
}

// Instruction files are not S3 headers: a MIME word in them is data.
func TestParseInstructionNoS3Decoding(t *testing.T) {
	e := NewEnvelope(testIV12, cse.WrappedKey{WrapAlg: cse.WrapKMS, CEKAlg: cse.CEKAlgGCM, Blob: testBlob}, -1)
	m := e.Metadata()
	word := doubleEncode(`{"dept":"Zürich"}`)
	m[KeyMatDesc] = `{"w":"` + word + `"}`
	body := []byte(`{`)
	for k, v := range m {
		if len(body) > 1 {
			body = append(body, ',')
		}
		body = append(body, []byte(`"`+k+`":`+quote(v))...)
	}
	body = append(body, '}')
	got, err := ParseInstruction(body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key.MatDesc["w"] != word {
		t.Fatalf("matdesc %q", got.Key.MatDesc)
	}
}

func quote(s string) string {
	b, _ := jsonMarshal(s)
	return string(b)
}

func TestInstructionNames(t *testing.T) {
	if got := InstructionKey("a/b.txt"); got != "a/b.txt.instruction" {
		t.Fatal(got)
	}
	for key, want := range map[string]bool{
		"a/b.txt.instruction": true, ".instruction": true, "a/b.txt": false,
		"a/b.instructions": false, "a/instruction": false,
	} {
		if IsInstructionKey(key) != want {
			t.Errorf("IsInstructionKey(%q) != %v", key, want)
		}
	}
	m := InstructionMetadata()
	if !maps.Equal(m, map[string]string{"x-amz-crypto-instr-file": ""}) {
		t.Fatal(m)
	}
	m["x"] = "y"
	if len(InstructionMetadata()) != 1 {
		t.Fatal("InstructionMetadata shares its map")
	}
	// The instruction object itself holds no envelope.
	if _, err := Detect(InstructionMetadata()); !errors.Is(err, ErrNoEnvelope) {
		t.Fatal(err)
	}
}

var jsonMarshal = func(v any) ([]byte, error) { return json.Marshal(v) }
