package objectstore

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// eventLog records OnUpload events.
type eventLog struct {
	mu  sync.Mutex
	evs []UploadEvent
}

func (l *eventLog) add(ev UploadEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, ev)
}

func (l *eventLog) take() []UploadEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	evs := l.evs
	l.evs = nil
	return evs
}

// TestS3OnUpload: the hook sees a multipart upload created and then done,
// whether it is completed, aborted by Abort, or aborted by a failed Commit;
// a single-PutObject write starts no upload and reports nothing.
func TestS3OnUpload(t *testing.T) {
	var log eventLog
	base := newMinIOStore(t, 0)
	s := withClient(base, func(*s3.Options) {})
	s.opt.OnUpload = log.add
	failing := withClient(s, func(o *s3.Options) { o.APIOptions = append(o.APIOptions, failUploadPart(1)) })
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		store  *S3Store
		size   int
		finish func(Writer) error
		events int // 0, or 2 (created, done)
	}{
		{"small-put", s, 100, func(w Writer) error { _, err := w.Commit(ctx); return err }, 0},
		{"multipart-commit", s, 2*MinPartSize + 1, func(w Writer) error { _, err := w.Commit(ctx); return err }, 2},
		{"multipart-abort", s, MinPartSize + 1, func(w Writer) error { return w.Abort(ctx) }, 2},
		{"multipart-failed-commit", failing, 3*MinPartSize + 1, func(w Writer) error {
			if _, err := w.Commit(ctx); err == nil {
				t.Error("commit with failing parts succeeded")
			}
			return nil
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := tc.store.Create(ctx, tc.name, nil)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(randBytes(2, tc.size)) // may fail for the failing store
			if err := tc.finish(w); err != nil {
				t.Fatal(err)
			}
			evs := log.take()
			if len(evs) != tc.events {
				t.Fatalf("events %+v, want %d", evs, tc.events)
			}
			if tc.events == 0 {
				return
			}
			if evs[0].Done || !evs[1].Done || evs[0].Key != tc.name || evs[1].Key != tc.name ||
				evs[0].UploadID == "" || evs[0].UploadID != evs[1].UploadID {
				t.Errorf("events %+v: want created then done, same key and id", evs)
			}
			if ups, err := s.listUploads(ctx, tc.name); err != nil || len(ups) != 0 {
				t.Errorf("uploads left open: %+v, %v", ups, err)
			}
		})
	}
	// An upload a crash leaves open has a created event and no done event.
	w, err := s.Create(ctx, "crash", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(randBytes(3, MinPartSize+1))
	evs := log.take()
	if len(evs) != 1 || evs[0].Done || !slices.ContainsFunc(mustList(t, s, "crash"), func(u Upload) bool { return u.UploadID == evs[0].UploadID }) {
		t.Errorf("open upload: events %+v", evs)
	}
	w.Abort(ctx)
}

func mustList(t *testing.T, s *S3Store, key string) []Upload {
	t.Helper()
	ups, err := s.listUploads(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return ups
}
