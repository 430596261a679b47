package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Server is a running S3-compatible server (MinIO).
type S3Server struct {
	Endpoint  string // http://127.0.0.1:PORT — an IP literal, so SDK endpoint rules fall back to path style
	AccessKey string
	SecretKey string
	Region    string // us-east-1
	// CA, when set, is the CA of the server's https certificate (see
	// SecureMinIO); Client trusts it.
	CA *CA
}

// minioOptions shape a started MinIO.
type minioOptions struct {
	ca  *CA  // serve https with a certificate from ca
	kms bool // MINIO_KMS_SECRET_KEY: SSE-S3 and SSE-KMS
}

var (
	minioOnce sync.Once
	minioSrv  *S3Server
	minioErr  error
)

// MinIO returns the package-wide MinIO server, starting it on first use on a
// free 127.0.0.1 port with a fresh data directory. If the binary cannot be
// found or built, or the server does not become ready, it calls Unavailable.
func MinIO(t testing.TB) *S3Server {
	t.Helper()
	minioOnce.Do(func() { minioSrv, _, minioErr = startMinIO(minioOptions{}) })
	if minioErr != nil {
		Unavailable(t, "MinIO: %v", minioErr)
	}
	return minioSrv
}

// StartMinIO starts a MinIO server of the caller's own, outside any test,
// like MinIO does (free 127.0.0.1 port, fresh data directory). stop kills it
// and removes its data directory; it is safe to call more than once. The
// server also dies with this process (Pdeathsig). Errors wrap ErrUnavailable
// when the binary or the server cannot be provided.
func StartMinIO() (srv *S3Server, stop func(), err error) {
	srv, p, err := startMinIO(minioOptions{})
	if err != nil {
		if p != nil {
			p.stop(true)
		}
		return nil, nil, err
	}
	return srv, func() { p.stop(false) }, nil
}

// startMinIO starts MinIO. The proc is returned, when one was started, even
// with an error, so that callers can stop it.
func startMinIO(o minioOptions) (*S3Server, *proc, error) {
	bin, err := ToolsBin("minio")
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "csefs-minio-")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	cport, err := freePort()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := append(os.Environ(),
		"MINIO_ROOT_USER="+testAccessKey,
		"MINIO_ROOT_PASSWORD="+testSecretKey,
		"MINIO_REGION="+testRegion,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	)
	scheme := "http"
	if o.kms {
		var k [32]byte
		rand.Read(k[:])
		env = append(env, "MINIO_KMS_SECRET_KEY="+MinIOKMSKey+":"+base64.StdEncoding.EncodeToString(k[:]))
	}
	if o.ca != nil {
		// MinIO serves https when its --certs-dir holds public.crt and
		// private.key.
		chain, key, err := o.ca.Issue("csefs-test-minio", CertOptions{})
		if err == nil {
			err = os.MkdirAll(dir+"/certs", 0o700)
		}
		if err == nil {
			err = os.WriteFile(dir+"/certs/public.crt", chain, 0o600)
		}
		if err == nil {
			err = os.WriteFile(dir+"/certs/private.key", key, 0o600)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: certificates: %v", ErrUnavailable, err)
		}
		scheme = "https"
	}
	p, err := startProc("minio", dir, bin, []string{
		"server", "--quiet",
		"--address", addr,
		"--console-address", "127.0.0.1:" + strconv.Itoa(cport),
		"--certs-dir", dir + "/certs",
		dir + "/data",
	}, env)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	srv := &S3Server{Endpoint: scheme + "://" + addr, AccessKey: testAccessKey, SecretKey: testSecretKey, Region: testRegion, CA: o.ca}
	hc := &http.Client{Timeout: startTimeout}
	if o.ca != nil {
		hc = o.ca.HTTPClient()
		hc.Timeout = startTimeout
	}
	err = p.waitReady(func() error {
		resp, err := hc.Get(srv.Endpoint + "/minio/health/live")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		// Live is not always ready to serve S3: also require a real call.
		_, err = srv.client().ListBuckets(context.Background(), &s3.ListBucketsInput{})
		return err
	})
	if err != nil {
		return nil, p, err
	}
	return srv, p, nil
}

// client builds an S3 client without a testing.TB.
func (s *S3Server) client() *s3.Client {
	cfg := aws.Config{
		Region:      s.Region,
		Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	}
	if s.CA != nil {
		cfg.HTTPClient = s.CA.HTTPClient()
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoint)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

// NewClient is Client for callers without a testing.TB (benchmarks,
// commands): static credentials, path-style addressing, checksums only when
// required, no host AWS configuration.
func (s *S3Server) NewClient() *s3.Client { return s.client() }

// Client returns an aws-sdk-go-v2 S3 client for the server: static
// credentials, path-style addressing, checksums only when required. It does
// not read the host's AWS configuration.
func (s *S3Server) Client(t testing.TB) *s3.Client {
	t.Helper()
	return s.client()
}

var bucketSeq atomic.Int64

// NewBucket creates a fresh, uniquely named bucket (a valid lowercase DNS
// name) and returns its name. It fails the test if creation fails.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("csefs-test-%d-%d-%s", os.Getpid(), bucketSeq.Add(1), hex.EncodeToString(rnd[:]))
	_, err := s.client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)})
	if err != nil {
		t.Fatalf("testenv: create bucket %s: %v", name, err)
	}
	return name
}

// Env returns the environment a subprocess needs to reach the server with
// the AWS SDKs: credentials, region and AWS_ENDPOINT_URL_S3.
func (s *S3Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint,
	}
}
