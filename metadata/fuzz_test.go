package metadata

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/csefs/csefs/cse"
)

// metaFromBytes builds a metadata map from fuzz input: entries separated by
// '\n', key and value by the first '='.
func metaFromBytes(data []byte) map[string]string {
	m := map[string]string{}
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		k, v, _ := bytes.Cut(line, []byte{'='})
		m[string(k)] = string(v)
	}
	return m
}

func metaToBytes(m map[string]string) []byte {
	var b []byte
	for k, v := range m {
		if len(b) > 0 {
			b = append(b, '\n')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, v...)
	}
	return b
}

// normalized is e as Metadata writes it: x-amz-tag-len is always 128 for GCM.
func normalized(e *Envelope) *Envelope {
	n := *e
	if n.Key.CEKAlg == cse.CEKAlgGCM {
		n.TagLenBits = 128
	}
	return &n
}

func checkReencode(t *testing.T, e *Envelope) {
	t.Helper()
	want := normalized(e)
	got, err := Detect(e.Metadata())
	if err != nil {
		t.Fatalf("re-parse of Metadata %v: %v", e.Metadata(), err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Metadata round trip:\n got %+v\nwant %+v", got, want)
	}
	got, err = ParseInstructionWith(e.Instruction(), e.ObjectMetadata())
	if err != nil {
		t.Fatalf("re-parse of Instruction %s: %v", e.Instruction(), err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Instruction round trip:\n got %+v\nwant %+v", got, want)
	}
}

func FuzzDetect(f *testing.F) {
	f.Add(metaToBytes(go3Example()))
	f.Add(metaToBytes(cbcV2()))
	f.Add(metaToBytes(v1()))
	f.Add(metaToBytes(with(go3Example(), KeyMatDesc, doubleEncode(`{"dept":"Zürich-財務"}`))))
	f.Add(metaToBytes(with(go3Example(), "X-Amz-Iv", "AAAAAAAAAAAAAAAA")))
	f.Add(metaToBytes(with(go3Example(), KeyMatDesc, `{"a":"=?UTF-8?Q?=C3=BC?="}`)))
	f.Add([]byte("x-amz-c=1\nx-amz-d=2\nx-amz-i=3"))
	f.Add(metaToBytes(v3Example()))
	f.Add(metaToBytes(with(v3Example(), KeyV3WrapAlg, "02", KeyV3MatDesc, `{"keyname":"k1"}`)))
	f.Add(metaToBytes(with(v3Example(), KeyV3Context, doubleEncode(`{"aws:x-amz-cek-alg":"115","dept":"Zürich"}`))))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Detect(metaFromBytes(data))
		if err != nil {
			if e != nil {
				t.Fatal("envelope with error")
			}
			return
		}
		checkReencode(t, e)
		_, _ = e.PlainSize(int64(len(data)))
	})
}

func FuzzParseInstruction(f *testing.F) {
	f.Add(go1Instruction(`"128"`, `"1000"`))
	f.Add(go1Instruction(`128`, `1000`))
	f.Add(NewEnvelope(testIV16, cse.WrappedKey{WrapAlg: cse.WrapKMS, CEKAlg: cse.CEKAlgCBC, Blob: testBlob,
		MatDesc: map[string]string{"k": "Zürich"}}, 3).Instruction())
	f.Add([]byte(`{"x-amz-iv":"` + iv16B64 + `","x-amz-key":"` + blobB64 + `","x-amz-matdesc":"{\"a\":\"\\u00c3\\u00bc\"}"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := ParseInstruction(body)
		if err != nil {
			if e != nil {
				t.Fatal("envelope with error")
			}
			return
		}
		checkReencode(t, e)
	})
}

// FuzzParseInstructionV3 fuzzes the V3 split: an instruction file body and
// the object metadata whose x-amz-c, x-amz-d and x-amz-i complete it. Input
// is the body, a NUL byte, then the metadata as for FuzzDetect.
func FuzzParseInstructionV3(f *testing.F) {
	e, err := Detect(v3Example())
	if err != nil {
		f.Fatal(err)
	}
	join := func(body []byte, meta map[string]string) []byte {
		return append(append(body, 0), metaToBytes(meta)...)
	}
	f.Add(join(e.Instruction(), e.ObjectMetadata()))
	f.Add(join([]byte(`{"x-amz-3":"`+blobB64+`","x-amz-w":"22","x-amz-m":"{}"}`), e.ObjectMetadata()))
	f.Add(join([]byte(`{"x-amz-3":"`+blobB64+`","x-amz-w":"12","x-amz-t":"{\"aws:x-amz-cek-alg\":\"115\"}","x-amz-c":"115"}`), e.ObjectMetadata()))
	f.Add(join(e.Instruction(), with(e.ObjectMetadata(), KeyV3Commitment, "AAAA")))
	f.Fuzz(func(t *testing.T, data []byte) {
		body, meta, _ := bytes.Cut(data, []byte{0})
		e, err := ParseInstructionWith(body, metaFromBytes(meta))
		if err != nil {
			if e != nil {
				t.Fatal("envelope with error")
			}
			return
		}
		checkReencode(t, e)
	})
}
