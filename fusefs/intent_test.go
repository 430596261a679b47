package fusefs

import (
	"context"
	"encoding/json"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/csefs/csefs/objectstore"
)

// putIntent stores an intent as a process with owner would have.
func putIntent(t *testing.T, f *FS, id, src, dst string, owner Owner) {
	t.Helper()
	b, err := json.Marshal(RenameIntent{Op: "rename-dir", Src: src, Dst: dst, Owner: owner, Time: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Put(context.Background(), IntentPrefix+id, b, nil); err != nil {
		t.Fatal(err)
	}
}

// deadOwner is this machine's, with a process that is gone (this pid, but
// another start time: a reused pid).
func deadOwner() Owner {
	o := SelfOwner()
	o.Start = "1"
	return o
}

// halfMoved makes d/ with three files and copies two of them to n/, as a
// directory rename killed during its copies leaves it.
func halfMoved(t *testing.T, f *FS) map[string]string {
	t.Helper()
	ctx := context.Background()
	files := map[string]string{"d/a": "1", "d/s/b": "22", "d/s/t/c": "333"}
	for k, v := range files {
		writeObj(t, f, k, []byte(v))
	}
	if _, err := f.store.Put(ctx, "d/", nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"d/a", "d/s/t/c"} {
		nk, _ := movedKey(k, "d/", "n/")
		if _, err := f.store.Copy(ctx, k, nk, objectstore.CopyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// intentKeys lists the intents' keys (not the directory a local store keeps).
func intentKeys(t *testing.T, f *FS) []string {
	var keys []string
	for _, k := range listAll(t, f.store, IntentPrefix) {
		if k != IntentPrefix {
			keys = append(keys, k)
		}
	}
	return keys
}

func checkMoved(t *testing.T, f *FS, files map[string]string) {
	t.Helper()
	if left := listAll(t, f.store, "d/"); len(left) != 0 {
		t.Errorf("left under d/: %v", left)
	}
	for k, v := range files {
		nk, _ := movedKey(k, "d/", "n/")
		if got := readObj(t, f, nk); string(got) != v {
			t.Errorf("%s: %q, want %q", nk, got, v)
		}
	}
	if left := intentKeys(t, f); len(left) != 0 {
		t.Errorf("intents left: %v", left)
	}
}

// TestRenameStoresIntent: a directory rename's intent exists from before the
// first copy to after the last delete, and is hidden from the listing.
func TestRenameStoresIntent(t *testing.T) {
	ctx := context.Background()
	f, root, _ := newTestFS(t, ObjectMetadata, true)
	writeObj(t, f, "d/a", []byte("1"))
	var during []string
	var in *RenameIntent
	var err error
	renameHook = func(int) {
		during = intentKeys(t, f)
		if len(during) == 1 {
			in, err = f.readIntent(ctx, during[0])
		}
	}
	defer func() { renameHook = func(int) {} }()
	if errno := root.Rename(ctx, "d", root, "n", 0); errno != 0 {
		t.Fatalf("rename: %v", errno)
	}
	if len(during) != 1 {
		t.Fatalf("intents during the rename: %v, want one", during)
	}
	if err != nil || in.Src != "d/" || in.Dst != "n/" || in.Owner != SelfOwner() {
		t.Fatalf("intent %+v, %v", in, err)
	}
	if left := intentKeys(t, f); len(left) != 0 {
		t.Errorf("intent left after the rename: %v", left)
	}
	putIntent(t, f, "x", "q/", "r/", deadOwner())
	_, entries, err := f.listDir(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name == IntentName {
			t.Errorf("the listing shows %s", IntentName)
		}
	}
}

// TestRecoverRenames: the intent of a dead process is rolled forward; one
// whose owner cannot be seen (another machine) is left alone.
func TestRecoverRenames(t *testing.T) {
	ctx := context.Background()
	f, _, _ := newTestFS(t, ObjectMetadata, true)
	files := halfMoved(t, f)
	other := SelfOwner()
	other.Host, other.Machine, other.Boot = "elsewhere", "m2", "b2"
	putIntent(t, f, "1", "d/", "n/", deadOwner())
	putIntent(t, f, "2", "x/", "y/", other)
	// Planted or damaged: ignored, not a failure of every rename.
	putIntent(t, f, "3", "", "n/", deadOwner())
	putIntent(t, f, "4", "n/", "n/sub/", deadOwner())
	if _, err := f.store.Put(ctx, IntentPrefix+"5", []byte("{"), nil); err != nil {
		t.Fatal(err)
	}
	done, err := f.RecoverRenames(ctx, nil)
	if err != nil || len(done) != 1 || done[0].ID != "1" {
		t.Fatalf("recovered %+v, %v", done, err)
	}
	if left := intentKeys(t, f); len(left) != 4 || left[0] != IntentPrefix+"2" {
		t.Errorf("intents left: %v, want the other machine's and the malformed ones", left)
	}
	for _, id := range []string{"2", "3", "4", "5"} {
		f.store.Delete(ctx, IntentPrefix+id)
	}
	checkMoved(t, f, files)
}

// TestSecondMvDoesNotNest: after a crash, mv d n runs rename(d, n/d) (n
// exists). The dead process's rename is finished first, so d is gone and
// nothing nests; a rename involving another machine's unfinished rename is
// EBUSY, one involving neither tree goes ahead.
func TestSecondMvDoesNotNest(t *testing.T) {
	ctx := context.Background()
	f, root, st := newTestFS(t, ObjectMetadata, true)
	files := halfMoved(t, f)
	putIntent(t, f, "1", "d/", "n/", deadOwner())
	if errno := root.Rename(ctx, "d", newDirNode(f, "n/"), "d", 0); errno != syscall.ENOENT {
		t.Errorf("second mv: %v, want ENOENT (d finished moving)", errno)
	}
	if nested := listAll(t, st, "n/d/"); len(nested) != 0 {
		t.Errorf("nested: %v", nested)
	}
	checkMoved(t, f, files)

	other := SelfOwner()
	other.Host, other.Machine, other.Boot = "elsewhere", "m2", "b2"
	putIntent(t, f, "2", "n/", "m/", other)
	f.intents.at = time.Time{}
	if errno := root.Rename(ctx, "n", root, "k", 0); errno != syscall.EBUSY {
		t.Errorf("rename of a tree another machine is moving: %v, want EBUSY", errno)
	}
	writeObj(t, f, "z", []byte("z"))
	if errno := root.Rename(ctx, "z", root, "zz", 0); errno != 0 {
		t.Errorf("unrelated rename: %v", errno)
	}
}

func TestOwnerState(t *testing.T) {
	me := SelfOwner()
	if me.Boot == "" || me.PidNS == "" || me.Start == "" {
		t.Fatalf("SelfOwner %+v lacks boot, pid namespace or start time", me)
	}
	parent := me
	parent.PID, parent.Start = os.Getppid(), procStart(os.Getppid())
	reused := parent
	reused.Start = "1"
	rebooted := me
	rebooted.Boot = "another-boot"
	elsewhere := me
	elsewhere.Host, elsewhere.Machine, elsewhere.Boot = "elsewhere", "m2", "b2"
	container := me
	container.PidNS = "pid:[1]"
	cloned := rebooted
	cloned.Host = "clone"
	for _, tc := range []struct {
		name string
		o    Owner
		want OwnerState
	}{
		{"self", me, OwnerSelf},
		{"running", parent, OwnerAlive},
		{"pid reused", reused, OwnerDead},
		{"rebooted", rebooted, OwnerDead},
		{"other machine", elsewhere, OwnerUnknown},
		{"other pid namespace", container, OwnerUnknown},
		{"same machine-id, other host and boot", cloned, OwnerUnknown},
	} {
		if got := tc.o.State(); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRecoverRenameKeepsLaterEdits: after a crash both trees are visible,
// and a file under the destination edited then is not overwritten by the
// recovery: its source is left in place (and logged), the rest of the
// rename is finished, copies the crash left are not redone, and the intent
// is deleted.
func TestRecoverRenameKeepsLaterEdits(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		t.Run(map[bool]string{true: "encrypted", false: "plaintext"}[encrypt], func(t *testing.T) {
			ctx := context.Background()
			f, _, _ := newTestFS(t, ObjectMetadata, encrypt)
			halfMoved(t, f)
			writeObj(t, f, "n/a", []byte("edited after the crash"))
			// Same size as its source: only the metadata tells them apart.
			writeObj(t, f, "n/s/t/c", []byte("999"))
			before, err := f.store.Head(ctx, "n/a")
			if err != nil {
				t.Fatal(err)
			}
			putIntent(t, f, "1", "d/", "n/", deadOwner())
			if done, err := f.RecoverRenames(ctx, nil); err != nil || len(done) != 1 {
				t.Fatalf("recovered %+v, %v", done, err)
			}
			for k, v := range map[string]string{"n/a": "edited after the crash", "n/s/t/c": "999", "n/s/b": "22", "d/a": "1", "d/s/t/c": "333"} {
				if got := readObj(t, f, k); string(got) != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if after, err := f.store.Head(ctx, "n/a"); err != nil || after.ETag != before.ETag {
				t.Errorf("n/a was rewritten: %v %v", after, err)
			}
			if _, err := f.store.Head(ctx, "d/s/b"); !isNotFound(err) {
				t.Errorf("d/s/b, moved, is still there: %v", err)
			}
			if left := intentKeys(t, f); len(left) != 0 {
				t.Errorf("intents left: %v", left)
			}
		})
	}
}

// TestRecoverRenameSkipsDoneCopies: a copy the crashed rename made (the
// same size and metadata as its source) is not redone, and its source is
// deleted.
func TestRecoverRenameSkipsDoneCopies(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		t.Run(map[bool]string{true: "encrypted", false: "plaintext"}[encrypt], func(t *testing.T) {
			ctx := context.Background()
			f, _, _ := newTestFS(t, ObjectMetadata, encrypt)
			files := halfMoved(t, f)
			before, err := f.store.Head(ctx, "n/a")
			if err != nil {
				t.Fatal(err)
			}
			putIntent(t, f, "1", "d/", "n/", deadOwner())
			if done, err := f.RecoverRenames(ctx, nil); err != nil || len(done) != 1 {
				t.Fatalf("recovered %+v, %v", done, err)
			}
			if after, err := f.store.Head(ctx, "n/a"); err != nil || after.ETag != before.ETag {
				t.Errorf("n/a was copied again: %v %v", after, err)
			}
			checkMoved(t, f, files)
		})
	}
}
