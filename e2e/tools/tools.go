//go:build tools

// Package tools pins the real servers the e2e tests run against: MinIO (S3)
// and local-kms (KMS). They are built from these pins by e2e/testenv into a
// cache directory; nothing here is part of csefs.
package tools

import (
	_ "github.com/minio/minio"
	_ "github.com/nsmithuk/local-kms"
)
