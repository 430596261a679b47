// Package fusefs serves an object store as a FUSE filesystem (go-fuse v2),
// encrypting and decrypting object bodies with the S3EC format of cse and
// metadata.
//
// Layout: directories are key prefixes (and "dir/" marker objects); files are
// objects. Instruction files ("<key>.instruction") are hidden. Every error
// reaches the kernel through toErrno, and every error worth a log line is
// logged once, with the object key and the cause, never key material.
//
// Reads: see read.go for the authentication policy. Writes: see write.go; a
// new object becomes visible only when its upload completes, in Flush or
// Fsync, and close(2)/fsync(2) return that upload's result.
package fusefs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// StorageMode says where a new object's envelope goes.
type StorageMode int

const (
	ObjectMetadata  StorageMode = iota // x-amz-* user metadata (default)
	InstructionFile                    // <key>.instruction beside the object
)

// Options configure a filesystem.
type Options struct {
	Store objectstore.Store
	// Provider wraps and unwraps data keys (normally a keycache.Cache in
	// front of a KMS or keyring provider). Nil means --cse off: new objects
	// are written in plaintext and encrypted objects cannot be read.
	Provider cse.Provider
	// StorageMode for new objects.
	StorageMode StorageMode
	// MatDesc is added to every new object's materials description.
	MatDesc map[string]string
	// URIPrefix is "s3://bucket/prefix/" (or file:///dir/), used to name
	// objects to providers and in logs.
	URIPrefix string
	// KeyPrefix is the store's prefix within its bucket ("prefix/"), so that
	// providers see whole bucket keys.
	KeyPrefix string
	// DenyPlaintext refuses objects without an envelope (--plaintext=deny).
	DenyPlaintext bool
	// VerifyThreshold: GCM objects up to this plaintext size are read and
	// authenticated whole before any byte is returned.
	VerifyThreshold int64
	// StrictRanged: random reads of larger objects are served only after the
	// whole object has been authenticated once (per ETag).
	StrictRanged bool
	// MetadataTTL bounds how long a HEAD or listing result is trusted.
	MetadataTTL time.Duration
	ReadOnly    bool
	// XAttrs serves the read-only user.csefs.encryption attribute. Off, the
	// mount answers no xattr call (ENOTSUP): the kernel then stops asking,
	// where otherwise ls -l costs two more round trips per file
	// (security.selinux and the POSIX ACL) on top of its stat.
	XAttrs bool
	// AttrsFromList answers stat(2) of listed files from the LIST alone,
	// without a HEAD per file (--attrs-from-list): the size is the stored
	// size less the 16-byte GCM tag (as stored for a plaintext mount), the
	// mode and owner are the mount's, and the mtime is the upload time.
	// Opening a file always HEADs it and corrects the kernel's attributes.
	AttrsFromList bool
	// PageCache serves file data through the kernel's page cache instead
	// of direct I/O (--page-cache): shared mmap works on kernels before 6.6
	// and small reads are faster, but a reader in the writer's own mount
	// may see an overwrite in progress (openFlags).
	PageCache bool
	UID, GID  uint32
	FileMode  uint32 // permission bits for files, e.g. 0644
	DirMode   uint32 // permission bits for directories, e.g. 0755
	// NameMax bounds a name's length in bytes: statfs reports it, and a
	// longer name gets ENAMETOOLONG. 0 means 255 (NAME_MAX).
	NameMax int
	// KeyMax bounds a whole key in the bucket (KeyPrefix, the key, and the
	// longest suffix csefs adds: ".instruction" or a marker's "/"); a name
	// that would make a longer key gets ENAMETOOLONG. 0 means S3's 1024.
	KeyMax int
	// StagingDir holds the encrypted staging files of non-sequential writes;
	// "" disables staging (such writes then fail with ENOTSUP).
	StagingDir string
	// StagingLimit bounds the staging files' total size; past it writers get
	// ENOSPC. 0 means no bound.
	StagingLimit int64
	// Budget bounds the read-ahead of all open files together (and, given
	// to the store, the upload parts of all files being written); nil means
	// no bound beyond the per-file ones.
	Budget *objectstore.Budget
	// ReadAhead is the sequential read-ahead window in bytes.
	ReadAhead int64
	Logger    *slog.Logger
	// Metrics receives byte and authentication-failure counts; nil: none.
	Metrics Metrics
	// MatDescFor, if set, returns materials-description entries for the new
	// object uri (URIPrefix + key, e.g. s3://bucket/key), merged over MatDesc
	// (EMRFS's {"Path": uri} with --materials-description).
	MatDescFor func(uri string) map[string]string
	// CommitmentPolicy (--commitment-policy): whether new objects are
	// written in the S3EC V3 format with key commitment (suite 115) instead
	// of V2, and whether objects without commitment may be read (refused
	// with EACCES under cse.RequireEncryptRequireDecrypt). The zero value,
	// cse.ForbidEncryptAllowDecrypt, writes V2 and reads both.
	CommitmentPolicy cse.CommitmentPolicy
	// CommitmentPolicyFor, if set, overrides CommitmentPolicy per bucket key
	// (KeyPrefix + key): encryption zones with a policy of their own.
	CommitmentPolicyFor func(bucketKey string) cse.CommitmentPolicy
	// ZoneOf, if set, names the encryption zone of a bucket key (KeyPrefix +
	// key): the zone's prefix, "" for the mount's default. A rename whose
	// source and destination (for a directory: any object under it) lie in
	// different zones fails with EXDEV, so mv copies, re-encrypting under the
	// destination's key. nil: one zone.
	ZoneOf func(bucketKey string) string
}

// FS is the shared state of one mount.
type FS struct {
	opt   Options
	store objectstore.Store
	log   *slog.Logger

	meta metaCache // metacache.go: stats, listings, negative entries, HEADs in flight, verified ETags

	deletes lazyDeletes // lazydelete.go: renamed files' old names being deleted

	inflight sync.WaitGroup // open write handles

	handlesMu sync.Mutex
	handles   map[*writeHandle]bool // open write handles, for shutdown

	stage *stager // nil when staging is off

	pendMu sync.Mutex
	pend   map[string]*fileNode // write.go: files being written, not yet committed

	attrMu    sync.Mutex
	lazy      map[string]*lazyAttr     // lazyattr.go: deferred attribute changes, by key
	pendAttrs map[*fileNode]attrChange // setattr.go: changes awaiting a stream's commit

	intents intentState // intent.go: directory renames in progress
	dirs    dirStates   // dirstate.go: directory markers and deferred mtimes
	started time.Time   // the mount's start: the mtime of directories without one
}

// New returns a filesystem and its root node.
func New(opt Options) (*FS, fs.InodeEmbedder, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.MetadataTTL <= 0 {
		opt.MetadataTTL = 5 * time.Second
	}
	if opt.FileMode == 0 {
		opt.FileMode = 0o644
	}
	if opt.DirMode == 0 {
		opt.DirMode = 0o755
	}
	if opt.NameMax <= 0 || opt.NameMax > 255 {
		opt.NameMax = 255
	}
	if opt.KeyMax <= 0 {
		opt.KeyMax = 1024
	}
	if opt.ReadAhead <= 0 {
		opt.ReadAhead = 32 << 20
	}
	f := &FS{
		opt:     opt,
		store:   opt.Store,
		log:     opt.Logger,
		pend:    make(map[string]*fileNode),
		started: time.Now().Truncate(time.Second),
	}
	if opt.StagingDir != "" {
		st, err := newStager(opt.StagingDir, opt.StagingLimit)
		if err != nil {
			return nil, nil, err
		}
		f.stage = st
	}
	return f, newDirNode(f, ""), nil
}

// WaitUploads blocks until every upload in progress has finished.
//
// Once the kernel connection is gone, every handle should have been released
// (RELEASE follows the last close). If some were not within timeout (a lazy
// detach whose RELEASE never came), their uploads are aborted, nothing
// partial is committed, and WaitUploads returns.
func (f *FS) WaitUploads(timeout time.Duration) {
	defer f.FlushDirs(context.Background())
	done := make(chan struct{})
	go func() {
		f.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(timeout):
	}
	f.handlesMu.Lock()
	left := make([]*writeHandle, 0, len(f.handles))
	for w := range f.handles {
		left = append(left, w)
	}
	f.handlesMu.Unlock()
	for _, w := range left {
		f.log.Error("file still open for writing after unmount; its changes are discarded", "object", f.uri(w.node.key()))
		w.abandon()
	}
}

// openFlags are the FOPEN flags of every file handle, for reading and for
// writing: FOPEN_DIRECT_IO. The kernel's page cache is one per inode, not
// one per version, so it cannot give each open(2) its own version:
//
//   - a write through a cached handle copies its bytes into the inode's page
//     cache before the upload commits, where any reader finds them;
//   - O_TRUNC (SETATTR size 0) and each write set the inode's size, and a
//     cached read ends there: readers of the old version got empty files
//     and prefixes;
//   - the pages one reader fetched of its version are served to a reader of
//     another version.
//
// With direct I/O no file data goes through the page cache: every read(2)
// is a READ to its own handle, which serves the version it was opened on
// (pinned to its ETag), whole, whatever the inode's size says; every
// write(2) goes straight to its handle. The handles read ahead themselves
// (read.go). mmap still works (CAP_DIRECT_IO_ALLOW_MMAP), through the page
// cache. docs/semantics.md, "Readers in the writer's mount".
//
// With Options.PageCache the handles are opened without it, as before
// direct I/O: the page cache then serves reads (and shared mmap on any
// kernel), at the price of the three problems above for readers in the
// writer's own mount.
func (f *FS) openFlags() uint32 {
	if f.opt.PageCache {
		return 0
	}
	return fuse.FOPEN_DIRECT_IO
}

// MmapWarning says what a mount loses on a kernel that did not grant
// CAP_DIRECT_IO_ALLOW_MMAP (before Linux 6.6), given the capabilities it
// negotiated: mmap(MAP_SHARED) of a direct-I/O file fails with ENODEV there.
// It is "" when nothing is lost.
func (f *FS) MmapWarning(negotiated uint64) string {
	if f.opt.PageCache || negotiated&fuse.CAP_DIRECT_IO_ALLOW_MMAP != 0 {
		return ""
	}
	return "this kernel cannot map direct-I/O files shared (it is older than Linux 6.6): mmap(MAP_SHARED) on the mount fails with ENODEV, which breaks sqlite's WAL mode and programs that map files writable; mount with --page-cache if they are needed (readers in this mount may then see an overwrite in progress)"
}

// MountOptions returns the go-fuse options csefs mounts with.
func (f *FS) MountOptions(fsName string, allowOther, debug bool) *fs.Options {
	ttl := time.Second
	if f.opt.MetadataTTL < ttl {
		ttl = f.opt.MetadataTTL
	}
	neg := ttl
	return &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:        fsName,
			Name:          "csefs",
			AllowOther:    allowOther,
			MaxWrite:      1 << 20, // Linux caps requests at 1 MiB
			MaxReadAhead:  1 << 20,
			MaxBackground: 64,
			DisableXAttrs: !f.opt.XAttrs,
			Debug:         debug,
			// MAP_SHARED of a direct-I/O file (openFlags), kernels >= 6.6.
			ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		},
		// A stored mode of 0000 is shown as it is, for the kernel's
		// default_permissions to check (go-fuse would show 0644).
		NullPermissions: true,
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &neg,
		UID:             f.opt.UID,
		GID:             f.opt.GID,
	}
}

// uri names an object for logs and providers.
func (f *FS) uri(key string) string { return f.opt.URIPrefix + key }

// logErr logs a failed operation once and returns its errno.
func (f *FS) logErr(op, key string, err error) syscall.Errno {
	errno := toErrno(err)
	f.countAuthFailure(err)
	if errno == syscall.ENOENT || errno == syscall.EINTR {
		return errno
	}
	lvl := slog.LevelWarn
	if errno == syscall.EIO || errno == syscall.EACCES {
		lvl = slog.LevelError
	}
	f.log.Log(context.Background(), lvl, "operation failed", "op", op, "object", f.uri(key), "errno", errno.Error(), "cause", err.Error())
	return errno
}

// ino gives a key a stable inode number, so that two lookups of one path
// are one inode to the kernel.
func ino(key string, dir bool) uint64 {
	h := fnv.New64a()
	if dir {
		h.Write([]byte{'d'})
	} else {
		h.Write([]byte{'f'})
	}
	h.Write([]byte(key))
	n := h.Sum64()
	if n <= 1 {
		n += 2 // 1 is the root
	}
	return n
}

// nodeKey is the object key of a file, symlink or special file node. A
// rename changes it (treeLock.retarget) while other operations may be
// reading it, so it is an atomic pointer behind key and setKey (as a
// directory's prefix is, dirNode.prefix).
type nodeKey struct{ p atomic.Pointer[string] }

// key is the node's object key.
func (k *nodeKey) key() string { return *k.p.Load() }

func (k *nodeKey) setKey(key string) { k.p.Store(&key) }

// keyedNode is a node with a nodeKey: a file, symlink or special file.
type keyedNode interface {
	key() string
	setKey(key string)
}

var (
	_ keyedNode = (*fileNode)(nil)
	_ keyedNode = (*symlinkNode)(nil)
	_ keyedNode = (*specialNode)(nil)
)

// childKey joins a directory prefix and a name.
func childKey(prefix, name string) string { return prefix + name }

// keySuffixMax is the longest suffix csefs adds to a key: an instruction
// file's ".instruction" (a marker's "/" is shorter).
const keySuffixMax = len(".instruction")

// nameMax is the longest name that fits in directory prefix.
func (f *FS) nameMax(prefix string) int {
	return max(0, min(f.opt.NameMax, f.opt.KeyMax-len(f.opt.KeyPrefix)-len(prefix)-keySuffixMax))
}

// lookupNameMax is the longest name of an object that can exist in
// directory prefix: the key without the suffixes csefs reserves for what it
// creates (a marker's "/" aside). Lookup refuses only longer names, so an
// object another tool wrote with a name over nameMax, but within the store's
// key limit, can still be opened.
func (f *FS) lookupNameMax(prefix string) int {
	return max(0, min(f.opt.NameMax, f.opt.KeyMax-len(f.opt.KeyPrefix)-len(prefix)))
}

// errNameTooLong: a name longer than the store can hold.
var errNameTooLong = fmt.Errorf("fusefs: name too long for the store: %w", syscall.ENAMETOOLONG)

// checkName refuses a new name in prefix that the store could not hold.
func (f *FS) checkName(prefix, name string) error {
	if len(name) > f.nameMax(prefix) {
		return fmt.Errorf("%d-byte name in %q (at most %d): %w", len(name), prefix, f.nameMax(prefix), errNameTooLong)
	}
	return nil
}

// validName rejects names that cannot be object key segments, and the
// reserved IntentName (intent.go).
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.Contains(name, "/") && name != IntentName
}

// splitKey splits a file's key into its directory prefix ("a/b/" or "")
// and its name.
func splitKey(key string) (dir, name string) {
	i := strings.LastIndexByte(key, '/')
	return key[:i+1], key[i+1:]
}

// parentPrefix is the directory prefix of a file's key.
func parentPrefix(key string) string {
	dir, _ := splitKey(key)
	return dir
}

var errStop = errors.New("stop")
