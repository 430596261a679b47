package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// sdkPartSize and sdkConcurrency are the SDK baseline's multipart and ranged
// GET shape: 16 MiB parts or ranges, 8 in flight.
const (
	sdkPartSize    = 16 << 20
	sdkConcurrency = 8
)

// forEach runs fn(i) for i in [0,n) on conc goroutines and returns the first
// error; after an error, indices not yet started are skipped.
func forEach(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		if ctx.Err() != nil { // select below picks at random when both are ready
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// sdkUpload uploads the file at path (size bytes) to bucket/key as a
// multipart upload of partSize parts, conc at once, reading each part
// straight from the file. It aborts the upload on failure.
func sdkUpload(ctx context.Context, c *s3.Client, bucket, key, path string, size, partSize int64, conc int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return fmt.Errorf("CreateMultipartUpload: %w", err)
	}
	nparts := int((size + partSize - 1) / partSize)
	parts := make([]types.CompletedPart, nparts)
	err = forEach(ctx, nparts, conc, func(ctx context.Context, i int) error {
		off := int64(i) * partSize
		n := min(partSize, size-off)
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &bucket, Key: &key, UploadId: cr.UploadId,
			PartNumber:    aws.Int32(int32(i + 1)),
			Body:          io.NewSectionReader(f, off, n),
			ContentLength: aws.Int64(n),
		})
		if err != nil {
			return fmt.Errorf("UploadPart %d: %w", i+1, err)
		}
		parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
		return nil
	})
	if err == nil {
		_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: &bucket, Key: &key, UploadId: cr.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		if err != nil {
			err = fmt.Errorf("CompleteMultipartUpload: %w", err)
		}
	}
	if err != nil {
		_, _ = c.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: cr.UploadId})
	}
	return err
}

// sdkRangedGet reads bucket/key (size bytes) into io.Discard with ranged
// GETs of rng bytes, conc at once, and checks every range's length.
func sdkRangedGet(ctx context.Context, c *s3.Client, bucket, key string, size, rng int64, conc int) error {
	n := int((size + rng - 1) / rng)
	return forEach(ctx, n, conc, func(ctx context.Context, i int) error {
		off := int64(i) * rng
		want := min(rng, size-off)
		_, err := getRange(ctx, c, bucket, key, off, want, io.Discard)
		return err
	})
}

// getRange GETs [off, off+n) of bucket/key into w and checks the length.
func getRange(ctx context.Context, c *s3.Client, bucket, key string, off, n int64, w io.Writer) (int64, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{
		Bucket: &bucket, Key: &key, Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	})
	if err != nil {
		return 0, fmt.Errorf("GET %s range %d+%d: %w", key, off, n, err)
	}
	defer out.Body.Close()
	got, err := io.Copy(w, out.Body)
	if err == nil && got != n {
		err = fmt.Errorf("GET %s range %d+%d: got %d bytes", key, off, n, got)
	}
	return got, err
}

// sdkGet reads bucket/key in one GET into io.Discard and returns its length.
func sdkGet(ctx context.Context, c *s3.Client, bucket, key string) (int64, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", key, err)
	}
	defer out.Body.Close()
	return io.Copy(io.Discard, out.Body)
}

// sdkPuts stores n objects prefix%05d of body, conc at once.
func sdkPuts(ctx context.Context, c *s3.Client, bucket, prefix string, body []byte, n, conc int) error {
	return forEach(ctx, n, conc, func(ctx context.Context, i int) error {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &bucket, Key: aws.String(fmt.Sprintf("%s%05d", prefix, i)),
			Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
		})
		return err
	})
}

// sdkList lists every key under prefix with ListObjectsV2's default pages
// (1000 keys) and returns how many it saw, not counting directory markers
// (keys ending in "/").
func sdkList(ctx context.Context, c *s3.Client, bucket, prefix string) (int, error) {
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	n := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return n, err
		}
		for _, o := range page.Contents {
			if !strings.HasSuffix(aws.ToString(o.Key), "/") {
				n++
			}
		}
	}
	return n, nil
}

// sdkListHead lists every key under prefix and HEADs each one, conc at
// once, as the pages arrive: the least an exact ls -l of encrypted objects
// costs when mode, owner and plaintext size live in object metadata.
func sdkListHead(ctx context.Context, c *s3.Client, bucket, prefix string, conc int) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	keys := make(chan string, 1000)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for k := range keys {
				if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &k}); err != nil {
					cancel(err)
				}
			}
		})
	}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	n := 0
	var err error
	for p.HasMorePages() && err == nil {
		var page *s3.ListObjectsV2Output
		if page, err = p.NextPage(ctx); err != nil {
			break
		}
		for _, o := range page.Contents {
			if k := aws.ToString(o.Key); !strings.HasSuffix(k, "/") {
				n++
				keys <- k
			}
		}
	}
	close(keys)
	wg.Wait()
	if err == nil {
		err = context.Cause(ctx)
	}
	return n, err
}

// sdkCopies server-side copies src to dstPrefix%05d, n times, conc at once,
// keeping src's metadata (and so its S3EC envelope).
func sdkCopies(ctx context.Context, c *s3.Client, bucket, src, dstPrefix string, n, conc int) error {
	source := bucket + "/" + src
	return forEach(ctx, n, conc, func(ctx context.Context, i int) error {
		_, err := c.CopyObject(ctx, &s3.CopyObjectInput{
			Bucket: &bucket, Key: aws.String(fmt.Sprintf("%s%05d", dstPrefix, i)),
			CopySource: &source, MetadataDirective: types.MetadataDirectiveCopy,
		})
		return err
	})
}

// randomOffsets returns n offsets in [0, size-blk], multiples of blk, from a
// fixed seed so that csefs and the SDK read the same places.
func randomOffsets(n int, size, blk int64) []int64 {
	r := rand.New(rand.NewPCG(1, 2))
	offs := make([]int64, n)
	for i := range offs {
		offs[i] = r.Int64N(size/blk) * blk
	}
	return offs
}

// sdkPreads times one ranged GET of blk bytes at each offset, one at a time.
func sdkPreads(ctx context.Context, c *s3.Client, bucket, key string, offs []int64, blk int64) ([]time.Duration, error) {
	lat := make([]time.Duration, len(offs))
	for i, off := range offs {
		t0 := time.Now()
		if _, err := getRange(ctx, c, bucket, key, off, blk, io.Discard); err != nil {
			return nil, err
		}
		lat[i] = time.Since(t0)
	}
	return lat, nil
}
