package metadata

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/csefs/csefs/cse"
)

var (
	testMsgID  = bytes.Repeat([]byte{0x17}, cse.MessageIDSize)
	testCommit = bytes.Repeat([]byte{0x2c}, cse.CommitmentSize)
)

// v3Example is a V3 kms+context envelope as the Go v4 client writes it into
// object metadata (canonical header case, x-amz-m and the plaintext length
// written empty).
func v3Example() map[string]string {
	return map[string]string{
		"X-Amz-C":                          "115",
		"X-Amz-3":                          blobB64,
		"X-Amz-W":                          "12",
		"X-Amz-D":                          b64(testCommit),
		"X-Amz-I":                          b64(testMsgID),
		"X-Amz-T":                          `{"aws:x-amz-cek-alg":"115","dept":"x"}`,
		"X-Amz-M":                          "",
		"X-Amz-Unencrypted-Content-Length": "",
	}
}

func TestDetectV3(t *testing.T) {
	e, err := Detect(v3Example())
	if err != nil {
		t.Fatal(err)
	}
	want := &Envelope{Version: 3, IV: cse.CommitIV(), PlainLen: -1, MessageID: testMsgID, Commitment: testCommit,
		Key: cse.WrappedKey{WrapAlg: cse.WrapKMSContext, CEKAlg: cse.CEKAlgGCMCommit, Blob: testBlob,
			MatDesc: map[string]string{cse.ReservedCEKAlgKey: "115", "dept": "x"}}}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("got %+v\nwant %+v", e, want)
	}
	if n, ok := e.PlainSize(100); !ok || n != 84 {
		t.Fatalf("PlainSize(100) = %d, %v", n, ok)
	}
	for code, wrap := range map[string]string{"02": cse.WrapAESGCM, "22": cse.WrapRSAOAEPSHA1} {
		e, err := Detect(with(v3Example(), "X-Amz-W", code, "X-Amz-M", doubleEncode(`{"keyname":"Zürich"}`)))
		if err != nil {
			t.Fatal(err)
		}
		if e.Key.WrapAlg != wrap || !reflect.DeepEqual(e.Key.MatDesc, map[string]string{"keyname": "Zürich"}) {
			t.Fatalf("wrap code %s: got %q %v", code, e.Key.WrapAlg, e.Key.MatDesc)
		}
	}
}

// TestDetectV3Bad: every changed or missing V3 field is ErrMalformed (an
// unknown suite, an unknown wrap code, a truncated commitment or message ID,
// bad base64); mixing versions is ErrKeyConflict.
func TestDetectV3Bad(t *testing.T) {
	tests := []struct {
		name string
		meta map[string]string
		err  error
	}{
		{"suite 114", with(v3Example(), "X-Amz-C", "114"), ErrMalformed},
		{"suite v2 name", with(v3Example(), "X-Amz-C", cse.CEKAlgGCM), ErrMalformed},
		{"no suite", without(v3Example(), "X-Amz-C"), ErrMalformed},
		{"wrap 03", with(v3Example(), "X-Amz-W", "03"), ErrMalformed},
		{"wrap v2 name", with(v3Example(), "X-Amz-W", cse.WrapKMSContext), ErrMalformed},
		{"no wrap", without(v3Example(), "X-Amz-W"), ErrMalformed},
		{"commitment truncated", with(v3Example(), "X-Amz-D", b64(testCommit[:27])), ErrMalformed},
		{"commitment long", with(v3Example(), "X-Amz-D", b64(append(testCommit, 0))), ErrMalformed},
		{"commitment base64", with(v3Example(), "X-Amz-D", "!!"), ErrMalformed},
		{"message ID truncated", with(v3Example(), "X-Amz-I", b64(testMsgID[:12])), ErrMalformed},
		{"key empty", with(v3Example(), "X-Amz-3", ""), ErrMalformed},
		{"key base64", with(v3Example(), "X-Amz-3", "*"), ErrMalformed},
		{"context not JSON", with(v3Example(), "X-Amz-T", "{"), ErrMalformed},
		{"length negative", with(v3Example(), "X-Amz-Unencrypted-Content-Length", "-1"), ErrMalformed},
		{"with key-v2", with(v3Example(), KeyV2, blobB64), ErrKeyConflict},
		{"with key", with(v3Example(), KeyV1, blobB64), ErrKeyConflict},
		{"no commitment: instruction file", without(v3Example(), "X-Amz-D"), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Detect(tt.meta)
			if !errors.Is(err, tt.err) || e != nil {
				t.Fatalf("got %v, %v; want %v", e, err, tt.err)
			}
		})
	}
}

// TestV3InstructionSplit: a V3 envelope in instruction-file mode keeps
// x-amz-c, x-amz-d and x-amz-i on the object and the rest in the file, and
// the two halves parse back to the envelope.
func TestV3InstructionSplit(t *testing.T) {
	e, err := NewEnvelopeV3(testMsgID, testCommit, cse.WrappedKey{WrapAlg: cse.WrapAESGCM, CEKAlg: cse.CEKAlgGCMCommit,
		Blob: testBlob, MatDesc: map[string]string{"keyname": "k"}})
	if err != nil {
		t.Fatal(err)
	}
	obj := e.ObjectMetadata()
	if want := []string{KeyV3CEKAlg, KeyV3Commitment, KeyV3MessageID}; len(obj) != 3 || !hasKeys(obj, want) {
		t.Fatalf("object metadata %v, want keys %v", obj, want)
	}
	if !ClaimsInstruction(obj) {
		t.Fatal("object half does not claim an instruction file")
	}
	if _, err := Detect(obj); !errors.Is(err, ErrNoEnvelope) {
		t.Fatalf("Detect(object half) = %v, want ErrNoEnvelope", err)
	}
	var file map[string]string
	if err := json.Unmarshal(e.Instruction(), &file); err != nil {
		t.Fatal(err)
	}
	if want := []string{KeyV3Key, KeyV3WrapAlg, KeyV3MatDesc}; len(file) != 3 || !hasKeys(file, want) {
		t.Fatalf("instruction file %v, want keys %v", file, want)
	}
	got, err := ParseInstructionWith(e.Instruction(), obj)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("got %+v\nwant %+v", got, e)
	}
	if _, err := ParseInstruction(e.Instruction()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("instruction half alone: %v, want ErrMalformed", err)
	}
	// The whole envelope in object metadata parses too.
	if got, err := Detect(e.Metadata()); err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("Detect(Metadata()) = %+v, %v", got, err)
	}
	if ClaimsInstruction(e.Metadata()) {
		t.Fatal("a full V3 envelope claims an instruction file")
	}
}

func TestNewEnvelopeV3Refuses(t *testing.T) {
	w := cse.WrappedKey{WrapAlg: cse.WrapKMS, CEKAlg: cse.CEKAlgGCMCommit, Blob: testBlob}
	if _, err := NewEnvelopeV3(testMsgID, testCommit, w); !errors.Is(err, cse.ErrUnsupported) {
		t.Fatalf("legacy kms wrap in V3: %v", err)
	}
	w.WrapAlg, w.CEKAlg = cse.WrapKMSContext, cse.CEKAlgGCM
	if _, err := NewEnvelopeV3(testMsgID, testCommit, w); !errors.Is(err, ErrMalformed) {
		t.Fatalf("V2 suite in V3: %v", err)
	}
}

func hasKeys(m map[string]string, keys []string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

// v4Vector is the part of cse/testdata/v3/*.json this package reads: the
// envelope as an official client stored it.
type v4Vector struct {
	Metadata    map[string]string `json:"metadata"`
	Instruction string            `json:"instruction"`
	DataKey     string            `json:"data_key"`
}

// TestDetectV3Golden parses the envelopes of the committed V3 golden vectors
// (written by the Go v4 client and by stdlib code, see cse/v3_test.go).
func TestDetectV3Golden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "cse", "testdata", "v3", "*.json"))
	if len(files) == 0 {
		t.Fatal("no V3 golden vectors")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var v v4Vector
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatal(err)
			}
			var e *Envelope
			if v.Instruction != "" {
				e, err = ParseInstructionWith([]byte(v.Instruction), v.Metadata)
			} else {
				e, err = Detect(v.Metadata)
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Version != 3 || e.Key.CEKAlg != cse.CEKAlgGCMCommit {
				t.Fatalf("got version %d suite %q", e.Version, e.Key.CEKAlg)
			}
			// What csefs would write for it parses back the same.
			back, err := Detect(maps.Clone(e.Metadata()))
			if err != nil || !reflect.DeepEqual(back, e) {
				t.Fatalf("re-encoded: %+v, %v", back, err)
			}
		})
	}
}

// A V3 object (x-amz-c, x-amz-d, x-amz-i on the object) whose instruction
// file has been replaced by a V1 or V2 one is malformed: otherwise the body
// would be decrypted under a data key that nothing commits to.
func TestV3InstructionDowngrade(t *testing.T) {
	e, err := NewEnvelopeV3(testMsgID, testCommit, cse.WrappedKey{WrapAlg: cse.WrapAESGCM, CEKAlg: cse.CEKAlgGCMCommit,
		Blob: testBlob, MatDesc: map[string]string{"keyname": "k"}})
	if err != nil {
		t.Fatal(err)
	}
	obj := e.ObjectMetadata()
	v2 := NewEnvelope(bytes.Repeat([]byte{1}, cse.GCMIVSize), cse.WrappedKey{WrapAlg: cse.WrapAESGCM, CEKAlg: cse.CEKAlgGCM,
		Blob: testBlob, MatDesc: map[string]string{"keyname": "k"}}, -1)
	if _, err := ParseInstruction(v2.Instruction()); err != nil {
		t.Fatalf("the V2 file alone: %v", err)
	}
	if got, err := ParseInstructionWith(v2.Instruction(), obj); !errors.Is(err, ErrMalformed) {
		t.Fatalf("V2 instruction file of a V3 object: %+v, %v, want ErrMalformed", got, err)
	}
	// A V2 object's own instruction file is unaffected by csefs' attributes.
	if _, err := ParseInstructionWith(v2.Instruction(), map[string]string{"csefs-mode": "644"}); err != nil {
		t.Fatal(err)
	}
}
