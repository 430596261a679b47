package fusefs

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Staging: writes that cannot stream (random writes, appends, edits in place,
// truncation to a non-zero size) go to a local staging file, and the whole
// file is uploaded as one new object on flush, fsync or close.
//
// A staging file never holds plaintext. It is a sequence of fixed slots, one
// per stageBlock of plaintext: nonce(12) ‖ AES-256-GCM(block) ‖ tag(16), with
// the file's random id and the block number as additional data, under a
// per-mount key that exists only in memory. A slot of zeros is a hole (never
// written) and reads as zeros. Bytes past the plaintext size within the last
// block are kept zero, so growing a file shows zeros.

const (
	stageBlock = 32 << 10
	stageSlot  = 12 + stageBlock + 16
)

// errStagingFull: the staging bound would be exceeded.
var errStagingFull = fmt.Errorf("fusefs: staging space exhausted: %w", syscall.ENOSPC)

// stager owns the staging directory, the per-mount key and the space bound.
type stager struct {
	dir   string
	limit int64
	aead  cipher.AEAD

	mu   sync.Mutex
	used int64
}

func newStager(dir string, limit int64) (*stager, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("staging directory: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	clear(key) // the expanded key lives on in block; this copy need not
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &stager{dir: dir, limit: limit, aead: aead}
	s.removeStale()
	return s, nil
}

// removeStale deletes staging files left by dead processes (they cannot be
// decrypted by anyone: their key died with the process).
func (s *stager) removeStale() {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "csefs-stage-")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}

// reserve charges n bytes (may be negative) against the bound.
func (s *stager) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > 0 && s.limit > 0 && s.used+n > s.limit {
		return errStagingFull
	}
	s.used += n
	return nil
}

// stageFile is one staged file. Its methods are safe for concurrent use.
type stageFile struct {
	st *stager

	mu       sync.Mutex
	f        *os.File
	id       [16]byte
	size     int64 // plaintext size
	reserved int64 // bytes charged to the stager
}

func (s *stager) create() (*stageFile, error) {
	f, err := os.CreateTemp(s.dir, fmt.Sprintf("csefs-stage-%d-*", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("staging file: %w", err)
	}
	sf := &stageFile{st: s, f: f}
	if _, err := rand.Read(sf.id[:]); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return sf, nil
}

// Close removes the staging file and returns its space.
func (sf *stageFile) Close() error {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if sf.f == nil {
		return nil
	}
	name := sf.f.Name()
	err := sf.f.Close()
	os.Remove(name)
	sf.f = nil
	sf.st.reserve(-sf.reserved)
	sf.reserved = 0
	return err
}

// Size is the plaintext size.
func (sf *stageFile) Size() int64 {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	return sf.size
}

func slotsFor(size int64) int64 { return (size + stageBlock - 1) / stageBlock }

// grow charges the space for a plaintext size of n.
func (sf *stageFile) grow(n int64) error {
	need := slotsFor(n) * stageSlot
	if need <= sf.reserved {
		return nil
	}
	if err := sf.st.reserve(need - sf.reserved); err != nil {
		return err
	}
	sf.reserved = need
	return nil
}

func (sf *stageFile) ad(blockNo int64) []byte {
	var ad [24]byte
	copy(ad[:16], sf.id[:])
	binary.BigEndian.PutUint64(ad[16:], uint64(blockNo))
	return ad[:]
}

// readBlock returns block blockNo's plaintext into buf (len stageBlock).
func (sf *stageFile) readBlock(blockNo int64, buf []byte) error {
	slot := make([]byte, stageSlot)
	n, err := sf.f.ReadAt(slot, blockNo*stageSlot)
	if err != nil && err != io.EOF {
		return err
	}
	if n < stageSlot || isZero(slot) {
		clear(buf)
		return nil
	}
	_, err = sf.st.aead.Open(buf[:0], slot[:12], slot[12:], sf.ad(blockNo))
	if err != nil {
		return fmt.Errorf("staging block %d does not authenticate: %w", blockNo, err)
	}
	return nil
}

func (sf *stageFile) writeBlock(blockNo int64, plain []byte) error {
	slot := make([]byte, 12, stageSlot)
	if _, err := rand.Read(slot); err != nil {
		return err
	}
	slot = sf.st.aead.Seal(slot, slot[:12], plain, sf.ad(blockNo))
	_, err := sf.f.WriteAt(slot, blockNo*stageSlot)
	return err
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ReadAt reads plaintext; it returns io.EOF at the end like os.File.
func (sf *stageFile) ReadAt(p []byte, off int64) (int, error) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if sf.f == nil {
		return 0, os.ErrClosed
	}
	if off >= sf.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), sf.size-off)
	buf := make([]byte, stageBlock)
	var done int64
	for done < want {
		pos := off + done
		blockNo := pos / stageBlock
		if err := sf.readBlock(blockNo, buf); err != nil {
			return int(done), err
		}
		in := pos - blockNo*stageBlock
		done += int64(copy(p[done:want], buf[in:]))
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// WriteAt writes plaintext, growing the file as needed.
func (sf *stageFile) WriteAt(p []byte, off int64) (int, error) {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if sf.f == nil {
		return 0, os.ErrClosed
	}
	end := off + int64(len(p))
	if err := sf.grow(end); err != nil {
		return 0, err
	}
	buf := make([]byte, stageBlock)
	var done int64
	for done < int64(len(p)) {
		pos := off + done
		blockNo := pos / stageBlock
		in := pos - blockNo*stageBlock
		n := min(int64(len(p))-done, stageBlock-in)
		if in != 0 || n != stageBlock {
			if err := sf.readBlock(blockNo, buf); err != nil {
				return int(done), err
			}
		}
		copy(buf[in:], p[done:done+n])
		if err := sf.writeBlock(blockNo, buf); err != nil {
			return int(done), err
		}
		done += n
	}
	sf.size = max(sf.size, end)
	return len(p), nil
}

// Truncate sets the plaintext size; growing adds zeros.
func (sf *stageFile) Truncate(size int64) error {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if sf.f == nil {
		return os.ErrClosed
	}
	if size > sf.size {
		if err := sf.grow(size); err != nil {
			return err
		}
		sf.size = size
		return nil
	}
	// Zero the tail of the new last block, drop the slots after it.
	if in := size % stageBlock; in != 0 {
		buf := make([]byte, stageBlock)
		blockNo := size / stageBlock
		if err := sf.readBlock(blockNo, buf); err != nil {
			return err
		}
		clear(buf[in:])
		if err := sf.writeBlock(blockNo, buf); err != nil {
			return err
		}
	}
	if err := sf.f.Truncate(slotsFor(size) * stageSlot); err != nil {
		return err
	}
	sf.size = size
	keep := slotsFor(size) * stageSlot
	if keep < sf.reserved {
		sf.st.reserve(keep - sf.reserved)
		sf.reserved = keep
	}
	return nil
}

// reader returns the staged plaintext as a stream from offset 0.
func (sf *stageFile) reader() io.Reader {
	return io.NewSectionReader(sf, 0, sf.Size())
}

// Node staging. A file node has at most one staging file, shared by all its
// handles in stage mode, each holding a reference (acquireStage). It is
// seeded with the object's content when made, uploaded whole by flushStage
// when changed (Flush, Fsync, the last release), and removed when the last
// reference goes. fileNode.stageMu serialises its setup, uploads and
// teardown.

// stageFile returns the node's staging file; a handle in stage mode holds a
// reference, so it is not nil for it.
func (n *fileNode) stageFile() *stageFile {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stage
}

func (n *fileNode) markDirty() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stageDirty = true
}

// acquireStage returns the node's staging file, creating it on first use
// (fresh) with the object's current content unless empty is set.
func (n *fileNode) acquireStage(ctx context.Context, empty bool) (sf *stageFile, fresh bool, err error) {
	n.stageMu.Lock()
	defer n.stageMu.Unlock()
	n.mu.Lock()
	if n.stage != nil {
		n.stageRefs++
		sf := n.stage
		n.mu.Unlock()
		return sf, false, nil
	}
	n.mu.Unlock()
	f := n.fsys
	// The staged version starts from the stored attributes: store the
	// deferred ones first (lazyattr.go), as open(2) for writing does.
	if err := f.flushAttrs(ctx, n.key()); err != nil {
		return nil, false, err
	}
	sf, err = f.stage.create()
	if err != nil {
		return nil, false, err
	}
	attrs := fileAttrs(f.opt.FileMode)
	o, err := f.head(ctx, n.key())
	switch {
	case err == nil:
		attrs = o.attrs
		attrs.HasMtime = false
		if !attrs.HasMode {
			attrs = fileAttrs(f.opt.FileMode)
		}
		if !empty && o.plainSize > 0 {
			if err := n.fsys.fill(ctx, o, sf); err != nil {
				sf.Close()
				return nil, false, err
			}
		}
	case !isNotFound(err):
		sf.Close()
		return nil, false, err
	}
	n.mu.Lock()
	n.stage, n.stageRefs, n.stageDirty, n.stageAttrs = sf, 1, false, attrs
	n.mu.Unlock()
	return sf, true, nil
}

// fill copies an object's authenticated plaintext into a staging file.
func (f *FS) fill(ctx context.Context, o *object, sf *stageFile) error {
	r, err := f.newReaderNoPreload(ctx, o)
	if err != nil {
		return err
	}
	defer r.Release(ctx)
	src, c, err := r.openStream(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if _, werr := sf.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("object %s: %w", o.key, err)
		}
	}
	if off != o.plainSize {
		return fmt.Errorf("object %s: read %d of %d bytes: %w", o.key, off, o.plainSize, errTruncatedObject)
	}
	return nil
}

// flushStage uploads the staged content if it changed since the last upload.
func (n *fileNode) flushStage(ctx context.Context) error {
	n.stageMu.Lock()
	defer n.stageMu.Unlock()
	return n.flushStageLocked(ctx)
}

func (n *fileNode) flushStageLocked(ctx context.Context) error {
	n.mu.Lock()
	sf, dirty, attrs := n.stage, n.stageDirty, n.stageAttrs
	n.mu.Unlock()
	if sf == nil || !dirty || n.unlinked.Load() {
		return nil // unchanged, or unlinked while open: nothing to store
	}
	f := n.fsys
	committed := false
	defer func() {
		if !committed {
			// A new file's name, which the listing got at create time,
			// must not outlive the failure.
			f.dirChanged(parentPrefix(n.key()))
		}
	}()
	u, err := f.beginUpload(ctx, n.key(), attrs)
	if err != nil {
		return err
	}
	if _, err := io.Copy(u, sf.reader()); err != nil {
		u.abort(ctx)
		return err
	}
	o, err := u.commit(ctx)
	if err != nil {
		u.abort(ctx)
		return err
	}
	committed = true
	n.mu.Lock()
	n.stageDirty = false
	n.mu.Unlock()
	n.committed(o)
	return nil
}

// releaseStage drops a reference; the last one uploads what no Flush did
// and removes the staging file.
func (n *fileNode) releaseStage(ctx context.Context) {
	n.stageMu.Lock()
	defer n.stageMu.Unlock()
	n.mu.Lock()
	n.stageRefs--
	last := n.stageRefs == 0
	n.mu.Unlock()
	if !last {
		return
	}
	if err := n.flushStageLocked(ctx); err != nil {
		n.fsys.logErr("release", n.key(), err)
	}
	n.mu.Lock()
	sf := n.stage
	n.stage = nil
	n.mu.Unlock()
	if sf != nil {
		sf.Close()
	}
}

// dropStage releases a reference without uploading (shutdown).
func (n *fileNode) dropStage() {
	n.stageMu.Lock()
	defer n.stageMu.Unlock()
	n.mu.Lock()
	n.stageRefs--
	var sf *stageFile
	if n.stageRefs == 0 {
		sf, n.stage = n.stage, nil
	}
	n.mu.Unlock()
	if sf != nil {
		sf.Close()
	}
}
