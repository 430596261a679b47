package mount

// The upload journal: a record of the multipart uploads this machine's csefs
// processes have open, so that the uploads a crash (kill -9, OOM, power
// loss) leaves behind are found and aborted by the next mount. S3 keeps an
// incomplete multipart upload, and bills its parts, until it is aborted;
// ListMultipartUploads could find them, but MinIO lists the uploads of one
// exact key only, so csefs cannot rely on a bucket-wide listing.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/csefs/csefs/objectstore"
)

// ErrJournal wraps every failure to read or write the upload journal.
var ErrJournal = errors.New("upload journal")

// JournalEntry is one multipart upload the journal knows to be open.
type JournalEntry struct {
	Key      string    `json:"key"` // relative to the mount's prefix
	UploadID string    `json:"id"`
	PID      int       `json:"pid"`   // the csefs process that started it
	Start    string    `json:"start"` // that process's start time (/proc/PID/stat field 22), against pid reuse
	Time     time.Time `json:"t"`
	// Live reports whether the process that started the upload still runs
	// (filled by Entries, not stored).
	Live bool `json:"-"`
}

// journalRecord is one line of the journal file: an entry ("open") or the
// end of one ("done", UploadID and Key only).
type journalRecord struct {
	Op string `json:"op"`
	JournalEntry
}

// Journal is an append-only file of upload records, one JSON line each,
// fsync'd one by one: "open" when a multipart upload is created, "done" when
// it is completed or aborted. Several processes (two mounts of one bucket)
// may share one journal: every append and the compaction hold an exclusive
// flock on a lock file beside it, and an upload is only ever considered
// abandoned when the process that started it is gone. A torn last line (a
// crash during an append) is ignored. The methods are safe for concurrent
// use.
type Journal struct {
	path  string
	lock  *os.File
	pid   int
	start string
	log   *slog.Logger
	mu    sync.Mutex // serialises this process's use of lock
}

// JournalPath is the journal of the uploads under s3://bucket/prefix:
// $XDG_STATE_HOME/csefs/uploads/<first 16 hex digits of
// sha256(bucket "/" prefix)>.journal, with $XDG_STATE_HOME defaulting to
// ~/.local/state. prefix is "" or ends in "/".
func JournalPath(bucket, prefix string) string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".local", "state")
		} else {
			dir = filepath.Join(os.TempDir(), fmt.Sprintf("csefs-%d", os.Getuid()), "state")
		}
	}
	sum := sha256.Sum256([]byte(bucket + "/" + prefix))
	return filepath.Join(dir, "csefs", "uploads", hex.EncodeToString(sum[:])[:16]+".journal")
}

// OpenJournal opens (creating it and its directory if need be) the journal
// at path for this process. Close releases it.
func OpenJournal(path string, log *slog.Logger) (*Journal, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJournal, err)
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJournal, err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Journal{path: path, lock: lock, pid: os.Getpid(), start: procStart(os.Getpid()), log: log}, nil
}

// Close releases the journal's lock file. Records stay on disk.
func (j *Journal) Close() error { return j.lock.Close() }

// Path is the journal file's name.
func (j *Journal) Path() string { return j.path }

// locked runs fn holding the journal lock against this and other processes.
func (j *Journal) locked(fn func() error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := flock(j.lock, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("%w: lock %s: %w", ErrJournal, j.lock.Name(), err)
	}
	defer flock(j.lock, syscall.LOCK_UN)
	return fn()
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// Record appends ev to the journal and fsyncs it; it has the signature of
// objectstore.S3Options.OnUpload. A failure is logged (the upload goes on:
// the journal is a safety net, not a precondition of writing).
func (j *Journal) Record(ev objectstore.UploadEvent) {
	if err := j.append(ev); err != nil {
		j.log.Warn("upload journal: record failed; a crash now could leave this upload open",
			"object", ev.Key, "upload_id", ev.UploadID, "cause", err.Error())
	}
}

func (j *Journal) append(ev objectstore.UploadEvent) error {
	rec := journalRecord{Op: "open", JournalEntry: JournalEntry{Key: ev.Key, UploadID: ev.UploadID}}
	if ev.Done {
		rec.Op = "done"
	} else {
		rec.PID, rec.Start, rec.Time = j.pid, j.start, time.Now().UTC()
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	return j.locked(func() error {
		f, err := os.OpenFile(j.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrJournal, err)
		}
		// After a torn append (a crash mid-line) start on a new line, or
		// this record would be lost in the torn one.
		var last [1]byte
		if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
			if _, err := f.ReadAt(last[:], fi.Size()-1); err == nil && last[0] != '\n' {
				line = append([]byte{'\n'}, line...)
			}
		}
		if _, err := f.Write(line); err != nil {
			f.Close()
			return fmt.Errorf("%w: %w", ErrJournal, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("%w: %w", ErrJournal, err)
		}
		return f.Close()
	})
}

// read returns the open entries in the order they were recorded. j's lock
// is held.
func (j *Journal) read() ([]JournalEntry, error) {
	data, err := os.ReadFile(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJournal, err)
	}
	type id struct{ key, upload string }
	open := map[id]int{}
	var entries []JournalEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec journalRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.UploadID == "" {
			continue // a torn line left by a crash during an append
		}
		k := id{rec.Key, rec.UploadID}
		switch rec.Op {
		case "open":
			open[k] = len(entries)
			entries = append(entries, rec.JournalEntry)
		case "done":
			if i, ok := open[k]; ok {
				entries[i].UploadID = "" // tombstone
				delete(open, k)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJournal, err)
	}
	live := entries[:0]
	for _, e := range entries {
		if e.UploadID != "" {
			e.Live = ownerAlive(e.PID, e.Start)
			live = append(live, e)
		}
	}
	return live, nil
}

// Entries returns the uploads the journal holds as open, each marked Live
// when the process that started it is still running.
func (j *Journal) Entries() ([]JournalEntry, error) {
	var entries []JournalEntry
	err := j.locked(func() (err error) {
		entries, err = j.read()
		return err
	})
	return entries, err
}

// Compact rewrites the journal with only its open entries (atomically: a
// temporary file renamed over it, both fsync'd).
func (j *Journal) Compact() error {
	return j.locked(func() error {
		entries, err := j.read()
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		for _, e := range entries {
			line, err := json.Marshal(journalRecord{Op: "open", JournalEntry: e})
			if err != nil {
				return err
			}
			buf.Write(line)
			buf.WriteByte('\n')
		}
		return writeFileSync(j.path, buf.Bytes())
	})
}

// writeFileSync replaces path by data durably.
func writeFileSync(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// UploadAborter aborts one multipart upload (objectstore.S3Store does).
// An upload that no longer exists must not be an error.
type UploadAborter interface {
	AbortUpload(ctx context.Context, key, uploadID string) error
}

var _ UploadAborter = (*objectstore.S3Store)(nil)

// AbortAbandoned aborts every upload in the journal whose process is gone,
// records each abort, logs it, and compacts the journal. Uploads whose abort
// fails stay in the journal for the next attempt; the first such error is
// returned after all were tried. It returns the entries it aborted.
func AbortAbandoned(ctx context.Context, j *Journal, store UploadAborter, log *slog.Logger) ([]JournalEntry, error) {
	entries, err := j.Entries()
	if err != nil {
		return nil, err
	}
	var aborted []JournalEntry
	var first error
	for _, e := range entries {
		if e.Live {
			continue
		}
		if err := store.AbortUpload(ctx, e.Key, e.UploadID); err != nil {
			log.Warn("could not abort an upload left open by a previous csefs process",
				"object", e.Key, "upload_id", e.UploadID, "cause", err.Error())
			if first == nil {
				first = err
			}
			continue
		}
		log.Info("aborted an upload left open by a previous csefs process",
			"object", e.Key, "upload_id", e.UploadID, "pid", e.PID, "started", e.Time)
		if err := j.append(objectstore.UploadEvent{Key: e.Key, UploadID: e.UploadID, Done: true}); err != nil && first == nil {
			first = err
		}
		aborted = append(aborted, e)
	}
	if err := j.Compact(); err != nil && first == nil {
		first = err
	}
	return aborted, first
}

// procStart is the start time of process pid in clock ticks since boot
// (field 22 of /proc/PID/stat), "" if unknown.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}

// ownerAlive reports whether the process pid, started at start, still
// runs. A different start time means the pid was reused.
func ownerAlive(pid int, start string) bool {
	if pid <= 0 {
		return false
	}
	now := procStart(pid)
	return now != "" && (start == "" || now == start)
}

// UploadInfo is one incomplete multipart upload, as `csefs uploads` shows it.
type UploadInfo struct {
	Key       string // relative to the source's prefix
	UploadID  string
	Initiated time.Time
	// InJournal: recorded in this machine's journal, by process PID, which
	// is still running when Live. Otherwise the upload was found only by
	// ListMultipartUploads (another machine's, or a pre-journal one).
	InJournal bool
	PID       int
	Live      bool
}

// uploadsStore opens the store and the journal of an s3:// source.
func uploadsStore(ctx context.Context, cfg Config, log *slog.Logger) (*objectstore.S3Store, *Journal, error) {
	src, err := parseSource(cfg.Source)
	if err != nil {
		return nil, nil, err
	}
	if src.scheme != "s3" {
		return nil, nil, fmt.Errorf("%s: only s3:// sources have multipart uploads", cfg.Source)
	}
	c, err := loadAWSConfig(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	store := objectstore.NewS3(newS3Client(*c, cfg, log), src.bucket, src.prefix, objectstore.S3Options{})
	j, err := OpenJournal(JournalPath(src.bucket, src.prefix), log)
	if err != nil {
		return nil, nil, err
	}
	return store, j, nil
}

// ListUploads lists the incomplete multipart uploads of cfg.Source (an
// s3:// URL; cfg's endpoint, region and path-style are used): those in this
// machine's journal, and those ListMultipartUploads returns. The listing is
// best effort: MinIO's lists only uploads of one exact key, so against MinIO
// only the journal finds them; a listing failure is returned along with the
// journal's entries.
func ListUploads(ctx context.Context, cfg Config, log *slog.Logger) ([]UploadInfo, error) {
	store, j, err := uploadsStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	return listUploads(ctx, store, j)
}

func listUploads(ctx context.Context, store *objectstore.S3Store, j *Journal) ([]UploadInfo, error) {
	entries, err := j.Entries()
	if err != nil {
		return nil, err
	}
	var out []UploadInfo
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.UploadID] = true
		out = append(out, UploadInfo{Key: e.Key, UploadID: e.UploadID, Initiated: e.Time, InJournal: true, PID: e.PID, Live: e.Live})
	}
	ups, err := store.ListUploads(ctx)
	for _, u := range ups {
		if !seen[u.UploadID] {
			out = append(out, UploadInfo{Key: u.Key, UploadID: u.UploadID, Initiated: u.Initiated})
		}
	}
	return out, err
}

// AbortUploads aborts the incomplete multipart uploads of cfg.Source that
// no running csefs process on this machine owns: those of dead processes in
// the journal, and those only ListMultipartUploads finds that were initiated
// at least olderThan ago. Beware: an upload found by the listing may belong
// to a csefs (or other writer) on another machine, whose write then fails;
// use olderThan to spare recent ones. It returns what it aborted; after an
// error, what was aborted before it.
func AbortUploads(ctx context.Context, cfg Config, olderThan time.Duration, log *slog.Logger) ([]UploadInfo, error) {
	store, j, err := uploadsStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	var out []UploadInfo
	aborted, err := AbortAbandoned(ctx, j, store, log)
	for _, e := range aborted {
		out = append(out, UploadInfo{Key: e.Key, UploadID: e.UploadID, Initiated: e.Time, InJournal: true, PID: e.PID})
	}
	if err != nil {
		return out, err
	}
	all, err := listUploads(ctx, store, j)
	if err != nil {
		return out, err
	}
	live := liveUploadIDs(filepath.Dir(j.Path()), log)
	for _, u := range all {
		if u.InJournal || live[u.UploadID] || time.Since(u.Initiated) < olderThan {
			continue
		}
		if err := store.AbortUpload(ctx, u.Key, u.UploadID); err != nil {
			return out, err
		}
		log.Info("aborted an incomplete upload", "object", u.Key, "upload_id", u.UploadID, "initiated", u.Initiated)
		out = append(out, u)
	}
	return out, nil
}

// liveUploadIDs are the uploads that running csefs processes on this
// machine own according to any journal in dir (a mount of a sub-prefix keeps
// its own journal, yet a listing of the parent prefix shows its uploads).
func liveUploadIDs(dir string, log *slog.Logger) map[string]bool {
	live := map[string]bool{}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.journal"))
	for _, p := range paths {
		j, err := OpenJournal(p, log)
		if err != nil {
			continue
		}
		entries, _ := j.Entries()
		j.Close()
		for _, e := range entries {
			if e.Live {
				live[e.UploadID] = true
			}
		}
	}
	return live
}
