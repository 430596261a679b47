package mount

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// sseOptions is the server-side encryption of cfg (normalized) for the S3
// store: --sse s3 (SSE-S3), kms (SSE-KMS, with --sse-kms-key-id or the
// account's aws/s3 key) or c (SSE-C, the key read from --sse-c-key-file).
// The SSE-C key never appears in an error or a log line; the caller zeroes
// it (objectstore.NewS3 keeps its own copy).
func sseOptions(cfg Config) (objectstore.SSE, error) {
	sse := objectstore.SSE{Mode: cfg.SSE, KMSKeyID: cfg.SSEKMSKeyID}
	if cfg.SSE == objectstore.SSEC {
		key, err := readSSECKey(cfg.SSECKeyFile)
		if err != nil {
			return sse, err
		}
		sse.CustomerKey = key
	}
	if err := sse.Validate(); err != nil {
		cse.Zero(sse.CustomerKey)
		return sse, fmt.Errorf("--sse: %w", err)
	}
	return sse, nil
}

// readSSECKey reads an SSE-C key file: 32 raw bytes, or base64 of 32 bytes
// (surrounding white space ignored).
func readSSECKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--sse-c-key-file: %w", err)
	}
	defer cse.Zero(b)
	if len(b) == 32 {
		return bytes.Clone(b), nil
	}
	t := bytes.TrimSpace(b)
	k := make([]byte, base64.StdEncoding.DecodedLen(len(t)))
	n, err := base64.StdEncoding.Decode(k, t)
	if err != nil || n != 32 {
		cse.Zero(k)
		return nil, fmt.Errorf("--sse-c-key-file %s: %d bytes, neither 32 raw bytes nor base64 of 32 bytes", path, len(b))
	}
	return k[:32], nil
}

// sseName is the --sse mode for the log ("none" when off); never the key.
func sseName(mode string) string {
	if mode == "" {
		return "none"
	}
	return mode
}
