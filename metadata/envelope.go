// Package metadata reads and writes what csefs stores about an object besides
// its body: the S3 Encryption Client envelope (object metadata or an
// instruction file). It does no I/O and holds no keys.
package metadata

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/csefs/csefs/cse"
)

// Logical metadata keys (without the x-amz-meta- prefix S3 adds on the wire).
const (
	KeyV2          = "x-amz-key-v2"
	KeyV1          = "x-amz-key"
	KeyIV          = "x-amz-iv"
	KeyCEKAlg      = "x-amz-cek-alg"
	KeyWrapAlg     = "x-amz-wrap-alg"
	KeyMatDesc     = "x-amz-matdesc"
	KeyTagLen      = "x-amz-tag-len"
	KeyPlainLen    = "x-amz-unencrypted-content-length"
	KeyInstrMarker = "x-amz-crypto-instr-file"

	// V3 (key-committing, suite 115) keys, compressed (s3ec-format.md §13,
	// spec data-format/content-metadata.md). With an instruction file the
	// object keeps x-amz-c, x-amz-d and x-amz-i, and the file holds the rest.
	KeyV3CEKAlg     = "x-amz-c" // content suite: "115"
	KeyV3Key        = "x-amz-3" // the wrapped data key, base64
	KeyV3WrapAlg    = "x-amz-w" // wrap code: "02", "12", "22"
	KeyV3Commitment = "x-amz-d" // key commitment, base64, 28 bytes
	KeyV3MessageID  = "x-amz-i" // message ID (HKDF salt), base64, 28 bytes
	KeyV3Context    = "x-amz-t" // KMS encryption context (JSON), for "12"
	KeyV3MatDesc    = "x-amz-m" // materials description (JSON), for "02", "22"

	// InstructionSuffix names an object's instruction file: key + suffix.
	InstructionSuffix = ".instruction"
	// MaxUserMetadata is S3's limit on user metadata (keys plus values).
	MaxUserMetadata = 2048
)

// Sentinel errors.
var (
	// ErrNoEnvelope: the metadata holds no V1/V2/V3 envelope. The caller
	// should look for an instruction file; without one the object is plaintext.
	ErrNoEnvelope = errors.New("metadata: no encryption envelope")
	// ErrMalformed: an envelope is present but cannot be parsed (bad base64,
	// bad JSON, a missing or invalid field).
	ErrMalformed = errors.New("metadata: malformed envelope")
	// ErrKeyConflict: more than one of x-amz-key, x-amz-key-v2 and x-amz-3
	// is present.
	ErrKeyConflict = errors.New("metadata: more than one of x-amz-key, x-amz-key-v2, x-amz-3 present")
	// ErrTooLarge: the metadata exceeds MaxUserMetadata; use an instruction file.
	ErrTooLarge = errors.New("metadata: user metadata exceeds 2 KB")
	// ErrNoInstructionFile: an instruction file was expected and is missing.
	ErrNoInstructionFile = errors.New("metadata: instruction file missing")
)

// Envelope is the decoded S3EC envelope of one object.
type Envelope struct {
	Version int // 1 (x-amz-key), 2 (x-amz-key-v2) or 3 (x-amz-3)
	// IV is the content IV: x-amz-iv for V1 and V2; for V3, which stores no
	// IV, the suite's fixed cse.CommitIV().
	IV []byte
	// Key is the wrapped data key with its algorithms and description.
	// Key.CEKAlg is cse.CEKAlgCBC for V1 objects, which have no x-amz-cek-alg.
	Key cse.WrappedKey
	// TagLenBits is x-amz-tag-len, 0 when absent. It is read for GCM only
	// (and must then be 128); for CBC it is ignored and always 0 (§11.1).
	TagLenBits int
	// PlainLen is x-amz-unencrypted-content-length, -1 when absent.
	PlainLen int64
	// MessageID (x-amz-i) and Commitment (x-amz-d) are set for V3 only:
	// cse.Params.ContentKey turns the data key into the content key with them.
	MessageID  []byte
	Commitment []byte
}

// v3Wraps maps the V3 wrap codes (x-amz-w) to the wrap algorithms.
var v3Wraps = map[string]string{
	"02": cse.WrapAESGCM,
	"12": cse.WrapKMSContext,
	"22": cse.WrapRSAOAEPSHA1,
}

// v3WrapCode is the inverse of v3Wraps; "" for a wrap V3 cannot store.
func v3WrapCode(wrap string) string {
	for c, w := range v3Wraps {
		if w == wrap {
			return c
		}
	}
	return ""
}

// v3ObjectKeys are the V3 keys that always live in the object's metadata.
var v3ObjectKeys = []string{KeyV3CEKAlg, KeyV3Commitment, KeyV3MessageID}

// ClaimsInstruction reports whether an object's metadata says its envelope
// is (partly) in an instruction file: it holds V3's object-side keys
// (x-amz-c, x-amz-d or x-amz-i) but no x-amz-3. Such an object without its
// instruction file is unreadable, never plaintext.
func ClaimsInstruction(meta map[string]string) bool {
	if _, ok := Lookup(meta, KeyV3Key); ok {
		return false
	}
	for _, k := range v3ObjectKeys {
		if _, ok := Lookup(meta, k); ok {
			return true
		}
	}
	return false
}

// Lookup returns the value of the logical metadata key, compared
// case-insensitively (ASCII only) because S3 lowercases user-metadata keys
// while GO3 writes them in canonical header case. An exact match wins; among
// several keys that differ only in case the lexically smallest wins, so the
// result never depends on map iteration order.
func Lookup(meta map[string]string, key string) (string, bool) {
	if v, ok := meta[key]; ok {
		return v, true
	}
	var bestKey, bestVal string
	found := false
	for k, v := range meta {
		if asciiEqualFold(k, key) && (!found || k < bestKey) {
			bestKey, bestVal, found = k, v, true
		}
	}
	return bestVal, found
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// Detect decodes the S3EC envelope held in an object's user metadata (keys
// without the x-amz-meta- prefix, in any case), following s3ec-format.md §1:
//
//   - more than one of x-amz-key, x-amz-key-v2, x-amz-3: ErrKeyConflict.
//   - x-amz-iv plus x-amz-key-v2: V2; plus x-amz-key: V1 (Key.WrapAlg is
//     cse.WrapV1, any x-amz-wrap-alg is ignored). A V3 key (x-amz-c, x-amz-d,
//     x-amz-i) beside them: ErrMalformed.
//   - x-amz-3: V3 (see parseV3); x-amz-c, x-amz-d and x-amz-i without
//     x-amz-3: ErrNoEnvelope, the rest is in the instruction file
//     (ClaimsInstruction, ParseInstructionWith).
//   - x-amz-key or x-amz-key-v2 without x-amz-iv: ErrMalformed. (J3 would look
//     for an instruction file; refusing is safer than serving ciphertext as
//     plaintext when that file is missing.)
//   - otherwise ErrNoEnvelope: look for the instruction file.
//
// Field rules: base64 is StdEncoding with padding; an absent or empty
// x-amz-cek-alg means cse.CEKAlgCBC (JV1, J3); the IV must be 12 bytes for
// GCM and 16 for CBC; x-amz-tag-len, when present and non-empty on a GCM
// object, must be 128 (it is ignored for CBC, §11.1); x-amz-wrap-alg is
// required for V2 and must be printable ASCII, but its value is not checked
// here (cse reports unknown wrap algorithms as cse.ErrUnsupported); x-amz-unencrypted-content-length must be
// a non-negative decimal when non-empty; x-amz-matdesc, after DecodeValue, must
// be a JSON object of strings, and an absent or empty value means {}.
//
// Every parse failure wraps ErrMalformed and names the field, never its bytes.
func Detect(meta map[string]string) (*Envelope, error) {
	return parse(func(k string) (string, bool) { return Lookup(meta, k) }, true)
}

// NewEnvelopeV3 builds a V3 envelope for a writer: w.CEKAlg must be
// cse.CEKAlgGCMCommit and w.WrapAlg one of the wraps V3 can name (AES/GCM,
// kms+context, RSA-OAEP-SHA1). messageID and commitment come from
// cse.NewParams; none are copied.
func NewEnvelopeV3(messageID, commitment []byte, w cse.WrappedKey) (*Envelope, error) {
	if w.CEKAlg != cse.CEKAlgGCMCommit {
		return nil, fmt.Errorf("%w: V3 envelope for content algorithm %q", ErrMalformed, w.CEKAlg)
	}
	if v3WrapCode(w.WrapAlg) == "" {
		return nil, fmt.Errorf("%w: the V3 format cannot store wrap algorithm %q", cse.ErrUnsupported, w.WrapAlg)
	}
	return &Envelope{Version: 3, IV: cse.CommitIV(), Key: w, PlainLen: -1, MessageID: messageID, Commitment: commitment}, nil
}

// NewEnvelope builds a V2 envelope for a writer. TagLenBits is 128 for GCM
// and 0 otherwise; plainLen < 0 means unknown. iv and w are not copied.
func NewEnvelope(iv []byte, w cse.WrappedKey, plainLen int64) *Envelope {
	e := &Envelope{Version: 2, IV: iv, Key: w, PlainLen: plainLen}
	if w.CEKAlg == cse.CEKAlgGCM {
		e.TagLenBits = 128
	}
	if plainLen < 0 {
		e.PlainLen = -1
	}
	return e
}

// NewEnvelopeFor builds the envelope of a new object from its content
// parameters (cse.NewParams) and its wrapped data key: V3 for
// cse.CEKAlgGCMCommit, else V2 with an unknown plaintext length.
func NewEnvelopeFor(p cse.Params, w cse.WrappedKey) (*Envelope, error) {
	if w.CEKAlg != p.CEKAlg {
		return nil, fmt.Errorf("%w: data key for %q, content %q", ErrMalformed, w.CEKAlg, p.CEKAlg)
	}
	if p.CEKAlg == cse.CEKAlgGCMCommit {
		return NewEnvelopeV3(p.MessageID, p.Commitment, w)
	}
	return NewEnvelope(p.IV, w, -1), nil
}

// Params returns the content parameters the envelope stores.
func (e *Envelope) Params() cse.Params {
	return cse.Params{CEKAlg: e.Key.CEKAlg, IV: e.IV, MessageID: e.MessageID, Commitment: e.Commitment}
}

// Content returns the encrypted body of an object of cipherSize stored
// bytes that this envelope describes (see cse.Content).
func (e *Envelope) Content(cipherSize int64) (cse.Content, error) {
	return e.Params().Content(cipherSize, e.PlainLen)
}

func parse(get func(string) (string, bool), s3Decode bool) (*Envelope, error) {
	ivStr, hasIV := get(KeyIV)
	v1Str, hasV1 := get(KeyV1)
	v2Str, hasV2 := get(KeyV2)
	_, hasV3 := get(KeyV3Key)
	if n := btoi(hasV1) + btoi(hasV2) + btoi(hasV3); n > 1 {
		return nil, ErrKeyConflict
	}
	if hasV3 {
		return parseV3(get, s3Decode)
	}
	for _, k := range v3ObjectKeys {
		if _, ok := get(k); ok && (hasV1 || hasV2) {
			return nil, fmt.Errorf("%w: V3 key %s beside a V1/V2 envelope", ErrMalformed, k)
		}
	}
	if !hasV1 && !hasV2 || !hasIV {
		if hasV1 || hasV2 {
			return nil, fmt.Errorf("%w: %s missing", ErrMalformed, KeyIV)
		}
		return nil, ErrNoEnvelope
	}

	e := &Envelope{Version: 2, PlainLen: -1}
	keyName, keyStr := KeyV2, v2Str
	if hasV1 {
		e.Version, keyName, keyStr = 1, KeyV1, v1Str
	}
	blob, err := base64.StdEncoding.DecodeString(keyStr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: bad base64: %v", ErrMalformed, keyName, err)
	}
	if len(blob) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrMalformed, keyName)
	}
	e.Key.Blob = blob

	if e.Version == 2 {
		wrap, _ := get(KeyWrapAlg)
		if wrap == "" {
			return nil, fmt.Errorf("%w: %s missing", ErrMalformed, KeyWrapAlg)
		}
		for i := 0; i < len(wrap); i++ {
			if wrap[i] < 0x20 || wrap[i] > 0x7E {
				return nil, fmt.Errorf("%w: %s: not printable ASCII", ErrMalformed, KeyWrapAlg)
			}
		}
		e.Key.WrapAlg = wrap
	} else {
		e.Key.WrapAlg = cse.WrapV1
	}

	ivSize := cse.CBCIVSize
	switch alg, _ := get(KeyCEKAlg); alg {
	case "", cse.CEKAlgCBC:
		e.Key.CEKAlg = cse.CEKAlgCBC
	case cse.CEKAlgGCM:
		e.Key.CEKAlg = cse.CEKAlgGCM
		ivSize = cse.GCMIVSize
	default:
		return nil, fmt.Errorf("%w: %s: unknown algorithm %.64q", ErrMalformed, KeyCEKAlg, alg)
	}

	iv, err := base64.StdEncoding.DecodeString(ivStr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: bad base64: %v", ErrMalformed, KeyIV, err)
	}
	if len(iv) != ivSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, want %d for %s", ErrMalformed, KeyIV, len(iv), ivSize, e.Key.CEKAlg)
	}
	e.IV = iv

	if tl, ok := get(KeyTagLen); ok && tl != "" && e.Key.CEKAlg == cse.CEKAlgGCM {
		n, err := strconv.ParseInt(tl, 10, 32)
		if err != nil || n != 128 {
			return nil, fmt.Errorf("%w: %s: %.16q, want 128", ErrMalformed, KeyTagLen, tl)
		}
		e.TagLenBits = int(n)
	}

	if pl, ok := get(KeyPlainLen); ok && pl != "" {
		n, err := strconv.ParseInt(pl, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: %s: %.32q is not a non-negative integer", ErrMalformed, KeyPlainLen, pl)
		}
		e.PlainLen = n
	}

	md, _ := get(KeyMatDesc)
	if s3Decode {
		md = DecodeValue(md)
	}
	e.Key.MatDesc, err = parseMatDesc(md)
	if err != nil {
		return nil, err
	}
	return e, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parseV3 decodes a V3 envelope (s3ec-format.md §13). Every key must be
// present (an instruction file's are merged with the object's by the
// caller): x-amz-c must be "115" (the only V3 suite); x-amz-3 non-empty
// base64; x-amz-w one of "02", "12", "22"; x-amz-d and x-amz-i base64 of 28
// bytes each. The materials description is x-amz-t for kms+context ("12")
// and x-amz-m for the raw wraps, each a JSON object of strings after
// DecodeValue, {} when absent or empty. x-amz-unencrypted-content-length is
// read as for V2 (the v4 client writes it empty).
func parseV3(get func(string) (string, bool), s3Decode bool) (*Envelope, error) {
	e := &Envelope{Version: 3, IV: cse.CommitIV(), PlainLen: -1}
	suite, ok := get(KeyV3CEKAlg)
	if !ok {
		return nil, fmt.Errorf("%w: %s missing", ErrMalformed, KeyV3CEKAlg)
	}
	if suite != cse.CEKAlgGCMCommit {
		return nil, fmt.Errorf("%w: %s: unknown algorithm suite %.64q", ErrMalformed, KeyV3CEKAlg, suite)
	}
	e.Key.CEKAlg = cse.CEKAlgGCMCommit
	code, _ := get(KeyV3WrapAlg)
	wrap, ok := v3Wraps[code]
	if !ok {
		return nil, fmt.Errorf("%w: %s: unknown wrapping algorithm code %.16q", ErrMalformed, KeyV3WrapAlg, code)
	}
	e.Key.WrapAlg = wrap
	var err error
	if e.Key.Blob, err = v3Bytes(get, KeyV3Key, 0); err != nil {
		return nil, err
	}
	if e.Commitment, err = v3Bytes(get, KeyV3Commitment, cse.CommitmentSize); err != nil {
		return nil, err
	}
	if e.MessageID, err = v3Bytes(get, KeyV3MessageID, cse.MessageIDSize); err != nil {
		return nil, err
	}
	if pl, ok := get(KeyPlainLen); ok && pl != "" {
		n, err := strconv.ParseInt(pl, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: %s: %.32q is not a non-negative integer", ErrMalformed, KeyPlainLen, pl)
		}
		e.PlainLen = n
	}
	mdKey := KeyV3MatDesc
	if wrap == cse.WrapKMSContext {
		mdKey = KeyV3Context
	}
	md, _ := get(mdKey)
	if s3Decode {
		md = DecodeValue(md)
	}
	if e.Key.MatDesc, err = parseJSONMap(mdKey, md); err != nil {
		return nil, err
	}
	return e, nil
}

// v3Bytes decodes the base64 value of key, which must be present, non-empty
// and, if size > 0, decode to exactly size bytes.
func v3Bytes(get func(string) (string, bool), key string, size int) ([]byte, error) {
	s, ok := get(key)
	if !ok {
		return nil, fmt.Errorf("%w: %s missing", ErrMalformed, key)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: bad base64: %v", ErrMalformed, key, err)
	}
	if len(b) == 0 || size > 0 && len(b) != size {
		return nil, fmt.Errorf("%w: %s: %d bytes, want %d", ErrMalformed, key, len(b), size)
	}
	return b, nil
}

func parseMatDesc(s string) (map[string]string, error) { return parseJSONMap(KeyMatDesc, s) }

func parseJSONMap(key, s string) (map[string]string, error) {
	if s == "" {
		return map[string]string{}, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("%w: %s: not a JSON object of strings: %v", ErrMalformed, key, err)
	}
	if m == nil { // "null"
		return nil, fmt.Errorf("%w: %s: not a JSON object", ErrMalformed, key)
	}
	return m, nil
}

// encodeMatDesc renders a materials description as JSON with sorted keys
// (json.Marshal of a map), using only US-ASCII (SPEC "US-ASCII Preferred
// String"): non-ASCII runes become \u escapes so S3 never MIME-encodes the
// header, and "=?" becomes "\u003d?" so the value is never mistaken for an
// RFC 2047 word by DecodeValue. Both are ordinary JSON escapes.
func encodeMatDesc(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	raw, err := json.Marshal(m)
	if err != nil {
		panic("metadata: internal error: marshal matdesc: " + err.Error())
	}
	var sb strings.Builder
	sb.Grow(len(raw))
	s := string(raw)
	for i, r := range s {
		switch {
		case r == '=' && strings.HasPrefix(s[i+1:], "?"):
			sb.WriteString(`\u003d`)
		case r < utf8.RuneSelf:
			sb.WriteByte(byte(r))
		default:
			if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
				fmt.Fprintf(&sb, `\u%04x\u%04x`, r1, r2)
			} else {
				fmt.Fprintf(&sb, `\u%04x`, r)
			}
		}
	}
	return sb.String()
}

// DecodeValue undoes what S3 does to non-ASCII user-metadata values
// (s3ec-format.md §2 "Non-ASCII matdesc", GO3 customS3Decoder, J3
// decodeS3CustomEncoding): it decodes RFC 2047 words (a value that does not
// decode is kept as is), and then, if every rune of the result is ≤ U+00FF and
// some are not ASCII, maps each rune to one byte; when those bytes are valid
// UTF-8 they are the original value ("double encoding"), otherwise the
// MIME-decoded string is returned. ASCII values come back unchanged.
func DecodeValue(v string) string {
	s := v
	if strings.Contains(v, "=?") {
		if d, err := new(mime.WordDecoder).DecodeHeader(v); err == nil {
			s = d
		}
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return s
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return s
		}
		b = append(b, byte(r))
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return s
}

// Metadata returns the envelope as user metadata with lower-case logical keys
// (no x-amz-meta- prefix): x-amz-key-v2 (or x-amz-key when Version is 1, with
// no wrap algorithm), x-amz-iv, x-amz-cek-alg, x-amz-wrap-alg, x-amz-matdesc
// (JSON, sorted keys, US-ASCII), x-amz-tag-len "128" for GCM only (never for
// CBC, §11.1) and x-amz-unencrypted-content-length when PlainLen ≥ 0.
//
// A V3 envelope gives x-amz-c, x-amz-3, x-amz-w, x-amz-d, x-amz-i and
// x-amz-t (kms+context) or x-amz-m (raw wraps), encoded like x-amz-matdesc,
// plus x-amz-unencrypted-content-length when PlainLen ≥ 0.
func (e *Envelope) Metadata() map[string]string {
	if e.Version == 3 {
		m := e.ObjectMetadata()
		maps.Copy(m, e.v3Instruction())
		return m
	}
	m := make(map[string]string, 7)
	if e.Version == 1 {
		m[KeyV1] = base64.StdEncoding.EncodeToString(e.Key.Blob)
	} else {
		m[KeyV2] = base64.StdEncoding.EncodeToString(e.Key.Blob)
		m[KeyWrapAlg] = e.Key.WrapAlg
	}
	m[KeyIV] = base64.StdEncoding.EncodeToString(e.IV)
	m[KeyCEKAlg] = e.Key.CEKAlg
	m[KeyMatDesc] = encodeMatDesc(e.Key.MatDesc)
	if e.Key.CEKAlg == cse.CEKAlgGCM {
		m[KeyTagLen] = "128"
	}
	if e.PlainLen >= 0 {
		m[KeyPlainLen] = strconv.FormatInt(e.PlainLen, 10)
	}
	return m
}

// ObjectMetadata returns the envelope keys that stay on the object when the
// envelope goes into an instruction file: for V3 x-amz-c, x-amz-d and
// x-amz-i; for V1 and V2 none (an empty map).
func (e *Envelope) ObjectMetadata() map[string]string {
	m := make(map[string]string, 3)
	if e.Version == 3 {
		m[KeyV3CEKAlg] = e.Key.CEKAlg
		m[KeyV3Commitment] = base64.StdEncoding.EncodeToString(e.Commitment)
		m[KeyV3MessageID] = base64.StdEncoding.EncodeToString(e.MessageID)
	}
	return m
}

// v3Instruction is the part of a V3 envelope an instruction file holds.
func (e *Envelope) v3Instruction() map[string]string {
	m := make(map[string]string, 4)
	m[KeyV3Key] = base64.StdEncoding.EncodeToString(e.Key.Blob)
	m[KeyV3WrapAlg] = v3WrapCode(e.Key.WrapAlg)
	if e.Key.WrapAlg == cse.WrapKMSContext {
		m[KeyV3Context] = encodeMatDesc(e.Key.MatDesc)
	} else {
		m[KeyV3MatDesc] = encodeMatDesc(e.Key.MatDesc)
	}
	if e.PlainLen >= 0 {
		m[KeyPlainLen] = strconv.FormatInt(e.PlainLen, 10)
	}
	return m
}

// PlainSize returns the plaintext size of an object of cipherSize stored
// bytes, when the stored size fixes it (cse.Content.PlainSize): GCM (V2 and
// V3) always, CBC when PlainLen is recorded and consistent with cipherSize.
// Otherwise it is unknown, and the reader derives it from the body's last
// block (cse.Content.PlainSizeFromTail).
func (e *Envelope) PlainSize(cipherSize int64) (size int64, known bool) {
	c, err := e.Content(cipherSize)
	if err != nil {
		return 0, false
	}
	if n, ok := c.PlainSize(); ok {
		return n, true
	}
	return 0, false
}

// Size counts user metadata the way S3 does for its limit: the sum of the
// UTF-8 byte lengths of every key (without the x-amz-meta- prefix) and value.
func Size(meta map[string]string) int {
	n := 0
	for k, v := range meta {
		n += len(k) + len(v)
	}
	return n
}

// CheckSize returns ErrTooLarge when meta exceeds MaxUserMetadata; the writer
// should then store the envelope in an instruction file.
func CheckSize(meta map[string]string) error {
	if n := Size(meta); n > MaxUserMetadata {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	return nil
}
