package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// envelopeKeys are the logical keys an instruction file may carry. Any other
// member of the JSON object is ignored.
var envelopeKeys = []string{
	KeyV2, KeyV1, KeyIV, KeyCEKAlg, KeyWrapAlg, KeyMatDesc, KeyTagLen, KeyPlainLen,
	KeyV3CEKAlg, KeyV3Key, KeyV3WrapAlg, KeyV3Commitment, KeyV3MessageID, KeyV3Context, KeyV3MatDesc,
}

// InstructionKey names the instruction file of the object key (s3ec-format.md
// §6): key + ".instruction".
func InstructionKey(key string) string { return key + InstructionSuffix }

// IsInstructionKey reports whether key names an instruction file. EMRFS hides
// such keys from listings; so should csefs.
func IsInstructionKey(key string) bool { return strings.HasSuffix(key, InstructionSuffix) }

// InstructionMetadata is the user metadata to store on the instruction object
// itself ({x-amz-crypto-instr-file: ""}, as JV1 and J3 write it).
func InstructionMetadata() map[string]string { return map[string]string{KeyInstrMarker: ""} }

// ParseInstruction decodes an instruction file body: a JSON object with the
// logical keys of §2, compared case-insensitively. Values are JSON strings,
// except that x-amz-tag-len and x-amz-unencrypted-content-length may also be
// JSON numbers (GO1, aws-sdk-go #3422/#3427). x-amz-matdesc is a string that
// holds JSON. S3's double encoding does not apply (DecodeValue is not used).
// Detection and field rules are Detect's; an object with no key entries gives
// ErrNoEnvelope. Errors wrap ErrMalformed, ErrKeyConflict or ErrNoEnvelope.
//
// A V3 instruction file holds only part of the envelope; see
// ParseInstructionWith.
func ParseInstruction(body []byte) (*Envelope, error) { return ParseInstructionWith(body, nil) }

// ParseInstructionWith is ParseInstruction for the object whose user
// metadata is objectMeta. When the body is a V3 instruction file (it has
// x-amz-3), the object-side keys x-amz-c, x-amz-d and x-amz-i are taken from
// objectMeta (spec data-format/metadata-strategy.md "V3 instruction files");
// the body must not carry them itself (ErrMalformed). An object with those
// keys whose instruction file is not V3 is ErrMalformed too, so a V1 or V2
// instruction file cannot strip an object of its key commitment. Other
// formats ignore objectMeta.
func ParseInstructionWith(body []byte, objectMeta map[string]string) (*Envelope, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("%w: instruction file: not a JSON object: %v", ErrMalformed, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: instruction file: not a JSON object", ErrMalformed)
	}
	vals := make(map[string]string, len(raw))
	for k, v := range raw {
		logical := ""
		for _, ek := range envelopeKeys {
			if asciiEqualFold(k, ek) {
				logical = ek
				break
			}
		}
		if logical == "" {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case len(v) > 0 && v[0] == '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("%w: instruction file: %s: %v", ErrMalformed, logical, err)
			}
			vals[k] = s
		case len(v) > 0 && (v[0] == '-' || '0' <= v[0] && v[0] <= '9') &&
			(logical == KeyTagLen || logical == KeyPlainLen):
			// A JSON number; parse() requires a decimal integer.
			vals[k] = string(v)
		default:
			return nil, fmt.Errorf("%w: instruction file: %s: want a JSON string", ErrMalformed, logical)
		}
	}
	_, v3Body := Lookup(vals, KeyV3Key)
	if !v3Body && ClaimsInstruction(objectMeta) {
		// The object carries V3's commitment keys: its instruction file
		// must be V3 too. A V1 or V2 file here would read the body under a
		// key that nothing commits to (a downgrade of the commitment).
		return nil, fmt.Errorf("%w: instruction file of a V3 object (it has %s) without %s", ErrMalformed, KeyV3Commitment, KeyV3Key)
	}
	if v3Body {
		for _, k := range v3ObjectKeys {
			if _, in := Lookup(vals, k); in {
				return nil, fmt.Errorf("%w: instruction file: %s belongs in the object's metadata", ErrMalformed, k)
			}
			if v, on := Lookup(objectMeta, k); on {
				vals[k] = v
			}
		}
	}
	return parse(func(k string) (string, bool) { return Lookup(vals, k) }, false)
}

// Instruction returns the instruction-file body for e: a JSON object of the
// Metadata entries, all string values, as GO1 writes it (keys sorted). For
// V3 it leaves out what ObjectMetadata returns, which the object keeps.
func (e *Envelope) Instruction() []byte {
	m := e.Metadata()
	if e.Version == 3 {
		m = e.v3Instruction()
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic("metadata: internal error: marshal instruction: " + err.Error())
	}
	return b
}
