package e2e

// Keeps the interop oracles pinned in go.mod until the tests that use them land.
import (
	_ "github.com/aws/amazon-s3-encryption-client-go/v3/client"
	_ "github.com/aws/amazon-s3-encryption-client-go/v3/materials"
	_ "github.com/aws/aws-sdk-go/service/s3/s3crypto"
	_ "github.com/aws/aws-sdk-go-v2/service/kms"
	_ "github.com/aws/aws-sdk-go-v2/service/s3"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/credentials"
	_ "github.com/hanwen/go-fuse/v2/posixtest"
)
