package interop

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/e2e/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is one test's view of the servers: clients plus a fresh bucket.
type env struct {
	S3SRV  *testenv.S3Server
	KMSSRV *testenv.KMSServer
	S3     *s3.Client
	KMS    *kms.Client
	Bucket string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := testenv.MinIO(t)
	k := testenv.KMS(t)
	return &env{S3SRV: s, KMSSRV: k, S3: s.Client(t), KMS: k.Client(t), Bucket: s.NewBucket(t)}
}

// Plaintext sizes every direction is tested with: empty, around one AES
// block, a typical small file, and one above a single 5 MiB part.
var sizes = []int{0, 1, 15, 16, 17, 1000, 5<<20 + 7}

// bigSize is written by the core as a multipart upload of 8 MiB parts.
const bigSize = 64<<20 + 3

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sizeName(n int) string { return fmt.Sprintf("size=%d", n) }

var ctx = context.Background()
