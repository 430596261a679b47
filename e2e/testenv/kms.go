package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// TestAliasName is the alias of KMSServer.KeyID.
const TestAliasName = "alias/csefs-test"

// KMSServer is a running local-kms with the keys tests need.
type KMSServer struct {
	Endpoint  string // http://127.0.0.1:PORT
	Region    string // us-east-1
	AccountID string // 111122223333

	// An enabled SYMMETRIC_DEFAULT key, and its alias TestAliasName.
	KeyID, KeyARN, AliasName, AliasARN string
	// DisabledKeyID is a SYMMETRIC_DEFAULT key in state Disabled.
	DisabledKeyID string
	// AsymmetricKeyID is an RSA_2048 ENCRYPT_DECRYPT key.
	AsymmetricKeyID string
	// SignKeyID is an ECC_NIST_P256 SIGN_VERIFY key.
	SignKeyID string
}

var (
	kmsOnce sync.Once
	kmsSrv  *KMSServer
	kmsErr  error
)

// KMS returns the package-wide local-kms, starting it on first use on a free
// 127.0.0.1 port with a fresh database and creating the keys described on
// KMSServer. If the binary cannot be found or built, or the server does not
// become ready, it calls Unavailable.
//
// local-kms differs from AWS KMS in ways tests may notice: when Decrypt is
// given a KeyId that is not the blob's key it answers
// InvalidCiphertextException (AWS: IncorrectKeyException), and an unknown or
// unusable key on Decrypt is reported as AccessDeniedException unless the
// KeyId was passed explicitly.
func KMS(t testing.TB) *KMSServer {
	t.Helper()
	kmsOnce.Do(func() { kmsSrv, _, kmsErr = startKMS() })
	if kmsErr != nil {
		Unavailable(t, "local-kms: %v", kmsErr)
	}
	return kmsSrv
}

// StartKMS starts a local-kms of the caller's own, outside any test, like
// KMS does (free 127.0.0.1 port, fresh database, the keys described on
// KMSServer). stop kills it and removes its directory; it is safe to call
// more than once. The server also dies with this process (Pdeathsig). Errors
// wrap ErrUnavailable when the binary or the server cannot be provided.
func StartKMS() (srv *KMSServer, stop func(), err error) {
	srv, p, err := startKMS()
	if err != nil {
		if p != nil {
			p.stop(true)
		}
		return nil, nil, err
	}
	return srv, func() { p.stop(false) }, nil
}

// startKMS starts local-kms. The proc is returned, when one was started,
// even with an error, so that callers can stop it.
func startKMS() (*KMSServer, *proc, error) {
	bin, err := ToolsBin("local-kms")
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "csefs-kms-")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	env := append(os.Environ(),
		"PORT="+strconv.Itoa(port),
		"KMS_ACCOUNT_ID="+testAccountID,
		"KMS_REGION="+testRegion,
		"KMS_DATA_PATH="+filepath.Join(dir, "data"),
		// No seed file: keys are created through the API below. Point the
		// seed path into our temp dir so /init/seed.yaml is never read.
		"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"),
	)
	p, err := startProc("local-kms", dir, bin, nil, env)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	k := &KMSServer{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		Region:    testRegion,
		AccountID: testAccountID,
	}
	c := k.client()
	ctx := context.Background()
	err = p.waitReady(func() error {
		_, err := c.ListKeys(ctx, &kms.ListKeysInput{})
		return err
	})
	if err != nil {
		return nil, p, err
	}
	if err := k.createKeys(ctx, c); err != nil {
		return nil, p, fmt.Errorf("%w: local-kms setup: %v (log %s)", ErrUnavailable, err, p.logPath)
	}
	return k, p, nil
}

func (k *KMSServer) createKeys(ctx context.Context, c *kms.Client) error {
	out, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("csefs test key")})
	if err != nil {
		return err
	}
	k.KeyID, k.KeyARN = *out.KeyMetadata.KeyId, *out.KeyMetadata.Arn
	k.AliasName = TestAliasName
	k.AliasARN = fmt.Sprintf("arn:aws:kms:%s:%s:%s", k.Region, k.AccountID, TestAliasName)
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(k.AliasName), TargetKeyId: aws.String(k.KeyID)}); err != nil {
		return err
	}

	out, err = c.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("csefs test key (disabled)")})
	if err != nil {
		return err
	}
	k.DisabledKeyID = *out.KeyMetadata.KeyId
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(k.DisabledKeyID)}); err != nil {
		return err
	}

	out, err = c.CreateKey(ctx, &kms.CreateKeyInput{
		Description: aws.String("csefs test key (RSA_2048 ENCRYPT_DECRYPT)"),
		KeySpec:     kmstypes.KeySpecRsa2048,
		KeyUsage:    kmstypes.KeyUsageTypeEncryptDecrypt,
	})
	if err != nil {
		return err
	}
	k.AsymmetricKeyID = *out.KeyMetadata.KeyId

	out, err = c.CreateKey(ctx, &kms.CreateKeyInput{
		Description: aws.String("csefs test key (ECC_NIST_P256 SIGN_VERIFY)"),
		KeySpec:     kmstypes.KeySpecEccNistP256,
		KeyUsage:    kmstypes.KeyUsageTypeSignVerify,
	})
	if err != nil {
		return err
	}
	k.SignKeyID = *out.KeyMetadata.KeyId
	return nil
}

func (k *KMSServer) client() *kms.Client {
	cfg := aws.Config{
		Region:      k.Region,
		Credentials: credentials.NewStaticCredentialsProvider(testAccessKey, testSecretKey, ""),
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) {
		o.BaseEndpoint = aws.String(k.Endpoint)
	})
}

// NewClient is Client for callers without a testing.TB (benchmarks,
// commands). It does not read the host's AWS configuration.
func (k *KMSServer) NewClient() *kms.Client { return k.client() }

// Client returns an aws-sdk-go-v2 KMS client for the server. It does not read
// the host's AWS configuration.
func (k *KMSServer) Client(t testing.TB) *kms.Client {
	t.Helper()
	return k.client()
}

// NewKey creates a fresh enabled SYMMETRIC_DEFAULT key, for tests that change
// a key's state. It fails the test if creation fails.
func (k *KMSServer) NewKey(t testing.TB) (keyID, keyARN string) {
	t.Helper()
	out, err := k.client().CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String("csefs test key (per test)")})
	if err != nil {
		t.Fatalf("testenv: create KMS key: %v", err)
	}
	return *out.KeyMetadata.KeyId, *out.KeyMetadata.Arn
}

// Env returns the environment a subprocess needs to reach the server with the
// AWS SDKs: AWS_ENDPOINT_URL_KMS, region and credentials. The credentials and
// region equal S3Server.Env's, so the two lists can be concatenated.
func (k *KMSServer) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + testAccessKey,
		"AWS_SECRET_ACCESS_KEY=" + testSecretKey,
		"AWS_REGION=" + k.Region,
		"AWS_ENDPOINT_URL_KMS=" + k.Endpoint,
	}
}
