package e2e

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/csefs/csefs/e2e/testenv"
)

// getCount is the number of GETs (whole and ranged) p has seen.
func getCount(p *testenv.FaultProxy) int {
	return p.Requests("GetObject") + p.Requests("GetObject(range)")
}

// fileSum reads a file whole and returns its SHA-256.
func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestReadCache: with --cache-dir, a 200 MiB file read twice makes one set
// of GETs; after a restart of the daemon the cache is still used, at the
// cost of exactly one KMS Decrypt (its key) before any read; a file
// overwritten by another mount is fetched again; and no file of the cache
// directory holds a plaintext marker, an object name or an ETag. GETs and
// KMS calls are counted at proxies in front of MinIO and local-kms.
func TestReadCache(t *testing.T) {
	w := newWorld(t)
	s3p := testenv.NewFaultProxy(t, w.S3.Endpoint, testenv.S3Op)
	kmsp := testenv.NewFaultProxy(t, w.KMS.Endpoint, testenv.KMSOp)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	cached := func() *mounted {
		args := w.s3Args("--cache-dir", cacheDir, "--cache-size", "1GiB", "--metadata-ttl", "1s")
		args[slices.Index(args, "--endpoint-url")+1] = s3p.URL
		args[slices.Index(args, "--kms-endpoint-url")+1] = kmsp.URL
		return mountWith(t, w.env, "s3://"+w.Bucket, args...)
	}
	writer := w.mount(t, "")
	big := randomFile(t, t.TempDir(), "big", 200<<20)
	run(t, "cp", big, writer.path("big.bin"))
	want := fileSum(t, big)
	marker := []byte("CSEFS-CACHE-PLAINTEXT-MARKER\n")
	if err := os.WriteFile(writer.path("cache-secret-name.txt"), bytes.Repeat(marker, 100000), 0o644); err != nil {
		t.Fatal(err)
	}

	m := cached()
	g0 := getCount(s3p)
	if fileSum(t, m.path("big.bin")) != want {
		t.Fatal("first read differs")
	}
	g1 := getCount(s3p)
	if fileSum(t, m.path("big.bin")) != want {
		t.Fatal("second read differs")
	}
	g2 := getCount(s3p)
	t.Logf("GETs: first read %d, second read %d", g1-g0, g2-g1)
	if g1-g0 == 0 || g2 != g1 {
		t.Errorf("first read made %d GETs, second %d; want some, then none", g1-g0, g2-g1)
	}
	if b, err := os.ReadFile(m.path("cache-secret-name.txt")); err != nil || !bytes.Contains(b, marker) {
		t.Fatalf("read of the marker file: %v", err)
	}
	m.Unmount(t)

	// Restart: one KMS Decrypt (the cache key) before any read, then reads
	// from the cache.
	d0 := kmsp.Requests("Decrypt")
	m = cached()
	if d := kmsp.Requests("Decrypt") - d0; d != 1 {
		t.Errorf("the restarted mount made %d KMS Decrypt calls before any read, want 1 (the cache key)", d)
	}
	if !strings.Contains(m.logText(t), "read cache open") {
		t.Errorf("log does not show the cache:\n%s", m.logText(t))
	}
	g3 := getCount(s3p)
	if fileSum(t, m.path("big.bin")) != want {
		t.Fatal("read after restart differs")
	}
	if g := getCount(s3p) - g3; g != 0 {
		t.Errorf("read after restart made %d GETs, want 0", g)
	}

	// Overwritten by another mount: fetched again, never served stale.
	newer := randomFile(t, t.TempDir(), "newer", 3<<20)
	run(t, "cp", newer, writer.path("big.bin"))
	wantNew := fileSum(t, newer)
	g4 := getCount(s3p)
	for deadline := time.Now().Add(30 * time.Second); fileSum(t, m.path("big.bin")) != wantNew; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cached mount still serves the old version")
		}
	}
	if getCount(s3p) == g4 {
		t.Error("the new version was read without a GET")
	}
	m.Unmount(t)

	scanCacheDir(t, cacheDir, [][]byte{marker[:20], []byte("cache-secret-name"), []byte("big.bin"), []byte(w.Bucket)})
}

// scanCacheDir fails if a file name or content under dir holds a needle.
func scanCacheDir(t *testing.T, dir string, needles [][]byte) {
	t.Helper()
	var files int
	var total int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			t.Error(err)
		}
		total += int64(len(b))
		for _, n := range needles {
			if bytes.Contains(b, n) || strings.Contains(p, string(n)) {
				t.Errorf("%s holds %q", p, n)
			}
		}
		return nil
	})
	t.Logf("cache directory: %d files, %d bytes", files, total)
	if total < 200<<20 {
		t.Errorf("the cache holds %d bytes; the 200 MiB file is not in it", total)
	}
}

// TestReadCacheBadKey: a second mount on a cache directory in use is
// refused; a cache whose key KMS will not unwrap (its wrapped copy damaged)
// is discarded with a log line and rebuilt, and reads work.
func TestReadCacheBadKey(t *testing.T) {
	w := newWorld(t)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	m := w.mount(t, "", "--cache-dir", cacheDir)
	if err := os.WriteFile(m.path("f.txt"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(m.path("f.txt")); err != nil {
		t.Fatal(err)
	}
	_, out, err := tryMount(t, w.env, "s3://"+w.Bucket, w.s3Args("--cache-dir", cacheDir)...)
	if err == nil || !strings.Contains(out, "in use by another mount") {
		t.Errorf("second mount on the same cache directory: %v\n%s", err, out)
	}
	m.Unmount(t)
	kf := filepath.Join(cacheDir, "key.json")
	b, err := os.ReadFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte inside the base64 blob: KMS refuses the ciphertext.
	i := bytes.Index(b, []byte(`"blob":"`)) + len(`"blob":"`) + 40
	b[i] ^= 'A' ^ 'B'
	if b[i] == '"' || b[i] == '\\' {
		b[i] = 'C'
	}
	if err := os.WriteFile(kf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	m = w.mount(t, "", "--cache-dir", cacheDir)
	if got, err := os.ReadFile(m.path("f.txt")); err != nil || string(got) != "data" {
		t.Fatalf("read after the cache was discarded: %v %q", err, got)
	}
	if log := m.logText(t); !strings.Contains(log, "its key cannot be unwrapped; discarding the cache") {
		t.Errorf("no log line for the discarded cache:\n%s", log)
	}
}

// TestReadCacheKeyringAndFullDisk: under --cse custom the cache key comes
// from the keyring: after a restart the cache serves a re-read with no miss
// (the unmount log's counters). With the cache directory on a full disk
// (a 1 MiB tmpfs) every read still succeeds, uncached, and the log says so.
func TestReadCacheKeyringAndFullDisk(t *testing.T) {
	requireFUSE(t)
	env := cleanEnv(t)
	bucket := t.TempDir()
	w := mountWith(t, env, "file://"+bucket)
	src := randomFile(t, t.TempDir(), "src", 20<<20)
	run(t, "cp", src, w.path("f.bin"))
	want := fileSum(t, src)
	w.Unmount(t)

	cacheDir := filepath.Join(t.TempDir(), "cache")
	m := mountWith(t, env, "file://"+bucket, "--cache-dir", cacheDir)
	if fileSum(t, m.path("f.bin")) != want {
		t.Fatal("first read differs")
	}
	m.Unmount(t)
	m = mountWith(t, env, "file://"+bucket, "--cache-dir", cacheDir)
	if fileSum(t, m.path("f.bin")) != want {
		t.Fatal("read after restart differs")
	}
	m.Unmount(t)
	log := m.logText(t)
	if !strings.Contains(log, "objects=1") || !strings.Contains(log, "misses=0") || strings.Contains(log, "hits=0") {
		t.Errorf("the restarted mount did not serve the re-read from the cache:\n%s", log)
	}
	scanCacheDirFor(t, cacheDir, [][]byte{[]byte("f.bin")})

	full := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", full).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", full).Run() })
	m = mountWith(t, env, "file://"+bucket, "--cache-dir", filepath.Join(full, "cache"), "--cache-size", "1GiB")
	for i := 0; i < 2; i++ {
		if fileSum(t, m.path("f.bin")) != want {
			t.Fatalf("read %d with a full cache disk differs", i)
		}
	}
	m.Unmount(t)
	if log := m.logText(t); !strings.Contains(log, "cannot store a block (disk full?); reads continue uncached") {
		t.Errorf("no log line for the full cache disk:\n%s", log)
	}
}

// scanCacheDirFor fails if a file name or content under dir holds a needle.
func scanCacheDirFor(t *testing.T, dir string, needles [][]byte) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, n := range needles {
			if bytes.Contains(b, n) || strings.Contains(p, string(n)) {
				t.Errorf("%s holds %q", p, n)
			}
		}
		return nil
	})
}
