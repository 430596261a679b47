package metadata

import (
	"maps"
	"testing"
	"time"
)

func TestAttrsRoundTrip(t *testing.T) {
	mtime := time.Date(2026, 11, 3, 4, 5, 6, 789, time.UTC)
	tests := []Attrs{
		{},
		{Mode: 0o100644, HasMode: true},
		{Mode: 0o120777, HasMode: true, Mtime: mtime, HasMtime: true, UID: 1000, GID: 100, HasOwner: true, Symlink: true},
		{Mode: 0o40755, HasMode: true, UID: 0, GID: 0, HasOwner: true},
		{Mtime: time.Unix(0, 0), HasMtime: true, InstructionFile: true},
		{UID: 1<<32 - 1, GID: 1<<32 - 2, HasOwner: true},
		{Mode: 0o20640, HasMode: true, Rdev: 0x10305, HasRdev: true},
		{Mode: 0o10644, HasMode: true, Atime: mtime.Add(-time.Hour), HasAtime: true, Ctime: mtime.Add(time.Hour), HasCtime: true},
	}
	for _, a := range tests {
		meta := map[string]string{"x-amz-iv": "keep", "Csefs-Mode": "stale", "csefs-symlink": "1"}
		a.Apply(meta)
		if meta["x-amz-iv"] != "keep" {
			t.Fatal("Apply touched other keys")
		}
		got := ParseAttrs(meta)
		if !got.Mtime.Equal(a.Mtime) || !got.Atime.Equal(a.Atime) || !got.Ctime.Equal(a.Ctime) {
			t.Errorf("mtime %v atime %v, want %v and %v", got.Mtime, got.Atime, a.Mtime, a.Atime)
		}
		got.Mtime, a.Mtime = time.Time{}, time.Time{}
		got.Atime, a.Atime = time.Time{}, time.Time{}
		got.Ctime, a.Ctime = time.Time{}, time.Time{}
		if got != a {
			t.Errorf("got %+v, want %+v (meta %v)", got, a, meta)
		}
	}
}

func TestAttrsApplyFormat(t *testing.T) {
	meta := map[string]string{}
	Attrs{Mode: 0o100644, HasMode: true, Mtime: time.Unix(1, 5), HasMtime: true, UID: 7, GID: 8, HasOwner: true, Symlink: true, InstructionFile: true}.Apply(meta)
	want := map[string]string{
		"csefs-mode": "100644", "csefs-mtime": "1000000005", "csefs-uid": "7", "csefs-gid": "8",
		"csefs-symlink": "1", "csefs-envelope": "instruction-file",
	}
	if !maps.Equal(meta, want) {
		t.Fatalf("got %v", meta)
	}
}

func TestParseAttrsLenient(t *testing.T) {
	a := ParseAttrs(map[string]string{
		"csefs-mode": "100648", "csefs-mtime": "yesterday", "csefs-uid": "1", "csefs-gid": "-1",
		"csefs-symlink": "yes", "csefs-envelope": "metadata",
	})
	if a != (Attrs{}) {
		t.Fatalf("%+v", a)
	}
	a = ParseAttrs(map[string]string{"csefs-uid": "1"})
	if a.HasOwner {
		t.Fatal("owner from uid alone")
	}
	a = ParseAttrs(map[string]string{"csefs-mode": "777777777777", "csefs-uid": "4294967296", "csefs-gid": "1"})
	if a.HasMode || a.HasOwner {
		t.Fatalf("overflow accepted: %+v", a)
	}
	a = ParseAttrs(map[string]string{"CSEFS-MTIME": "2026-11-03T04:05:06.5Z", "Csefs-Mode": "644"})
	if !a.HasMtime || !a.Mtime.Equal(time.Date(2026, 11, 3, 4, 5, 6, 5e8, time.UTC)) || !a.HasMode || a.Mode != 0o644 {
		t.Fatalf("%+v", a)
	}
	if ParseAttrs(nil) != (Attrs{}) {
		t.Fatal("nil map")
	}
}
