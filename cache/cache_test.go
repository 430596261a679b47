package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/objectstore"
)

// countingStore counts Gets and the bytes they return.
type countingStore struct {
	objectstore.Store
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, key string, opt objectstore.GetOptions) (io.ReadCloser, *objectstore.Info, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, key, opt)
}

// countingProvider counts DecryptKey calls.
type countingProvider struct {
	cse.Provider
	decrypts atomic.Int64
	fail     bool
}

func (p *countingProvider) DecryptKey(ctx context.Context, w cse.WrappedKey) ([]byte, error) {
	p.decrypts.Add(1)
	if p.fail {
		return nil, errors.New("unwrap refused")
	}
	return p.Provider.DecryptKey(ctx, w)
}

func keyring(t *testing.T, b byte) *countingProvider {
	t.Helper()
	p, err := cse.NewKeyringProvider([]cse.MasterKey{{Name: "k", AES: bytes.Repeat([]byte{b}, 32)}}, "k")
	if err != nil {
		t.Fatal(err)
	}
	return &countingProvider{Provider: p}
}

type fixture struct {
	local objectstore.Store
	inner *countingStore
	dir   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, err := objectstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{local: st, inner: &countingStore{Store: st}, dir: filepath.Join(t.TempDir(), "cache")}
}

func (f *fixture) open(t *testing.T, p cse.Provider, size int64) (*Cache, *Store) {
	t.Helper()
	c, err := Open(context.Background(), Options{Dir: f.dir, Size: size, Provider: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, Wrap(f.inner, c)
}

func put(t *testing.T, st objectstore.Store, key string, data []byte) *objectstore.Info {
	t.Helper()
	info, err := st.Put(context.Background(), key, data, map[string]string{"x-amz-iv": "iv-of-" + key})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func read(t *testing.T, st objectstore.Store, key, etag string, off, n int64) []byte {
	t.Helper()
	rc, _, err := st.Get(context.Background(), key, objectstore.GetOptions{Offset: off, Length: n, IfMatch: etag})
	if err != nil {
		t.Fatalf("get %s %d+%d: %v", key, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCacheRanges: every range (block-aligned or not, across blocks, to the
// end, the whole object) reads the same bytes through the cache as from the
// store, and a second pass makes no Get.
func TestCacheRanges(t *testing.T) {
	f := newFixture(t)
	_, st := f.open(t, keyring(t, 1), 1<<30)
	data := make([]byte, 3*BlockSize+12345)
	rand.Read(data)
	info := put(t, f.local, "dir/obj", data)
	ranges := [][2]int64{{0, -1}, {0, 10}, {BlockSize - 5, 10}, {2*BlockSize + 1, BlockSize}, {3 * BlockSize, -1}, {int64(len(data)) - 1, 1}, {5, 3*BlockSize + 100}}
	for pass := 0; pass < 2; pass++ {
		before := f.inner.gets.Load()
		for _, r := range ranges {
			want := data[r[0]:]
			if r[1] >= 0 {
				want = data[r[0] : r[0]+r[1]]
			}
			if got := read(t, st, "dir/obj", info.ETag, r[0], r[1]); !bytes.Equal(got, want) {
				t.Fatalf("pass %d range %v: %d bytes differ from the store's %d", pass, r, len(got), len(want))
			}
		}
		if gets := f.inner.gets.Load() - before; pass == 1 && gets != 0 {
			t.Errorf("second pass made %d Gets, want 0", gets)
		}
	}
	// Unpinned Gets always go to the store.
	before := f.inner.gets.Load()
	read(t, st, "dir/obj", "", 0, 10)
	if f.inner.gets.Load() != before+1 {
		t.Error("an unpinned Get was served from the cache")
	}
}

// TestCachePersistsAndHidesNames: after Close and Open the cache serves the
// object with no Get and one DecryptKey; no file in the directory holds the
// object's name, its ETag, its metadata or a run of its bytes.
func TestCachePersistsAndHidesNames(t *testing.T) {
	f := newFixture(t)
	p := keyring(t, 1)
	c, st := f.open(t, p, 1<<30)
	marker := []byte("PLAINTEXT-MARKER-0123456789")
	data := bytes.Repeat(marker, 2*BlockSize/len(marker))
	info := put(t, f.local, "secret-name/report.csv", data)
	read(t, st, "secret-name/report.csv", info.ETag, 0, -1)
	c.Close()
	if p.decrypts.Load() != 0 {
		t.Fatalf("a new cache unwrapped its key %d times", p.decrypts.Load())
	}
	_, st = f.open(t, p, 1<<30)
	if p.decrypts.Load() != 1 {
		t.Errorf("reopening made %d DecryptKey calls, want 1", p.decrypts.Load())
	}
	before := f.inner.gets.Load()
	rc, gi, err := st.Get(context.Background(), "secret-name/report.csv", objectstore.GetOptions{Length: -1, IfMatch: info.ETag})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) || f.inner.gets.Load() != before {
		t.Errorf("after reopening: equal %v, %d Gets", bytes.Equal(got, data), f.inner.gets.Load()-before)
	}
	if gi.Size != int64(len(data)) || gi.Metadata["x-amz-iv"] != "iv-of-secret-name/report.csv" {
		t.Errorf("cached Info = %+v", gi)
	}
	scanFor(t, f.dir, [][]byte{marker[:16], []byte("secret-name"), []byte("report.csv"), []byte(strings.Trim(info.ETag, `"`)), []byte("iv-of")})
}

// scanFor fails if any file under dir contains one of needles.
func scanFor(t *testing.T, dir string, needles [][]byte) {
	t.Helper()
	files := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, _ := os.ReadFile(p)
		for _, n := range needles {
			if bytes.Contains(b, n) || strings.Contains(p, string(n)) {
				t.Errorf("%s holds %q", p, n)
			}
		}
		return nil
	})
	if files < 3 {
		t.Errorf("only %d files in the cache directory", files)
	}
}

// TestCacheChangedObject: an overwritten object has a new ETag and is
// fetched again; the old version's blocks are not served for it.
func TestCacheChangedObject(t *testing.T) {
	f := newFixture(t)
	_, st := f.open(t, keyring(t, 1), 1<<30)
	v1 := put(t, f.local, "o", bytes.Repeat([]byte{1}, 100))
	read(t, st, "o", v1.ETag, 0, -1)
	v2 := put(t, f.local, "o", bytes.Repeat([]byte{2}, 100))
	before := f.inner.gets.Load()
	if got := read(t, st, "o", v2.ETag, 0, -1); !bytes.Equal(got, bytes.Repeat([]byte{2}, 100)) {
		t.Fatalf("read of the new version: %v", got[:4])
	}
	if f.inner.gets.Load() != before+1 {
		t.Error("the new version was not fetched")
	}
}

// TestCacheKeyNotUnwrapped: a cache whose key cannot be unwrapped (another
// master key, or the provider refuses) is discarded and rebuilt.
func TestCacheKeyNotUnwrapped(t *testing.T) {
	f := newFixture(t)
	c, st := f.open(t, keyring(t, 1), 1<<30)
	info := put(t, f.local, "o", bytes.Repeat([]byte{1}, 100))
	read(t, st, "o", info.ETag, 0, -1)
	c.Close()
	other := keyring(t, 2)
	c2, st2 := f.open(t, other, 1<<30)
	if c2.Stats() != (Stats{}) || len(c2.objects) != 0 {
		t.Errorf("a cache under another key kept its entries")
	}
	before := f.inner.gets.Load()
	read(t, st2, "o", info.ETag, 0, -1)
	if f.inner.gets.Load() != before+1 {
		t.Error("served from a cache whose key was not unwrapped")
	}
}

// TestCacheLRU: the directory stays within its size; the least recently
// used blocks go first.
func TestCacheLRU(t *testing.T) {
	f := newFixture(t)
	c, st := f.open(t, keyring(t, 1), 3*BlockSize+1000)
	var infos []*objectstore.Info
	for i := 0; i < 4; i++ {
		infos = append(infos, put(t, f.local, "o"+string(rune('a'+i)), bytes.Repeat([]byte{byte(i)}, BlockSize)))
	}
	read(t, st, "oa", infos[0].ETag, 0, -1)
	read(t, st, "ob", infos[1].ETag, 0, -1)
	read(t, st, "oc", infos[2].ETag, 0, -1)
	read(t, st, "oa", infos[0].ETag, 0, -1) // a is now the most recent
	read(t, st, "od", infos[3].ETag, 0, -1) // evicts b
	if c.used > c.opt.Size {
		t.Errorf("used %d > size %d", c.used, c.opt.Size)
	}
	before := f.inner.gets.Load()
	read(t, st, "oa", infos[0].ETag, 0, -1)
	if f.inner.gets.Load() != before {
		t.Error("the recently used block was evicted")
	}
	read(t, st, "ob", infos[1].ETag, 0, -1)
	if f.inner.gets.Load() != before+1 {
		t.Error("the least recently used block was not evicted")
	}
}

// TestCacheLocked: a second Open of a directory in use fails.
func TestCacheLocked(t *testing.T) {
	f := newFixture(t)
	f.open(t, keyring(t, 1), 1<<20)
	if _, err := Open(context.Background(), Options{Dir: f.dir, Size: 1 << 20, Provider: keyring(t, 1)}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
}

// TestCacheUnwritable: when blocks cannot be written (the directory is
// read-only, as a full disk would refuse them) reads still succeed.
func TestCacheUnwritable(t *testing.T) {
	f := newFixture(t)
	c, st := f.open(t, keyring(t, 1), 1<<30)
	root := filepath.Join(f.dir, blockDir)
	os.RemoveAll(root)
	if err := os.WriteFile(root, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{9}, 2*BlockSize)
	info := put(t, f.local, "o", data)
	for i := 0; i < 2; i++ {
		if got := read(t, st, "o", info.ETag, 0, -1); !bytes.Equal(got, data) {
			t.Fatal("read through an unwritable cache differs")
		}
	}
	if s := c.Stats(); s.StoreErrors == 0 || s.Stored != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestCacheConcurrent: concurrent readers of overlapping ranges get the
// right bytes (run with -race).
func TestCacheConcurrent(t *testing.T) {
	f := newFixture(t)
	_, st := f.open(t, keyring(t, 1), 4*BlockSize)
	data := make([]byte, 6*BlockSize)
	rand.Read(data)
	info := put(t, f.local, "o", data)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				off := int64((g*7+i*13)%6) * BlockSize / 2
				n := int64(BlockSize + 777)
				if off+n > int64(len(data)) {
					n = int64(len(data)) - off
				}
				rc, _, err := st.Get(context.Background(), "o", objectstore.GetOptions{Offset: off, Length: n, IfMatch: info.ETag})
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, data[off:off+n]) {
					t.Errorf("range %d+%d differs (%v)", off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestCacheTamper: a block file swapped for another (valid, sealed) block
// does not authenticate under its name: the read is correct, from the
// store. A damaged index makes the reopened cache start empty.
func TestCacheTamper(t *testing.T) {
	f := newFixture(t)
	c, st := f.open(t, keyring(t, 1), 1<<30)
	data := make([]byte, 2*BlockSize)
	rand.Read(data)
	info := put(t, f.local, "o", data)
	read(t, st, "o", info.ETag, 0, -1)
	id := objID{"o", info.ETag}
	b0, b1 := c.blockPath(c.blockName(id, 0)), c.blockPath(c.blockName(id, 1))
	sealed1, err := os.ReadFile(b1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b0, sealed1, 0o600); err != nil {
		t.Fatal(err)
	}
	before := f.inner.gets.Load()
	if got := read(t, st, "o", info.ETag, 0, -1); !bytes.Equal(got, data) {
		t.Fatal("a swapped block was served")
	}
	if f.inner.gets.Load() == before {
		t.Error("the swapped block was not refetched")
	}
	c.Close()
	ix := filepath.Join(f.dir, indexFile)
	b, err := os.ReadFile(ix)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	os.WriteFile(ix, b, 0o600)
	c2, _ := f.open(t, keyring(t, 1), 1<<30)
	if len(c2.objects) != 0 || c2.used != 0 {
		t.Errorf("a damaged index was trusted: %d objects", len(c2.objects))
	}
	if files, _ := filepath.Glob(filepath.Join(f.dir, blockDir, "*", "*")); len(files) != 0 {
		t.Errorf("%d block files left after the index was discarded", len(files))
	}
}
