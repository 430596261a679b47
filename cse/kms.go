package cse

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// KMSClient is the part of *kms.Client that KMSProvider uses. Tests pass a
// fake; production passes kms.NewFromConfig(cfg).
type KMSClient interface {
	GenerateDataKey(ctx context.Context, params *kms.GenerateDataKeyInput, optFns ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error)
	Decrypt(ctx context.Context, params *kms.DecryptInput, optFns ...func(*kms.Options)) (*kms.DecryptOutput, error)
	DescribeKey(ctx context.Context, params *kms.DescribeKeyInput, optFns ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

var _ KMSClient = (*kms.Client)(nil)

// KMSOptions configures a KMSProvider.
type KMSOptions struct {
	// Wrap is the wrap algorithm new keys are written with: WrapKMSContext
	// (the default when empty; S3EC V2) or WrapKMS (legacy EMRFS CSE-KMS).
	// Both are always readable.
	Wrap string
	// StrictKeyID makes DecryptKey send the configured key id, so KMS refuses
	// (IncorrectKeyException → ErrKeyAccess) objects wrapped under any other
	// key. By default no KeyId is sent; see KMSProvider.
	StrictKeyID bool
}

// KMSProvider is a Provider backed by an AWS KMS symmetric key: the EMRFS
// CSE-KMS provider and the S3EC KMS keyring.
//
// GenerateKey asks KMS for a data key under the configured key id (a key id,
// key ARN, alias/NAME or alias ARN, passed to KMS as given).
//
//   - kms+context: the encryption context is req.MatDesc plus
//     {"aws:x-amz-cek-alg": req.CEKAlg}; a caller-supplied
//     "aws:x-amz-cek-alg" is refused (ErrContextMismatch). The stored
//     materials description is that whole context.
//   - kms: the materials description, which is also the context, is
//     {"kms_cmk_id": key id as configured} merged with req.MatDesc; the
//     request wins on conflicts (JV1 mergeMaterialDescriptions, s3ec-format
//     §4.2).
//
// DecryptKey sends the stored materials description verbatim as the
// encryption context, after checking it: for kms+context it must map
// "aws:x-amz-cek-alg" to the object's content algorithm, for kms it must
// contain "kms_cmk_id" (ErrContextMismatch otherwise). It sends no KeyId
// unless KMSOptions.StrictKeyID: a symmetric KMS ciphertext names its key, so
// one mount can read objects written under several keys (key rotation to a
// new key, data written by clusters configured with different keys, EMRFS's
// kms_cmk_id stored as an alias that has since moved). Access is still
// decided by KMS (the key policy and IAM) for whichever key the blob names.
//
// KMS errors map to sentinels, with the KMS error wrapped as well:
// IncorrectKeyException, AccessDeniedException and unclassified KMS errors →
// ErrKeyAccess; no answer (network, timeout: "KMS timeout"), throttling and
// KMS-internal failures → ErrKeyService; InvalidCiphertextException →
// ErrContextMismatch (with a context, a mismatched context is by far the
// likely cause; a damaged blob reports the same); DisabledException,
// KMSInvalidStateException, NotFoundException, KeyUnavailableException →
// ErrKeyUnusable.
//
// Safe for concurrent use.
type KMSProvider struct {
	client KMSClient
	keyID  string
	opt    KMSOptions
}

var _ Provider = (*KMSProvider)(nil)

// NewKMSProvider checks with DescribeKey that keyID is an enabled symmetric
// ENCRYPT_DECRYPT key and returns a provider for it. It returns an error
// wrapping ErrKeyUnusable, naming the key and the reason ("disabled",
// "asymmetric (KeySpec RSA_2048)", "KeyUsage SIGN_VERIFY", "not found"),
// otherwise. Fields DescribeKey leaves empty (some KMS emulators omit KeySpec
// or KeyUsage) are not held against the key.
func NewKMSProvider(ctx context.Context, client KMSClient, keyID string, opt KMSOptions) (*KMSProvider, error) {
	if keyID == "" {
		return nil, fmt.Errorf("cse: empty KMS key id: %w", ErrKeyUnusable)
	}
	switch opt.Wrap {
	case "":
		opt.Wrap = WrapKMSContext
	case WrapKMSContext, WrapKMS:
	default:
		return nil, fmt.Errorf("cse: KMS wrap algorithm %q: %w", opt.Wrap, ErrUnsupported)
	}
	out, err := client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &keyID})
	if err != nil {
		if kmsErrorCode(err) == "NotFoundException" {
			return nil, fmt.Errorf("cse: KMS key %q unusable: not found: %w: %w", keyID, ErrKeyUnusable, err)
		}
		return nil, fmt.Errorf("cse: describing KMS key %q: %w", keyID, mapKMSError(err))
	}
	if reason := unusableReason(out.KeyMetadata); reason != "" {
		return nil, fmt.Errorf("cse: KMS key %q unusable: %s: %w", keyID, reason, ErrKeyUnusable)
	}
	return &KMSProvider{client: client, keyID: keyID, opt: opt}, nil
}

func unusableReason(md *types.KeyMetadata) string {
	if md == nil {
		return "no key metadata"
	}
	if md.KeyState != "" && md.KeyState != types.KeyStateEnabled {
		if md.KeyState == types.KeyStateDisabled {
			return "disabled"
		}
		return fmt.Sprintf("KeyState %s", md.KeyState)
	}
	if md.KeyState == "" && !md.Enabled {
		return "disabled"
	}
	spec := string(md.KeySpec)
	if spec == "" {
		//lint:ignore SA1019 KMS servers that predate KeySpec (local-kms among them) fill only CustomerMasterKeySpec
		spec = string(md.CustomerMasterKeySpec)
	}
	if spec != "" && spec != string(types.KeySpecSymmetricDefault) {
		if strings.HasPrefix(spec, "HMAC") {
			return fmt.Sprintf("not symmetric encryption (KeySpec %s)", spec)
		}
		return fmt.Sprintf("asymmetric (KeySpec %s)", spec)
	}
	if md.KeyUsage != "" && md.KeyUsage != types.KeyUsageTypeEncryptDecrypt {
		return fmt.Sprintf("KeyUsage %s", md.KeyUsage)
	}
	return ""
}

// GenerateKey implements Provider.
func (p *KMSProvider) GenerateKey(ctx context.Context, req KeyRequest) ([]byte, WrappedKey, error) {
	if req.CEKAlg == "" {
		req.CEKAlg = CEKAlgGCM
	}
	var ec map[string]string
	switch p.opt.Wrap {
	case WrapKMSContext:
		if _, ok := req.MatDesc[ReservedCEKAlgKey]; ok {
			return nil, WrappedKey{}, fmt.Errorf("cse: caller materials description sets reserved key %q: %w", ReservedCEKAlgKey, ErrContextMismatch)
		}
		ec = make(map[string]string, len(req.MatDesc)+1)
		for k, v := range req.MatDesc {
			ec[k] = v
		}
		ec[ReservedCEKAlgKey] = req.CEKAlg
	case WrapKMS:
		ec = make(map[string]string, len(req.MatDesc)+1)
		ec[LegacyKMSKeyIDKey] = p.keyID
		for k, v := range req.MatDesc { // the request wins (§4.2)
			ec[k] = v
		}
	}
	keyID := p.keyID
	out, err := p.client.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             &keyID,
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: ec,
	})
	if err != nil {
		return nil, WrappedKey{}, fmt.Errorf("cse: KMS GenerateDataKey with key %q: %w", p.keyID, mapKMSError(err))
	}
	if len(out.Plaintext) != KeySize || len(out.CiphertextBlob) == 0 {
		Zero(out.Plaintext)
		return nil, WrappedKey{}, fmt.Errorf("cse: KMS returned a %d-byte data key and a %d-byte blob: %w", len(out.Plaintext), len(out.CiphertextBlob), ErrMalformed)
	}
	key := append([]byte(nil), out.Plaintext...)
	Zero(out.Plaintext)
	return key, WrappedKey{
		WrapAlg: p.opt.Wrap,
		CEKAlg:  req.CEKAlg,
		Blob:    append([]byte(nil), out.CiphertextBlob...),
		MatDesc: ec,
	}, nil
}

// DecryptKey implements Provider.
func (p *KMSProvider) DecryptKey(ctx context.Context, w WrappedKey) ([]byte, error) {
	key, _, err := p.DecryptKeyID(ctx, w)
	return key, err
}

// DecryptKeyID is DecryptKey that also returns the ARN of the KMS key that
// unwrapped the data key (KMS Decrypt's KeyId, "" if KMS does not say): the
// key an object is actually under, which kms+context objects do not record.
func (p *KMSProvider) DecryptKeyID(ctx context.Context, w WrappedKey) ([]byte, string, error) {
	switch w.WrapAlg {
	case WrapKMSContext:
		v, ok := w.MatDesc[ReservedCEKAlgKey]
		if !ok {
			return nil, "", fmt.Errorf("cse: kms+context materials description lacks %q: %w", ReservedCEKAlgKey, ErrContextMismatch)
		}
		if v != w.CEKAlg {
			return nil, "", fmt.Errorf("cse: kms+context binds %q but the object says %q: %w", v, w.CEKAlg, ErrContextMismatch)
		}
	case WrapKMS:
		if _, ok := w.MatDesc[LegacyKMSKeyIDKey]; !ok {
			return nil, "", fmt.Errorf("cse: kms materials description lacks %q: %w", LegacyKMSKeyIDKey, ErrContextMismatch)
		}
	default:
		return nil, "", fmt.Errorf("cse: KMS provider cannot unwrap %q: %w", w.WrapAlg, ErrUnsupported)
	}
	in := &kms.DecryptInput{CiphertextBlob: w.Blob, EncryptionContext: w.MatDesc}
	if p.opt.StrictKeyID {
		keyID := p.keyID
		in.KeyId = &keyID
	}
	out, err := p.client.Decrypt(ctx, in)
	if err != nil {
		return nil, "", fmt.Errorf("cse: KMS Decrypt (%s): %w", w.WrapAlg, mapKMSError(err))
	}
	if !validCEKLen(len(out.Plaintext)) {
		Zero(out.Plaintext)
		return nil, "", fmt.Errorf("cse: KMS returned a %d-byte data key: %w", len(out.Plaintext), ErrMalformed)
	}
	key := append([]byte(nil), out.Plaintext...)
	Zero(out.Plaintext)
	id := ""
	if out.KeyId != nil {
		id = *out.KeyId
	}
	return key, id, nil
}

// kmsErrorCode returns the API error code of a KMS error (smithy.APIError),
// or "".
func kmsErrorCode(err error) string {
	var api interface{ ErrorCode() string }
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// mapKMSError wraps err with the sentinel for its KMS error code.
func mapKMSError(err error) error {
	var sentinel error
	switch kmsErrorCode(err) {
	case "InvalidCiphertextException":
		sentinel = ErrContextMismatch
	case "IncorrectKeyException", "AccessDeniedException":
		sentinel = ErrKeyAccess
	case "DisabledException", "KMSInvalidStateException", "NotFoundException", "KeyUnavailableException":
		sentinel = ErrKeyUnusable
	case "ThrottlingException", "KMSInternalException", "DependencyTimeoutException":
		return fmt.Errorf("%w: KMS throttled or failing: %w", ErrKeyService, err)
	case "":
		// No answer from KMS at all: say what happened, not "denied".
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%w: KMS timeout: %w", ErrKeyService, err)
		}
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("%w: KMS unreachable: %w", ErrKeyService, err)
	default:
		sentinel = ErrKeyAccess
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}
