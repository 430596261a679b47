package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/e2e/testenv"
)

// Tests of the S3 store against faults injected by a real proxy
// (testenv.FaultProxy) in front of MinIO.

// proxiedStore returns a store on a fresh bucket reached through a fault
// proxy with policy's retries, and a store on the same bucket and prefix
// that talks to MinIO directly (to check what really landed).
func proxiedStore(t *testing.T, policy RetryPolicy) (s, direct *S3Store, p *testenv.FaultProxy) {
	t.Helper()
	srv := testenv.MinIO(t)
	p = testenv.NewFaultProxy(t, srv.Endpoint, testenv.S3Op)
	bucket := srv.NewBucket(t)
	opt := S3Options{PartSize: MinPartSize, Concurrency: 2}
	s = withClient(NewS3(srv.Via(p).Client(t), bucket, "pre", opt), func(o *s3.Options) {
		o.Retryer = policy.Retryer()
		o.APIOptions = append(o.APIOptions, policy.Middleware)
	})
	return s, NewS3(srv.Client(t), bucket, "pre", opt), p
}

func commitBody(t *testing.T, s Store, key string, body []byte, meta map[string]string) (*Info, error) {
	t.Helper()
	w, err := s.Create(context.Background(), key, meta)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		w.Abort(context.Background())
		return nil, err
	}
	return w.Commit(context.Background())
}

// TestS3LostCommitReply: the reply of a commit that the server applied is
// lost (every attempt's, for PutObject; the first, for
// CompleteMultipartUpload, whose retry then gets NoSuchUpload). The commit
// must report success, and the object must be the one written.
func TestS3LostCommitReply(t *testing.T) {
	for _, tc := range []struct {
		name  string
		op    string
		times int
		size  int
	}{
		{"PutObject", "PutObject", 0, 100 << 10},
		{"CompleteMultipartUpload", "CompleteMultipartUpload", 1, 2*MinPartSize + 123},
		{"CompleteMultipartUpload-all", "CompleteMultipartUpload", 0, MinPartSize + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, direct, p := proxiedStore(t, RetryPolicy{Deadline: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
			mustPut(t, direct, "f", []byte("old version"), map[string]string{"v": "old"})
			body := randBytes(uint64(tc.size), tc.size)
			meta := map[string]string{"v": "new", "iv": fmt.Sprint(time.Now().UnixNano())}
			p.Add(testenv.Rule{Op: tc.op, Fault: testenv.LoseReply, Times: tc.times})
			info, err := commitBody(t, s, "f", body, meta)
			if err != nil {
				t.Fatalf("Commit after a lost reply (%d faults): %v", p.Faults(tc.op), err)
			}
			if p.Faults(tc.op) == 0 {
				t.Fatal("no reply was lost")
			}
			checkObject(t, direct, "f", body, meta)
			if cur, _ := direct.Head(context.Background(), "f"); cur == nil || !etagEqual(cur.ETag, info.ETag) {
				t.Errorf("Commit's ETag %s is not the object's (%v)", info.ETag, cur)
			}
		})
	}
}

// TestS3FailedCommit: when the commit never reached the server (every
// attempt reset before it), Commit reports ErrUnavailable and the old
// object is intact.
func TestS3FailedCommit(t *testing.T) {
	for _, tc := range []struct {
		op   string
		size int
	}{{"PutObject", 1000}, {"CompleteMultipartUpload", MinPartSize + 1}} {
		t.Run(tc.op, func(t *testing.T) {
			s, direct, p := proxiedStore(t, RetryPolicy{Deadline: time.Second, MaxBackoff: 100 * time.Millisecond})
			mustPut(t, direct, "f", []byte("old version"), map[string]string{"v": "old"})
			p.Add(testenv.Rule{Op: tc.op, Fault: testenv.Reset})
			_, err := commitBody(t, s, "f", randBytes(9, tc.size), map[string]string{"v": "new"})
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Commit = %v, want ErrUnavailable", err)
			}
			checkObject(t, direct, "f", []byte("old version"), map[string]string{"v": "old"})
		})
	}
}

// TestS3LostCopyAndDeleteReply: rename's copy and delete whose replies are
// lost after the server applied them succeed.
func TestS3LostCopyAndDeleteReply(t *testing.T) {
	s, direct, p := proxiedStore(t, RetryPolicy{Deadline: time.Second, MaxBackoff: 100 * time.Millisecond})
	body := randBytes(3, 5000)
	src := mustPut(t, direct, "src", body, map[string]string{"iv": "1"})
	p.Add(testenv.Rule{Op: "CopyObject", Fault: testenv.LoseReply})
	p.Add(testenv.Rule{Op: "DeleteObject", Fault: testenv.LoseReply})
	if _, err := s.Copy(context.Background(), "src", "dst", CopyOptions{IfMatch: src.ETag}); err != nil {
		t.Fatalf("Copy after a lost reply: %v", err)
	}
	if _, err := s.Copy(context.Background(), "src", "src", CopyOptions{IfMatch: src.ETag, Metadata: map[string]string{"iv": "1", "mode": "600"}}); err != nil {
		t.Fatalf("self-Copy after a lost reply: %v", err)
	}
	checkObject(t, direct, "dst", body, map[string]string{"iv": "1"})
	checkObject(t, direct, "src", body, map[string]string{"iv": "1", "mode": "600"})
	if err := s.Delete(context.Background(), "src"); err != nil {
		t.Fatalf("Delete after a lost reply: %v", err)
	}
	if p.Faults("CopyObject") < 2 || p.Faults("DeleteObject") == 0 {
		t.Fatalf("faults: copy %d, delete %d", p.Faults("CopyObject"), p.Faults("DeleteObject"))
	}
	if _, err := direct.Head(context.Background(), "src"); !errors.Is(err, ErrNotFound) {
		t.Errorf("src after Delete: %v", err)
	}
}

// TestS3CutBodies: with 30% of GET bodies cut at a random byte, every read
// returns the whole object, byte for byte (resumed from the last good
// offset, pinned to the ETag).
func TestS3CutBodies(t *testing.T) {
	s, direct, p := proxiedStore(t, RetryPolicy{Deadline: 10 * time.Second})
	body := randBytes(11, 3<<20)
	mustPut(t, direct, "f", body, nil)
	p.Add(testenv.Rule{Op: "GetObject", Fault: testenv.CutBody, Rate: 0.3})
	p.Add(testenv.Rule{Op: "GetObject(range)", Fault: testenv.CutBody, Rate: 0.3})
	const reads = 40
	for i := 0; i < reads; i++ {
		off := int64(i) * 50_000
		got, _ := mustGet(t, s, "f", GetOptions{Offset: off, Length: -1})
		if !bytes.Equal(got, body[off:]) {
			t.Fatalf("read %d at %d: %d bytes, content differs", i, off, len(got))
		}
	}
	t.Logf("%d of %d GETs cut", p.Faults(""), p.Requests(""))
	if p.Faults("") == 0 {
		t.Fatal("no body was cut")
	}
}

// TestS3CutBodyChanged: a body cut after the object was overwritten is not
// resumed from the new version: the read fails with ErrPreconditionFailed.
func TestS3CutBodyChanged(t *testing.T) {
	s, direct, p := proxiedStore(t, RetryPolicy{Deadline: 2 * time.Second})
	mustPut(t, direct, "f", randBytes(1, 1<<20), nil)
	p.Add(testenv.Rule{Op: "GetObject", Fault: testenv.CutBody, CutAfter: 1000, Times: 1})
	rc, _, err := s.Get(context.Background(), "f", GetOptions{Length: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 500)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	mustPut(t, direct, "f", randBytes(2, 1<<20), nil)
	_, err = io.Copy(io.Discard, rc)
	if !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("read across an overwrite = %v, want ErrPreconditionFailed", err)
	}
}

// TestS3Outage: an endpoint that refuses connections for 5 s in the middle
// of a multipart write and of a read is ridden out (default deadline).
func TestS3Outage(t *testing.T) {
	s, direct, p := proxiedStore(t, RetryPolicy{})
	body := randBytes(21, 3*MinPartSize)
	mustPut(t, direct, "r", body, nil)
	w, err := s.Create(context.Background(), "w", map[string]string{"v": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body[:MinPartSize+1]); err != nil {
		t.Fatal(err)
	}
	if err := p.Outage(true); err != nil {
		t.Fatal(err)
	}
	restored := make(chan error, 1)
	time.AfterFunc(5*time.Second, func() { restored <- p.Outage(false) })
	if _, err := w.Write(body[MinPartSize+1:]); err != nil {
		t.Fatalf("Write during the outage: %v", err)
	}
	got, _ := mustGet(t, s, "r", GetOptions{Length: -1}) // during or after
	if !bytes.Equal(got, body) {
		t.Fatal("read during the outage: content differs")
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatalf("Commit after the outage: %v", err)
	}
	if err := recvOrFail(t, restored, "the end of the outage"); err != nil {
		t.Fatal(err)
	}
	checkObject(t, direct, "w", body, map[string]string{"v": "1"})
}

// TestS3Throttling: 503 SlowDown is backed off and counted.
func TestS3Throttling(t *testing.T) {
	var throttles atomic.Int64
	var retried atomic.Int64
	s, direct, p := proxiedStore(t, RetryPolicy{Throttles: &throttles, OnRetry: func(string, int, error, bool) { retried.Add(1) }})
	p.Add(testenv.Rule{Op: "PutObject", Fault: testenv.SlowDown, Times: 3})
	mustPut(t, s, "f", []byte("x"), nil)
	checkObject(t, direct, "f", []byte("x"), nil)
	if throttles.Load() != 3 || retried.Load() != 3 {
		t.Errorf("throttles counted %d, retries %d, want 3 and 3", throttles.Load(), retried.Load())
	}
}

// TestS3RetryDeadline: past the deadline the operation fails with
// ErrUnavailable, naming the deadline.
func TestS3RetryDeadline(t *testing.T) {
	s, _, p := proxiedStore(t, RetryPolicy{Deadline: 500 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err := p.Outage(true); err != nil {
		t.Fatal(err)
	}
	_, err := s.Head(context.Background(), "f")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Head during an outage = %v, want ErrUnavailable", err)
	}
	var d *deadlineReached
	if !errors.As(err, &d) || d.attempts < 2 {
		t.Errorf("error %v: want retries until the deadline", err)
	}
}

// TestS3LostConditionalCommitReply: a conditional commit (CreateIfMatch,
// as the bucket tools' encrypt and rewrap use) whose first reply is lost
// after the server applied it is retried by the SDK, and the retry fails its
// If-Match (412) because the object is now the one this commit wrote. The
// commit must still report success.
func TestS3LostConditionalCommitReply(t *testing.T) {
	for _, tc := range []struct {
		op   string
		size int
	}{{"PutObject", 100 << 10}, {"CompleteMultipartUpload", MinPartSize + 1}} {
		t.Run(tc.op, func(t *testing.T) {
			s, direct, p := proxiedStore(t, RetryPolicy{Deadline: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
			old := mustPut(t, direct, "f", []byte("old version"), map[string]string{"v": "old"})
			body := randBytes(uint64(tc.size), tc.size)
			meta := map[string]string{"v": "new", "iv": fmt.Sprint(time.Now().UnixNano())}
			p.Add(testenv.Rule{Op: tc.op, Fault: testenv.LoseReply, Times: 1})
			w, err := s.CreateIfMatch(context.Background(), "f", meta, old.ETag)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(body); err != nil {
				t.Fatal(err)
			}
			info, err := w.Commit(context.Background())
			if p.Faults(tc.op) == 0 {
				t.Fatal("no reply was lost")
			}
			if err != nil {
				t.Fatalf("conditional Commit after a lost reply: %v", err)
			}
			checkObject(t, direct, "f", body, meta)
			if cur, _ := direct.Head(context.Background(), "f"); cur == nil || !etagEqual(cur.ETag, info.ETag) {
				t.Errorf("Commit's ETag %s is not the object's (%v)", info.ETag, cur)
			}
		})
	}
}

// TestS3AmbiguousCopyNeedsUniqueMetadata: a copy of a multipart source
// (whose ETag does not carry over, so only size and metadata can prove a
// copy landed) that never reached the server must not be taken as done
// because the old dst has the same size and the same metadata (a plaintext
// object's attributes): rename would then delete the source. Only a copy
// marked WithUniqueMetadata (an envelope with its own IV) is proved by its
// metadata, and such a copy whose reply was lost reports success.
func TestS3AmbiguousCopyNeedsUniqueMetadata(t *testing.T) {
	ctx := context.Background()
	s, direct, p := proxiedStore(t, RetryPolicy{Deadline: time.Second, MaxBackoff: 100 * time.Millisecond})
	body := randBytes(5, MinPartSize+10)
	meta := map[string]string{"csefs-mode": "100644"}
	src, err := commitBody(t, direct, "src", body, meta)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(src.ETag, "-") {
		t.Fatalf("source ETag %s is not a multipart one", src.ETag)
	}
	oldDst := randBytes(6, len(body))
	mustPut(t, direct, "dst", oldDst, meta)
	p.Add(testenv.Rule{Op: "CopyObject", Fault: testenv.Reset})
	if _, err := s.Copy(ctx, "src", "dst", CopyOptions{IfMatch: src.ETag}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("copy that never arrived onto an object of the same size and attributes: %v, want ErrUnavailable", err)
	}
	checkObject(t, direct, "dst", oldDst, meta)
	p.Clear()
	p.Add(testenv.Rule{Op: "CopyObject", Fault: testenv.LoseReply})
	if _, err := s.Copy(WithUniqueMetadata(ctx), "src", "dst2", CopyOptions{IfMatch: src.ETag}); err != nil {
		t.Errorf("marked copy applied, reply lost: %v, want success", err)
	}
	checkObject(t, direct, "dst2", body, meta)
}

// TestS3LostMultipartCopyReply: a multipart copy (UploadPartCopy, above the
// CopyObject limit; here a small threshold) whose CompleteMultipartUpload
// was applied and its reply lost (once: the SDK's retry gets NoSuchUpload,
// or 412 for a self-copy; or every attempt) reports success, and the copy
// is there. A completion that never arrived still fails.
func TestS3LostMultipartCopyReply(t *testing.T) {
	ctx := context.Background()
	for _, times := range []int{1, 0} {
		t.Run(fmt.Sprint("times=", times), func(t *testing.T) {
			s, direct, p := proxiedStore(t, RetryPolicy{Deadline: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
			s.copyThreshold, s.copyPartSize = MinPartSize, MinPartSize
			body := randBytes(11, 2*MinPartSize+100)
			src := mustPut(t, direct, "src", body, map[string]string{"iv": "1"})
			p.Add(testenv.Rule{Op: "CompleteMultipartUpload", Fault: testenv.LoseReply, Times: times})
			if _, err := s.Copy(ctx, "src", "dst", CopyOptions{IfMatch: src.ETag}); err != nil {
				t.Errorf("multipart copy after a lost reply: %v", err)
			}
			checkObject(t, direct, "dst", body, map[string]string{"iv": "1"})
			n := p.Faults("CompleteMultipartUpload")
			if n == 0 {
				t.Fatal("no reply was lost")
			}
			p.Clear()
			p.Add(testenv.Rule{Op: "CompleteMultipartUpload", Fault: testenv.LoseReply, Times: times})
			meta := map[string]string{"iv": "1", "mode": "600"}
			if _, err := s.Copy(ctx, "src", "src", CopyOptions{IfMatch: src.ETag, Metadata: meta}); err != nil {
				t.Errorf("multipart self-copy after a lost reply: %v", err)
			}
			checkObject(t, direct, "src", body, meta)
			if p.Faults("CompleteMultipartUpload") == n {
				t.Fatal("no self-copy reply was lost")
			}
			p.Clear()
			p.Add(testenv.Rule{Op: "CompleteMultipartUpload", Fault: testenv.Reset})
			if _, err := s.Copy(ctx, "src", "dst3", CopyOptions{}); !errors.Is(err, ErrUnavailable) {
				t.Errorf("multipart copy whose completion never arrived: %v, want ErrUnavailable", err)
			}
			if _, err := direct.Head(ctx, "dst3"); !errors.Is(err, ErrNotFound) {
				t.Errorf("dst3 after a failed copy: %v", err)
			}
		})
	}
}

// TestS3CopyWithSource: a copy whose caller says what src is
// (CopyOptions.Source, pinned by IfMatch) sends the CopyObject alone; one
// without it reads src first (a HEAD). A remote store is a round trip away:
// rsync's rename and tar's chmod and utimes each cost one less.
func TestS3CopyWithSource(t *testing.T) {
	s, _, p := proxiedStore(t, RetryPolicy{})
	ctx := context.Background()
	info, err := s.Put(ctx, "f", []byte("body"), map[string]string{"v": "1"})
	if err != nil {
		t.Fatal(err)
	}
	heads, copies := p.Requests("HeadObject"), p.Requests("CopyObject")
	if _, err := s.Copy(ctx, "f", "g", CopyOptions{IfMatch: info.ETag, Source: info}); err != nil {
		t.Fatal(err)
	}
	if n := p.Requests("HeadObject") - heads; n != 0 {
		t.Errorf("a copy with Source made %d HEADs, want 0", n)
	}
	if n := p.Requests("CopyObject") - copies; n != 1 {
		t.Errorf("a copy with Source made %d CopyObjects, want 1", n)
	}
	heads = p.Requests("HeadObject")
	if _, err := s.Copy(ctx, "f", "h", CopyOptions{IfMatch: info.ETag}); err != nil {
		t.Fatal(err)
	}
	if n := p.Requests("HeadObject") - heads; n != 1 {
		t.Errorf("a copy without Source made %d HEADs, want 1 (it must learn the size)", n)
	}
}
