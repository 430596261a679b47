package fusefs

import (
	"context"
	"testing"
	"time"
)

// With AttrsFromList a readdir's listing answers attributes: no HEAD, the
// stored size less the tag, the mount's mode; a stat obtained since the
// LIST wins, and without the option nothing is derived.
func TestListedObject(t *testing.T) {
	f, _, st := newTestFS(t, ObjectMetadata, true)
	cs := &countingStore{Store: st}
	f.store = cs
	f.opt.MetadataTTL = time.Hour
	f.opt.AttrsFromList = true
	ctx := context.Background()
	writeObj(t, f, "d/a", make([]byte, 100))
	if _, err := st.Put(ctx, "d/p", make([]byte, 50), nil); err != nil { // plaintext
		t.Fatal(err)
	}
	f.putStat("d/a", nil)
	if _, _, err := f.listDir(ctx, "d/", true); err != nil {
		t.Fatal(err)
	}
	if n := cs.heads.Load(); n != 0 {
		t.Errorf("listDir made %d HEADs", n)
	}
	a := f.listedObject("d/a")
	if a == nil || !a.listed || a.plainSize != 100 {
		t.Fatalf("d/a: %+v, want listed, size 100", a)
	}
	if p := f.listedObject("d/p"); p == nil || p.plainSize != 34 {
		t.Fatalf("d/p: %+v, want size 50 − 16 (a plaintext object is not told apart)", p)
	}
	if f.listedObject("d/none") != nil || f.listedObject("other/a") != nil {
		t.Error("an object not listed has attributes")
	}
	exact, err := f.head(ctx, "d/p") // as open(2) does
	if err != nil {
		t.Fatal(err)
	}
	if got := f.listedObject("d/p"); got != exact || got.plainSize != 50 {
		t.Errorf("after a HEAD: %+v, want the HEAD's object", got)
	}
	if f.sameAttr(a, exact) {
		t.Error("sameAttr: sizes 100 and 50 compare equal")
	}
	f.opt.AttrsFromList = false
	if f.listedObject("d/a") != nil {
		t.Error("attributes derived without AttrsFromList")
	}
}
