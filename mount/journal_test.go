package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/csefs/csefs/objectstore"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func openTestJournal(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := OpenJournal(path, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// fakeAborter records aborts and fails those of keys in fail.
type fakeAborter struct {
	mu      sync.Mutex
	aborted []string
	fail    map[string]bool
}

func (a *fakeAborter) AbortUpload(ctx context.Context, key, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail[key] {
		return errors.New("injected abort failure")
	}
	a.aborted = append(a.aborted, key+"/"+id)
	return nil
}

// appendRaw adds lines to the journal file as another (dead) process would.
func appendRaw(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l); err != nil {
			t.Fatal(err)
		}
	}
}

func keysOf(es []JournalEntry) []string {
	var ks []string
	for _, e := range es {
		ks = append(ks, fmt.Sprintf("%s/%s live=%v", e.Key, e.UploadID, e.Live))
	}
	return ks
}

func TestJournalPath(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/state")
	a, b := JournalPath("bucket", "pre/"), JournalPath("bucket", "")
	if a == b || !strings.HasPrefix(a, "/state/csefs/uploads/") || !strings.HasSuffix(a, ".journal") ||
		len(filepath.Base(a)) != 16+len(".journal") {
		t.Errorf("JournalPath: %q, %q", a, b)
	}
	if JournalPath("bucket", "pre/") != a {
		t.Error("JournalPath is not deterministic")
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if p := JournalPath("bucket", ""); !strings.HasPrefix(p, "/home/u/.local/state/csefs/uploads/") {
		t.Errorf("default JournalPath %q", p)
	}
}

// TestJournalOpenDone: open records stay until their done record; this
// process's entries are live.
func TestJournalOpenDone(t *testing.T) {
	j := openTestJournal(t, filepath.Join(t.TempDir(), "sub", "j.journal"))
	j.Record(objectstore.UploadEvent{Key: "a", UploadID: "1"})
	j.Record(objectstore.UploadEvent{Key: "b", UploadID: "2"})
	j.Record(objectstore.UploadEvent{Key: "a", UploadID: "3"})
	j.Record(objectstore.UploadEvent{Key: "a", UploadID: "1", Done: true})
	j.Record(objectstore.UploadEvent{Key: "zz", UploadID: "9", Done: true}) // done of an unknown upload
	es, err := j.Entries()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"b/2 live=true", "a/3 live=true"}
	if got := keysOf(es); !slices.Equal(got, want) {
		t.Errorf("entries %q, want %q", got, want)
	}
	if es[0].PID != os.Getpid() || es[0].Start == "" || es[0].Time.IsZero() {
		t.Errorf("entry %+v lacks its owner", es[0])
	}
}

// TestJournalAbortAbandoned: uploads of dead processes (and of a reused
// pid) are aborted, logged as done and compacted away; live ones stay; a
// failed abort stays for next time; a torn last line is ignored.
func TestJournalAbortAbandoned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.journal")
	j := openTestJournal(t, path)
	j.Record(objectstore.UploadEvent{Key: "mine", UploadID: "m"})
	appendRaw(t, path,
		`{"op":"open","key":"dead","id":"d1","pid":999999999,"start":"1"}`+"\n",
		`{"op":"open","key":"reused","id":"r1","pid":`+fmt.Sprint(os.Getpid())+`,"start":"not-my-start"}`+"\n",
		`{"op":"open","key":"stuck","id":"s1","pid":999999998,"start":"1"}`+"\n",
		`{"op":"open","key":"finished","id":"f1","pid":999999997,"start":"1"}`+"\n",
		`{"op":"done","key":"finished","id":"f1"}`+"\n",
		`{"op":"open","key":"torn","id":"t`, // a crash during an append
	)
	ab := &fakeAborter{fail: map[string]bool{"stuck": true}}
	aborted, err := AbortAbandoned(context.Background(), j, ab, discard)
	if err == nil {
		t.Error("a failed abort was not reported")
	}
	if got, want := keysOf(aborted), []string{"dead/d1 live=false", "reused/r1 live=false"}; !slices.Equal(got, want) {
		t.Errorf("aborted %q, want %q", got, want)
	}
	if want := []string{"dead/d1", "reused/r1"}; !slices.Equal(ab.aborted, want) {
		t.Errorf("store aborts %q, want %q", ab.aborted, want)
	}
	es, err := j.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keysOf(es), []string{"mine/m live=true", "stuck/s1 live=false"}; !slices.Equal(got, want) {
		t.Errorf("after recovery %q, want %q", got, want)
	}
	// Compacted: one line per remaining entry, nothing else.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 2 || strings.Contains(string(b), `"done"`) {
		t.Errorf("compacted journal:\n%s", b)
	}
	// Appends after compaction go to the new file.
	j.Record(objectstore.UploadEvent{Key: "mine", UploadID: "m", Done: true})
	delete(ab.fail, "stuck")
	if _, err := AbortAbandoned(context.Background(), j, ab, discard); err != nil {
		t.Fatal(err)
	}
	if es, err := j.Entries(); err != nil || len(es) != 0 {
		t.Errorf("entries at the end: %q, %v", keysOf(es), err)
	}
}

// TestJournalShared: two journals on one file (two mounts of one bucket),
// written from many goroutines while one compacts, lose no record.
func TestJournalShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.journal")
	js := []*Journal{openTestJournal(t, path), openTestJournal(t, path)}
	const per = 50
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := js[g%2]
			for i := range per {
				id := fmt.Sprintf("%d-%d", g, i)
				j.Record(objectstore.UploadEvent{Key: "k", UploadID: id})
				if i%2 == 0 {
					j.Record(objectstore.UploadEvent{Key: "k", UploadID: id, Done: true})
				}
				if i%10 == 0 {
					if err := j.Compact(); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute): // not a timing requirement: it only turns a hang into a failure
		t.Fatal("the writers of the shared journal: not done after a minute (hung?)")
	}
	es, err := js[0].Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 8*per/2 {
		t.Fatalf("%d open entries, want %d", len(es), 8*per/2)
	}
	for _, e := range es {
		var g, i int
		if _, err := fmt.Sscanf(e.UploadID, "%d-%d", &g, &i); err != nil || i%2 != 1 || !e.Live {
			t.Errorf("unexpected entry %+v", e)
		}
	}
}

func TestOwnerAlive(t *testing.T) {
	me := os.Getpid()
	start := procStart(me)
	if start == "" {
		t.Skip("no /proc")
	}
	for _, tc := range []struct {
		pid   int
		start string
		want  bool
	}{
		{me, start, true},
		{me, "", true},
		{me, start + "0", false},
		{0, "", false},
		{-1, "", false},
		{999999999, "", false},
	} {
		if got := ownerAlive(tc.pid, tc.start); got != tc.want {
			t.Errorf("ownerAlive(%d, %q) = %v", tc.pid, tc.start, got)
		}
	}
}

// TestLiveUploadIDs: every journal of the directory counts (a sub-prefix
// mount's too), and only uploads of running processes.
func TestLiveUploadIDs(t *testing.T) {
	dir := t.TempDir()
	a := openTestJournal(t, filepath.Join(dir, "a.journal"))
	a.Record(objectstore.UploadEvent{Key: "k", UploadID: "live-a"})
	b := openTestJournal(t, filepath.Join(dir, "b.journal"))
	b.Record(objectstore.UploadEvent{Key: "k", UploadID: "live-b"})
	b.Record(objectstore.UploadEvent{Key: "k", UploadID: "done-b"})
	b.Record(objectstore.UploadEvent{Key: "k", UploadID: "done-b", Done: true})
	appendRaw(t, filepath.Join(dir, "b.journal"), `{"op":"open","key":"k","id":"dead","pid":999999999,"start":"1"}`+"\n")
	got := liveUploadIDs(dir, discard)
	if len(got) != 2 || !got["live-a"] || !got["live-b"] {
		t.Errorf("liveUploadIDs = %v", got)
	}
}
