package interop

// TEMPORARY stand-in until cse.NewKMSProvider lands.

import (
	"context"
	"fmt"
	"maps"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/csefs/csefs/cse"
)

type standin struct {
	c     *kms.Client
	keyID string
	wrap  string
}

func newKMSProviderErr(e *env, keyID, wrap string) (cse.Provider, error) {
	return &standin{e.KMS, keyID, wrap}, nil
}

func (s *standin) GenerateKey(ctx context.Context, req cse.KeyRequest) ([]byte, cse.WrappedKey, error) {
	ec := maps.Clone(req.MatDesc)
	if ec == nil {
		ec = map[string]string{}
	}
	if s.wrap == cse.WrapKMSContext {
		ec[cse.ReservedCEKAlgKey] = req.CEKAlg
	} else {
		ec[cse.LegacyKMSKeyIDKey] = s.keyID
	}
	out, err := s.c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &s.keyID, KeySpec: kmstypes.DataKeySpecAes256, EncryptionContext: ec})
	if err != nil {
		return nil, cse.WrappedKey{}, fmt.Errorf("%w: %v", cse.ErrKeyAccess, err)
	}
	return out.Plaintext, cse.WrappedKey{WrapAlg: s.wrap, CEKAlg: req.CEKAlg, Blob: out.CiphertextBlob, MatDesc: ec}, nil
}

func (s *standin) DecryptKey(ctx context.Context, w cse.WrappedKey) ([]byte, error) {
	out, err := s.c.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(s.keyID), CiphertextBlob: w.Blob, EncryptionContext: w.MatDesc})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", cse.ErrKeyAccess, err)
	}
	return out.Plaintext, nil
}
