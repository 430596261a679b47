package interop

// A tiny csefs "core" writer and reader: cse + metadata + aws-sdk-go-v2 s3,
// with no caching and no FUSE, so that interop failures point at the format
// code and not at the filesystem.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
)

// partSize is the plaintext size of every non-final multipart part: a
// multiple of 16 (GCM blocks) and above S3's 5 MiB minimum.
const partSize = 8 << 20

type writeMode struct {
	instruction bool // envelope in <key>.instruction, not in object metadata
	multipart   bool // CreateMultipartUpload + UploadPart(s) + Complete
	v3          bool // the V3 format with key commitment (suite 115)
}

func (m writeMode) String() string {
	s := "metadata"
	if m.instruction {
		s = "instruction"
	}
	if m.multipart {
		s += "+multipart"
	}
	if m.v3 {
		s += "+v3"
	}
	return s
}

// coreWrite encrypts plain under a fresh data key from p and stores it as
// bucket/key the way csefs does.
func coreWrite(t testing.TB, e *env, p cse.Provider, key string, plain []byte, mode writeMode) {
	t.Helper()
	if err := coreWriteErr(ctx, e, p, key, plain, mode); err != nil {
		t.Fatalf("core write %s (%s): %v", key, mode, err)
	}
}

func coreWriteErr(ctx context.Context, e *env, p cse.Provider, key string, plain []byte, mode writeMode) error {
	cekAlg := cse.CEKAlgGCM
	if mode.v3 {
		cekAlg = cse.CEKAlgGCMCommit
	}
	dk, wrapped, err := p.GenerateKey(ctx, cse.KeyRequest{CEKAlg: cekAlg, Object: "s3://" + e.Bucket + "/" + key})
	if err != nil {
		return fmt.Errorf("GenerateKey: %w", err)
	}
	defer cse.Zero(dk)
	params, ck, err := cse.NewParams(cekAlg, dk, rand.Reader)
	if err != nil {
		return err
	}
	defer cse.Zero(ck)
	plainLen := int64(len(plain))
	if mode.multipart {
		plainLen = -1 // unknown when the upload starts, as in EMRFS/J3 (§11.5)
	}
	envl := metadata.NewEnvelope(params.IV, wrapped, plainLen)
	if mode.v3 {
		if envl, err = metadata.NewEnvelopeFor(params, wrapped); err != nil {
			return err
		}
	}
	objMeta := envl.Metadata()
	if mode.instruction {
		if _, err := e.S3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &e.Bucket, Key: aws.String(metadata.InstructionKey(key)),
			Body: bytes.NewReader(envl.Instruction()), Metadata: metadata.InstructionMetadata(),
		}); err != nil {
			return fmt.Errorf("put instruction: %w", err)
		}
		objMeta = envl.ObjectMetadata()
	}
	if !mode.multipart {
		var body bytes.Buffer
		w, err := params.NewEncryptWriter(&body, ck)
		if err != nil {
			return err
		}
		if _, err := w.Write(plain); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		_, err = e.S3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &e.Bucket, Key: &key, Body: bytes.NewReader(body.Bytes()), Metadata: objMeta,
		})
		return err
	}

	up, err := e.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &e.Bucket, Key: &key, Metadata: objMeta})
	if err != nil {
		return err
	}
	sealer, err := params.NewSealer(ck)
	if err != nil {
		return err
	}
	var parts []s3types.CompletedPart
	for num := int32(1); ; num++ {
		n := min(partSize, len(plain))
		last := n == len(plain)
		buf := make([]byte, n, n+cse.TagSize)
		if err := sealer.Seal(buf, plain[:n]); err != nil {
			return err
		}
		plain = plain[n:]
		if last {
			buf = append(buf, sealer.Tag()...)
		}
		out, err := e.S3.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &e.Bucket, Key: &key, UploadId: up.UploadId, PartNumber: aws.Int32(num), Body: bytes.NewReader(buf),
		})
		if err != nil {
			return err
		}
		parts = append(parts, s3types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		if last {
			break
		}
	}
	_, err = e.S3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &e.Bucket, Key: &key, UploadId: up.UploadId,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
	})
	return err
}

// coreEnvelope finds an object's envelope: in its metadata, else in its
// instruction file (metadata.ErrNoInstructionFile when that is missing).
func coreEnvelope(ctx context.Context, e *env, key string, objMeta map[string]string) (*metadata.Envelope, error) {
	envl, err := metadata.Detect(objMeta)
	if !errors.Is(err, metadata.ErrNoEnvelope) {
		return envl, err
	}
	out, err := e.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: &e.Bucket, Key: aws.String(metadata.InstructionKey(key))})
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("%s: %w", key, metadata.ErrNoInstructionFile)
	}
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	body, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, err
	}
	return metadata.ParseInstructionWith(body, objMeta)
}

// coreRead returns the plaintext of bucket/key, or nil and an error. It
// reads everything before returning, so no unauthenticated byte escapes.
func coreRead(ctx context.Context, e *env, p cse.Provider, key string) ([]byte, error) {
	out, err := e.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: &e.Bucket, Key: &key})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	envl, err := coreEnvelope(ctx, e, key, out.Metadata)
	if err != nil {
		return nil, err
	}
	dk, err := p.DecryptKey(ctx, envl.Key)
	if err != nil {
		return nil, err
	}
	defer cse.Zero(dk)
	ck, err := envl.Params().ContentKey(dk)
	if err != nil {
		return nil, err
	}
	defer cse.Zero(ck)
	c, err := envl.Content(aws.ToInt64(out.ContentLength))
	if err != nil {
		return nil, err
	}
	r, err := c.NewReader(out.Body, ck)
	if err != nil {
		return nil, err
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return plain, nil
}

// mustCoreRead reads bucket/key through the core and compares it with want.
func mustCoreRead(t testing.TB, e *env, p cse.Provider, key string, want []byte) {
	t.Helper()
	got, err := coreRead(ctx, e, p, key)
	if err != nil {
		t.Fatalf("core read %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("core read %s: %d bytes differ from the %d written", key, len(got), len(want))
	}
}

// rawObject returns an object's stored body and metadata, undecrypted.
func rawObject(t testing.TB, e *env, key string) ([]byte, map[string]string) {
	t.Helper()
	out, err := e.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: &e.Bucket, Key: &key})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b, out.Metadata
}

// putRaw stores body and metadata as they are.
func putRaw(t testing.TB, e *env, key string, body []byte, meta map[string]string) {
	t.Helper()
	if _, err := e.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: &e.Bucket, Key: &key, Body: bytes.NewReader(body), Metadata: meta}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}
