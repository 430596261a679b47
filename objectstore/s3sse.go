package objectstore

import (
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Server-side encryption modes (SSE.Mode).
const (
	SSENone = ""    // no SSE headers: the bucket's default applies
	SSES3   = "s3"  // x-amz-server-side-encryption: AES256
	SSEKMS  = "kms" // x-amz-server-side-encryption: aws:kms (+ key id)
	SSEC    = "c"   // customer-provided key, sent with every request
)

// ErrSSECustomerKey: S3 refused to read an object with the SSE-C key this
// store sends (a key that does not match the object's, or none for an
// object stored under SSE-C, or one for an object that is not). It wraps
// ErrAccessDenied too, so callers that only know that still refuse.
var ErrSSECustomerKey = errors.New("objectstore: SSE-C key does not match the object's (or the object is not SSE-C, or access is denied)")

// SSE is the server-side encryption an S3Store asks for. It is applied to
// every PutObject, CreateMultipartUpload and CopyObject (the destination);
// SSE-C, whose key S3 does not keep, also to every GetObject, HeadObject,
// UploadPart and UploadPartCopy, and to the source of every copy (a self-copy
// or rename of an SSE-C object needs the key to read it).
type SSE struct {
	Mode     string // SSENone, SSES3, SSEKMS or SSEC
	KMSKeyID string // SSEKMS: the key; "" is the account's aws/s3 key
	// CustomerKey is the 32-byte SSE-C key. NewS3 copies it; it is never
	// logged (String hides it).
	CustomerKey []byte
}

// String describes the mode without the key.
func (e SSE) String() string {
	switch e.Mode {
	case SSES3:
		return "SSE-S3"
	case SSEKMS:
		if e.KMSKeyID == "" {
			return "SSE-KMS (aws/s3 key)"
		}
		return "SSE-KMS " + e.KMSKeyID
	case SSEC:
		return "SSE-C"
	}
	return "none"
}

// Validate checks the mode and the SSE-C key length.
func (e SSE) Validate() error {
	switch e.Mode {
	case SSENone, SSES3:
	case SSEKMS:
	case SSEC:
		if len(e.CustomerKey) != 32 {
			return fmt.Errorf("SSE-C key is %d bytes; it must be 32 (AES-256)", len(e.CustomerKey))
		}
	default:
		return fmt.Errorf("SSE mode %q: expected s3, kms or c", e.Mode)
	}
	if e.Mode != SSEKMS && e.KMSKeyID != "" {
		return errors.New("an SSE-KMS key id needs SSE mode kms")
	}
	return nil
}

// sseHeaders are the precomputed SSE-C header values.
type sseHeaders struct {
	alg, key, keyMD5 *string
}

func newSSEHeaders(e SSE) sseHeaders {
	if e.Mode != SSEC {
		return sseHeaders{}
	}
	sum := md5.Sum(e.CustomerKey)
	return sseHeaders{
		alg:    aws.String("AES256"),
		key:    aws.String(base64.StdEncoding.EncodeToString(e.CustomerKey)),
		keyMD5: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	}
}

func (s *S3Store) sseWrite() (types.ServerSideEncryption, *string) {
	switch s.opt.SSE.Mode {
	case SSES3:
		return types.ServerSideEncryptionAes256, nil
	case SSEKMS:
		if s.opt.SSE.KMSKeyID != "" {
			return types.ServerSideEncryptionAwsKms, aws.String(s.opt.SSE.KMSKeyID)
		}
		return types.ServerSideEncryptionAwsKms, nil
	}
	return "", nil
}

func (s *S3Store) ssePut(in *s3.PutObjectInput) {
	in.ServerSideEncryption, in.SSEKMSKeyId = s.sseWrite()
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
}

func (s *S3Store) sseCreate(in *s3.CreateMultipartUploadInput) {
	in.ServerSideEncryption, in.SSEKMSKeyId = s.sseWrite()
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
}

func (s *S3Store) sseUploadPart(in *s3.UploadPartInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
}

func (s *S3Store) sseUploadPartCopy(in *s3.UploadPartCopyInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
	in.CopySourceSSECustomerAlgorithm, in.CopySourceSSECustomerKey, in.CopySourceSSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
}

func (s *S3Store) sseCopy(in *s3.CopyObjectInput) {
	in.ServerSideEncryption, in.SSEKMSKeyId = s.sseWrite()
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
	in.CopySourceSSECustomerAlgorithm, in.CopySourceSSECustomerKey, in.CopySourceSSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
}

func (s *S3Store) sseGet(in *s3.GetObjectInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
}

func (s *S3Store) sseHead(in *s3.HeadObjectInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = s.ssec.alg, s.ssec.key, s.ssec.keyMD5
}

// sseOf describes the server-side encryption of a HEAD or GET reply.
func sseOf(mode types.ServerSideEncryption, kmsKey, customerAlg *string) string {
	switch {
	case aws.ToString(customerAlg) != "":
		return "SSE-C"
	case mode == types.ServerSideEncryptionAes256:
		return "SSE-S3"
	case mode == types.ServerSideEncryptionAwsKms || mode == types.ServerSideEncryptionAwsKmsDsse:
		if k := aws.ToString(kmsKey); k != "" {
			return "SSE-KMS " + k
		}
		return "SSE-KMS"
	}
	return string(mode)
}

// classifyRead is classify for a GET or HEAD of an object: where S3 refuses
// the SSE-C parameters (a wrong key is 403; a key for an object that is not
// SSE-C, or none for one that is, is 400 InvalidRequest or InvalidArgument),
// the error also wraps ErrSSECustomerKey and ErrAccessDenied.
func (s *S3Store) classifyRead(err error) error {
	if err == nil {
		return nil
	}
	var re *smithyhttp.ResponseError
	status := 0
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	sseC := s.opt.SSE.Mode == SSEC
	switch {
	case sseC && status == http.StatusForbidden:
	case status == http.StatusBadRequest && (code == "InvalidRequest" || code == "InvalidArgument" || code == "BadRequest" || code == ""):
		// HEAD has no body, so its 400 has no code.
	default:
		return classify(err)
	}
	return fmt.Errorf("%w: %w: %w", ErrSSECustomerKey, ErrAccessDenied, err)
}
