package fusefs

// Rename intents. A directory is renamed object by object (rename.go), so a
// crash in the middle leaves both trees. Before its first copy, a directory
// rename stores its intent as an object in the bucket, under
// IntentPrefix at the mount's root, and deletes it after its last delete.
// An intent left behind is finished (rolled forward: the copies redone, the
// source deleted) by the next mount, by a later rename that touches either
// tree, or by `csefs recover`. So a second `mv src dst` after a crash never
// nests src under dst: by then src is gone. The intent lives in the bucket,
// not in a local journal, so that another machine can see it and finish it.
// docs/semantics.md, "Directory renames and crashes".

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/csefs/csefs/metadata"
	"github.com/csefs/csefs/objectstore"
)

// IntentName is the reserved name of the intents' directory at the mount's
// root. No file or directory of that name can be made, looked up or listed
// anywhere (validName).
const IntentName = ".csefs-renames"

// IntentPrefix is the key prefix of the rename intents.
const IntentPrefix = IntentName + "/"

// RenameIntent is the stored record of a directory rename in progress.
type RenameIntent struct {
	ID  string `json:"-"`   // its key is IntentPrefix + ID
	Op  string `json:"op"`  // "rename-dir"
	Src string `json:"src"` // directory prefixes, "a/b/"
	Dst string `json:"dst"`
	Owner
	Time time.Time `json:"time"`
}

// Owner names the process that stored an intent, so that another can tell
// whether it is still running: the host, the machine (machine-id), the kernel
// boot and pid namespace it runs in, its pid and its start time.
type Owner struct {
	Host    string `json:"host"`
	Machine string `json:"machine,omitempty"`
	Boot    string `json:"boot,omitempty"`
	PidNS   string `json:"pidns,omitempty"`
	PID     int    `json:"pid"`
	Start   string `json:"start,omitempty"` // /proc/PID/stat field 22
}

// OwnerState is what this process can tell of an intent's owner.
type OwnerState int

const (
	OwnerSelf    OwnerState = iota // this process
	OwnerAlive                     // another process on this machine, running
	OwnerDead                      // gone: exited, killed, or its machine rebooted
	OwnerUnknown                   // another machine (or pid namespace): cannot tell
)

func (s OwnerState) String() string {
	return [...]string{"this process", "running", "dead", "unknown"}[s]
}

var (
	selfOnce sync.Once
	self     Owner
)

// SelfOwner identifies this process.
func SelfOwner() Owner {
	selfOnce.Do(func() {
		self.Host, _ = os.Hostname()
		self.Machine = readTrim("/etc/machine-id")
		self.Boot = readTrim("/proc/sys/kernel/random/boot_id")
		self.PidNS, _ = os.Readlink("/proc/self/ns/pid")
		self.PID = os.Getpid()
		self.Start = procStart(self.PID)
	})
	return self
}

// State says whether o still runs, as far as this process can tell.
func (o Owner) State() OwnerState {
	me := SelfOwner()
	switch {
	case o == me:
		return OwnerSelf
	case o.Boot == me.Boot && o.Boot != "" && o.PidNS == me.PidNS:
		if now := procStart(o.PID); now != "" && now == o.Start {
			return OwnerAlive
		}
		return OwnerDead
	case o.Boot != me.Boot && o.Machine == me.Machine && o.Machine != "" && o.Host == me.Host:
		return OwnerDead // this machine has rebooted since
	}
	return OwnerUnknown
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// procStart is the start time of process pid in clock ticks since boot
// (field 22 of /proc/PID/stat), "" if it does not run.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || pid <= 0 {
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

// touches reports whether a rename of key (a file, or a directory without
// its slash) involves either tree of the intent.
func (in *RenameIntent) touches(key string) bool {
	k := key + "/"
	for _, p := range []string{in.Src, in.Dst} {
		if strings.HasPrefix(k, p) || strings.HasPrefix(p, k) {
			return true
		}
	}
	return false
}

// intentState is this process's view of the stored intents.
type intentState struct {
	mu     sync.Mutex
	active map[string]bool // IDs of this process's renames in progress
	listed []RenameIntent  // the last listing
	at     time.Time       // when it was made
}

// beginRename stores the intent to move srcPrefix to dstPrefix. No rename
// happens without it.
func (f *FS) beginRename(ctx context.Context, srcPrefix, dstPrefix string) (*RenameIntent, error) {
	var id [8]byte
	rand.Read(id[:])
	in := &RenameIntent{ID: time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(id[:]),
		Op: "rename-dir", Src: srcPrefix, Dst: dstPrefix, Owner: SelfOwner(), Time: time.Now().UTC()}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	f.intents.mu.Lock()
	if f.intents.active == nil {
		f.intents.active = make(map[string]bool)
	}
	f.intents.active[in.ID] = true
	f.intents.mu.Unlock()
	if _, err := f.store.Put(ctx, IntentPrefix+in.ID, body, map[string]string{"csefs-intent": "rename-dir"}); err != nil {
		f.endRename(in, false)
		return nil, fmt.Errorf("storing the rename's intent: %w", err)
	}
	return in, nil
}

// endRename forgets in as active; with done, it deletes its record.
func (f *FS) endRename(in *RenameIntent, done bool) {
	if done {
		if err := f.store.Delete(context.Background(), IntentPrefix+in.ID); err != nil {
			f.log.Warn("could not delete a finished rename's intent; the next rename or mount redoes nothing but deletes it",
				"intent", f.uri(IntentPrefix+in.ID), "cause", err.Error())
		}
	}
	f.intents.mu.Lock()
	delete(f.intents.active, in.ID)
	if done {
		f.intents.listed = slices.DeleteFunc(slices.Clone(f.intents.listed), func(l RenameIntent) bool { return l.ID == in.ID })
	}
	f.intents.mu.Unlock()
}

// Intents lists the stored rename intents, oldest first.
func (f *FS) Intents(ctx context.Context) ([]RenameIntent, error) {
	var keys []string
	err := f.store.List(ctx, IntentPrefix, "", func(p objectstore.ListPage) error {
		for _, o := range p.Objects {
			keys = append(keys, o.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []RenameIntent
	for _, k := range keys {
		id := strings.TrimPrefix(k, IntentPrefix)
		if id == "" || strings.Contains(id, "/") {
			continue
		}
		in, err := f.readIntent(ctx, k)
		if errors.Is(err, objectstore.ErrNotFound) {
			continue // finished meanwhile
		}
		if errors.Is(err, errMalformedIntent) {
			f.log.Warn("ignoring a malformed rename intent; delete it", "intent", f.uri(k))
			continue
		}
		if err != nil {
			return nil, err
		}
		in.ID = id
		out = append(out, *in)
	}
	f.intents.mu.Lock()
	f.intents.listed, f.intents.at = out, time.Now()
	f.intents.mu.Unlock()
	return out, nil
}

func (f *FS) readIntent(ctx context.Context, key string) (*RenameIntent, error) {
	rc, _, err := f.store.Get(ctx, key, objectstore.GetOptions{Length: -1})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, err
	}
	var in RenameIntent
	if err := json.Unmarshal(buf.Bytes(), &in); err != nil || in.Op != "rename-dir" ||
		!validPrefix(in.Src) || !validPrefix(in.Dst) || strings.HasPrefix(in.Dst, in.Src) || strings.HasPrefix(in.Src, in.Dst) {
		return nil, fmt.Errorf("rename intent %s: malformed: %w", f.uri(key), errMalformedIntent)
	}
	return &in, nil
}

var errMalformedIntent = errors.New("fusefs: malformed rename intent")

// validPrefix accepts a directory prefix a rename could have moved: "a/b/",
// never the root, never the intents' own directory.
func validPrefix(p string) bool {
	if !strings.HasSuffix(p, "/") {
		return false
	}
	for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if !validName(seg) {
			return false
		}
	}
	return true
}

// state is the owner state of in, from this process: its own renames in
// progress are OwnerSelf, its own that failed half way are OwnerDead.
func (f *FS) state(in *RenameIntent) OwnerState {
	s := in.Owner.State()
	if s == OwnerSelf {
		f.intents.mu.Lock()
		active := f.intents.active[in.ID]
		f.intents.mu.Unlock()
		if !active {
			return OwnerDead
		}
	}
	return s
}

// FinishRename rolls the intent in forward: every object still under its
// source is copied to its place under the destination, then the source's
// objects and directory markers are deleted, the source's parent kept, and
// the intent deleted. Safe to run again after a failure; it must not run
// while the owner still does.
//
// A destination that exists already is never overwritten: both trees were
// visible since the crash, and the destination may have been edited. If it
// is the source's copy (the same size and metadata: a copy keeps the
// envelope, with its unique IV, and the attributes), the copy is not redone.
// (A plaintext object's metadata is not unique to it: its ETag must match
// too.) If it differs, it is kept, its source is not deleted (nor the source's
// directories), and the conflict is logged naming both; the rest of the
// rename is finished and the intent deleted, so that later renames are not
// blocked by it.
func (f *FS) FinishRename(ctx context.Context, in *RenameIntent) error {
	f.allDirsChanged()
	defer f.allDirsChanged()
	f.log.Info("finishing a directory rename interrupted before its end",
		"from", f.uri(in.Src), "to", f.uri(in.Dst), "started", in.Time, "host", in.Host, "pid", in.PID)
	var keys, etags []string
	err := f.store.List(ctx, in.Src, "", func(p objectstore.ListPage) error {
		for _, o := range p.Objects {
			keys = append(keys, o.Key)
			etags = append(etags, o.ETag)
		}
		return nil
	})
	if err != nil {
		return err
	}
	moves, err := renameTargets(keys, in.Src, in.Dst)
	if err != nil {
		return err
	}
	defer func() {
		for _, m := range moves {
			f.putStat(m[0], nil)
			f.putStat(m[1], nil)
		}
	}()
	conflict := make([]bool, len(moves))
	err = forEach(ctx, len(moves), func(ctx context.Context, i int) error {
		var err error
		conflict[i], err = f.rollForward(ctx, moves[i][0], moves[i][1], etags[i])
		return err
	})
	if err != nil {
		return err
	}
	var kept []string
	var objs []string
	for i, m := range moves {
		switch {
		case conflict[i]:
			kept = append(kept, m[0])
		case !strings.HasSuffix(m[0], "/"):
			objs = append(objs, m[0])
		}
	}
	if err := forEach(ctx, len(objs), func(ctx context.Context, i int) error {
		return f.store.Delete(ctx, objs[i])
	}); err != nil {
		return err
	}
	for _, k := range treeDirs(keys, in.Src) {
		if slices.ContainsFunc(kept, func(c string) bool { return strings.HasPrefix(c, k) }) {
			continue // still holds a conflicting source
		}
		if err := f.store.Delete(ctx, k); err != nil {
			return err
		}
	}
	if len(kept) == 0 {
		f.keepDir(ctx, parentPrefix(strings.TrimSuffix(in.Src, "/")))
	}
	if err := f.store.Delete(ctx, IntentPrefix+in.ID); err != nil {
		return err
	}
	if len(kept) > 0 {
		f.log.Warn("directory rename finished, except for objects changed at the destination since the crash: those sources are left in place",
			"from", f.uri(in.Src), "to", f.uri(in.Dst), "objects", len(keys), "conflicts", len(kept))
	} else {
		f.log.Info("directory rename finished", "from", f.uri(in.Src), "to", f.uri(in.Dst), "objects", len(keys))
	}
	return nil
}

// rollForward copies src (as listed with etag) to dst unless dst exists.
// conflict says dst exists and is not src's copy (see FinishRename); then
// src must be kept.
func (f *FS) rollForward(ctx context.Context, src, dst, etag string) (conflict bool, err error) {
	di, err := f.store.Head(ctx, dst)
	if isNotFound(err) {
		_, err = f.store.Copy(ctx, src, dst, objectstore.CopyOptions{IfMatch: etag})
		return false, err
	}
	if err != nil {
		return false, err
	}
	if strings.HasSuffix(src, "/") {
		return false, nil // a directory marker: dst's stands (and its attributes)
	}
	si, err := f.store.Head(ctx, src)
	if err != nil {
		return false, err
	}
	if si.Size == di.Size && maps.Equal(si.Metadata, di.Metadata) {
		// The copy the crashed rename made, if the metadata is unique
		// to the object (an envelope, with its IV); a plaintext object's
		// attributes are not, and then the ETag must match too.
		if _, err := metadata.Detect(si.Metadata); err == nil || strings.Trim(si.ETag, `"`) == strings.Trim(di.ETag, `"`) {
			return false, nil
		}
	}
	f.log.Warn("rename recovery conflict: the destination changed after the crash; keeping it, and the source",
		"source", f.uri(src), "destination", f.uri(dst))
	return true, nil
}

// RecoverRenames finishes the stored intents that finish accepts (nil: those
// whose owner is dead), oldest first, and returns them. It goes on after a
// failure and returns the first error.
func (f *FS) RecoverRenames(ctx context.Context, finish func(*RenameIntent, OwnerState) bool) ([]RenameIntent, error) {
	list, err := f.Intents(ctx)
	if err != nil {
		return nil, err
	}
	var done []RenameIntent
	var first error
	for i := range list {
		in := &list[i]
		st := f.state(in)
		if finish == nil && st != OwnerDead || finish != nil && !finish(in, st) {
			if st != OwnerSelf {
				f.log.Warn("a directory rename by another process is unfinished: its owner may still be running; `csefs recover` finishes it",
					"from", f.uri(in.Src), "to", f.uri(in.Dst), "started", in.Time, "host", in.Host, "pid", in.PID, "owner", st.String())
			}
			continue
		}
		if err := f.FinishRename(ctx, in); err != nil {
			f.log.Error("could not finish an interrupted directory rename", "from", f.uri(in.Src), "to", f.uri(in.Dst), "cause", err.Error())
			if first == nil {
				first = err
			}
			continue
		}
		done = append(done, *in)
	}
	return done, first
}

// settleRenames runs before a rename of src to dst (keys without slashes):
// an unfinished directory rename that involves either is finished first if
// its owner is dead; if its owner may still run, the rename fails with
// EBUSY (busy true). The listing is reused within the metadata TTL.
func (f *FS) settleRenames(ctx context.Context, src, dst string) (busy bool, err error) {
	f.intents.mu.Lock()
	list, fresh := f.intents.listed, time.Since(f.intents.at) < f.opt.MetadataTTL
	f.intents.mu.Unlock()
	if !fresh {
		if list, err = f.Intents(ctx); err != nil {
			return false, err
		}
	}
	for i := range list {
		in := &list[i]
		if !in.touches(src) && !in.touches(dst) {
			continue
		}
		switch st := f.state(in); st {
		case OwnerDead:
			// The listing may be older than the intent's end: a rename
			// finished since must not be redone on what is now at src.
			if _, err := f.store.Head(ctx, IntentPrefix+in.ID); isNotFound(err) {
				continue
			} else if err != nil {
				return false, err
			}
			if err := f.FinishRename(ctx, in); err != nil {
				return false, err
			}
			f.intents.mu.Lock()
			f.intents.at = time.Time{} // list again next time
			f.intents.mu.Unlock()
		default:
			f.log.Warn("rename refused: it involves a directory rename in progress or interrupted elsewhere; `csefs recover` finishes an interrupted one",
				"object", f.uri(src), "from", f.uri(in.Src), "to", f.uri(in.Dst), "started", in.Time, "host", in.Host, "pid", in.PID, "owner", st.String())
			return true, nil
		}
	}
	return false, nil
}
