package metadata

import (
	"strconv"
	"time"
)

// csefs's own file attributes, stored as user metadata next to the envelope.
const (
	// AttrMode is st_mode (file type and permission bits) in octal, e.g.
	// "100644".
	AttrMode = "csefs-mode"
	// AttrMtime is the modification time as decimal Unix nanoseconds (exact
	// and compact). ParseAttrs also accepts RFC 3339 (with or without
	// fractional seconds) for hand-written objects.
	AttrMtime = "csefs-mtime"
	// AttrAtime is the access time, as AttrMtime, when one was set
	// explicitly (utimes); without it atime reads as mtime.
	AttrAtime = "csefs-atime"
	// AttrCtime is the time of the last attribute change (chmod, chown,
	// utimes), as AttrMtime; the ctime shown is the later of it and mtime.
	AttrCtime = "csefs-ctime"
	// AttrUID and AttrGID are the owner as decimal ids; both must be valid for
	// Attrs.HasOwner.
	AttrUID = "csefs-uid"
	AttrGID = "csefs-gid"
	// AttrSymlink "1" marks a symlink object whose (encrypted) body is the
	// link target.
	AttrSymlink = "csefs-symlink"
	// AttrRdev is the device number (st_rdev) of a character or block
	// device, in decimal; AttrMode holds the file type of every special
	// file (fifo, socket, device), whose object is empty.
	AttrRdev = "csefs-rdev"
	// AttrEnvelope EnvelopeInstructionFile marks a data object whose envelope
	// lives in its instruction file: a missing instruction file is then an
	// error (ErrNoInstructionFile), never a sign of plaintext.
	AttrEnvelope            = "csefs-envelope"
	EnvelopeInstructionFile = "instruction-file"
)

// Attrs are the file attributes csefs keeps in user metadata. The Has* flags
// say whether a value was present and well formed.
type Attrs struct {
	Mode     uint32
	HasMode  bool
	Mtime    time.Time
	HasMtime bool
	Atime    time.Time
	HasAtime bool
	Ctime    time.Time
	HasCtime bool
	UID, GID uint32
	HasOwner bool
	Symlink  bool
	Rdev     uint64
	HasRdev  bool
	// InstructionFile is AttrEnvelope == EnvelopeInstructionFile.
	InstructionFile bool
}

// ParseAttrs reads csefs attributes from user metadata (keys compared
// case-insensitively). It is lenient: a malformed value is ignored, as if
// absent.
func ParseAttrs(meta map[string]string) Attrs {
	var a Attrs
	if v, ok := Lookup(meta, AttrMode); ok {
		if n, err := strconv.ParseUint(v, 8, 32); err == nil {
			a.Mode, a.HasMode = uint32(n), true
		}
	}
	if v, ok := Lookup(meta, AttrMtime); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			a.Mtime, a.HasMtime = time.Unix(0, n), true
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			a.Mtime, a.HasMtime = t, true
		}
	}
	if v, ok := Lookup(meta, AttrAtime); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			a.Atime, a.HasAtime = time.Unix(0, n), true
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			a.Atime, a.HasAtime = t, true
		}
	}
	if v, ok := Lookup(meta, AttrCtime); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			a.Ctime, a.HasCtime = time.Unix(0, n), true
		}
	}
	u, uok := Lookup(meta, AttrUID)
	g, gok := Lookup(meta, AttrGID)
	if uok && gok {
		un, uerr := strconv.ParseUint(u, 10, 32)
		gn, gerr := strconv.ParseUint(g, 10, 32)
		if uerr == nil && gerr == nil {
			a.UID, a.GID, a.HasOwner = uint32(un), uint32(gn), true
		}
	}
	if v, ok := Lookup(meta, AttrRdev); ok {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			a.Rdev, a.HasRdev = n, true
		}
	}
	if v, _ := Lookup(meta, AttrSymlink); v == "1" {
		a.Symlink = true
	}
	if v, _ := Lookup(meta, AttrEnvelope); v == EnvelopeInstructionFile {
		a.InstructionFile = true
	}
	return a
}

// Apply writes a into meta (lower-case keys): set fields are stored, and the
// keys of unset fields are deleted (in any case), so ParseAttrs(meta) gives a
// back (Mtime at nanosecond precision, in time.Local; like time.UnixNano it
// must lie between the years 1678 and 2262).
func (a Attrs) Apply(meta map[string]string) {
	set := func(k, v string, ok bool) {
		for mk := range meta {
			if mk != k && asciiEqualFold(mk, k) {
				delete(meta, mk)
			}
		}
		if ok {
			meta[k] = v
		} else {
			delete(meta, k)
		}
	}
	set(AttrMode, strconv.FormatUint(uint64(a.Mode), 8), a.HasMode)
	set(AttrMtime, strconv.FormatInt(a.Mtime.UnixNano(), 10), a.HasMtime)
	set(AttrAtime, strconv.FormatInt(a.Atime.UnixNano(), 10), a.HasAtime)
	set(AttrCtime, strconv.FormatInt(a.Ctime.UnixNano(), 10), a.HasCtime)
	set(AttrUID, strconv.FormatUint(uint64(a.UID), 10), a.HasOwner)
	set(AttrGID, strconv.FormatUint(uint64(a.GID), 10), a.HasOwner)
	set(AttrSymlink, "1", a.Symlink)
	set(AttrRdev, strconv.FormatUint(a.Rdev, 10), a.HasRdev)
	set(AttrEnvelope, EnvelopeInstructionFile, a.InstructionFile)
}
