package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
)

// Description is what Inspect says about one object. It holds no key
// material: the wrapped key's size, never its bytes.
type Description struct {
	URI          string            `json:"uri"`
	Size         int64             `json:"stored_size"`
	ETag         string            `json:"etag"`
	LastModified time.Time         `json:"last_modified"`
	Encrypted    bool              `json:"encrypted"`
	Format       string            `json:"format"`            // "V2 AES-GCM", "plaintext"
	Version      int               `json:"version,omitempty"` // 1, 2, 3
	Content      string            `json:"content,omitempty"` // x-amz-cek-alg
	Committing   bool              `json:"committing"`        // V3 key commitment
	Storage      string            `json:"storage,omitempty"` // object-metadata or instruction-file
	Wrap         string            `json:"wrap,omitempty"`    // x-amz-wrap-alg
	KMSKey       string            `json:"kms_key,omitempty"` // from the context, or KMS's answer with --unwrap
	KeyringKey   string            `json:"keyring_key,omitempty"`
	MatDesc      map[string]string `json:"materials_description,omitempty"`
	WrappedBytes int               `json:"wrapped_key_bytes,omitempty"`
	PlainSize    *int64            `json:"plaintext_size,omitempty"`
	Attributes   map[string]string `json:"csefs_attributes,omitempty"`
	SSE          string            `json:"sse,omitempty"`    // S3's server-side encryption: SSE-S3, SSE-KMS KEY, SSE-C
	Unwrap       string            `json:"unwrap,omitempty"` // "ok" or the error, with --unwrap
	Error        string            `json:"error,omitempty"`
}

// Inspect describes every object (see Description), as text or JSON lines
// on o.Report. It calls the key service only when unwrap is set (and then
// says whether each key unwraps); o.Unwrap may be nil otherwise.
func Inspect(ctx, stop context.Context, o Options, unwrap bool) (Summary, error) {
	rp := o.Report
	rp.progress = o.Progress
	o.Report = nil // Inspect writes its own records
	return o.run(ctx, stop, func(ctx context.Context, key string, _ int64) Result {
		d, err := o.describe(ctx, key, unwrap)
		if rp.JSON {
			rp.Record(d)
		} else {
			rp.write(func() { fmt.Fprint(rp.W, d.text()) })
		}
		if err != nil {
			return Result{Status: StatusFailed, Error: err.Error(), Bytes: d.Size}
		}
		return Result{Status: StatusOK, Bytes: d.Size}
	})
}

func (o *Options) describe(ctx context.Context, key string, unwrap bool) (*Description, error) {
	d := &Description{URI: o.URI + key, Format: "unknown"}
	obj, err := resolve(ctx, o.Store, key)
	if obj != nil {
		d.Size, d.ETag, d.LastModified = obj.info.Size, obj.info.ETag, obj.info.LastModified
		d.SSE = obj.info.SSE
		d.Attributes = map[string]string{}
		for k, v := range obj.info.Metadata {
			if strings.HasPrefix(strings.ToLower(k), "csefs-") {
				d.Attributes[strings.ToLower(k)] = v
			}
		}
	}
	if err != nil {
		d.Error = err.Error()
		return d, err
	}
	env := obj.env
	d.Format = format(env)
	if env == nil {
		ps := obj.info.Size
		d.PlainSize = &ps
		return d, nil
	}
	d.Encrypted, d.Version, d.Content = true, env.Version, env.Key.CEKAlg
	d.Committing = env.Version == 3
	d.Storage = "object-metadata"
	if obj.instr {
		d.Storage = "instruction-file"
	}
	d.Wrap = env.Key.WrapAlg
	if d.Wrap == cse.WrapV1 {
		d.Wrap = "V1 (AES/ECB or RSA PKCS#1 v1.5)"
	}
	d.MatDesc = env.Key.MatDesc
	d.WrappedBytes = len(env.Key.Blob)
	switch env.Key.WrapAlg {
	case cse.WrapKMS:
		d.KMSKey = env.Key.MatDesc[cse.LegacyKMSKeyIDKey]
	}
	if n, ok := env.Key.MatDesc[cse.KeyNameKey]; ok {
		d.KeyringKey = n
	}
	if n, ok := env.PlainSize(obj.info.Size); ok {
		d.PlainSize = &n
	}
	if unwrap {
		dk, ck, arn, err := o.contentKey(ctx, env)
		if err != nil {
			d.Unwrap = err.Error()
			return d, err
		}
		cse.Zero(dk)
		cse.Zero(ck)
		d.Unwrap = "ok"
		if arn != "" {
			d.KMSKey = arn
		}
	}
	return d, nil
}

// text renders d for people: the URI, then indented fields.
func (d *Description) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", d.URI)
	f := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "  %-22s %s\n", k+":", v)
		}
	}
	f("format", d.Format)
	f("storage", d.Storage)
	f("content algorithm", d.Content)
	if d.Encrypted {
		f("key commitment", map[bool]string{true: "yes", false: "no"}[d.Committing])
	}
	f("wrapping", d.Wrap)
	f("KMS key", d.KMSKey)
	f("keyring key", d.KeyringKey)
	if len(d.MatDesc) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(d.MatDesc)) {
			kv = append(kv, fmt.Sprintf("%s=%s", k, d.MatDesc[k]))
		}
		f("materials description", strings.Join(kv, ", "))
	}
	f("stored size", fmt.Sprint(d.Size))
	if d.PlainSize != nil {
		f("plaintext size", fmt.Sprint(*d.PlainSize))
	} else if d.Encrypted {
		f("plaintext size", "unknown (CBC without a recorded length)")
	}
	f("etag", d.ETag)
	f("server-side", d.SSE)
	for _, k := range slices.Sorted(maps.Keys(d.Attributes)) {
		f(k, d.Attributes[k])
	}
	f("unwrap", d.Unwrap)
	f("error", d.Error)
	return b.String()
}

// envelopeKeys are the metadata keys of V1, V2 and V3 envelopes.
var envelopeKeys = []string{
	metadata.KeyV2, metadata.KeyV1, metadata.KeyIV, metadata.KeyCEKAlg, metadata.KeyWrapAlg,
	metadata.KeyMatDesc, metadata.KeyTagLen, metadata.KeyPlainLen,
	metadata.KeyV3CEKAlg, metadata.KeyV3Key, metadata.KeyV3WrapAlg, metadata.KeyV3Commitment,
	metadata.KeyV3MessageID, metadata.KeyV3Context, metadata.KeyV3MatDesc,
}

// withoutEnvelope returns a copy of meta without envelope keys (any case),
// keeping csefs's attributes and the user's own metadata.
func withoutEnvelope(meta map[string]string) map[string]string {
	out := make(map[string]string, len(meta))
outer:
	for k, v := range meta {
		for _, ek := range envelopeKeys {
			if strings.EqualFold(k, ek) {
				continue outer
			}
		}
		out[k] = v
	}
	return out
}
