package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// reread is the read-cache workload: the -size test file is copied into
// the mount (untimed), then a second mount with --cache-dir, whose S3
// requests pass the counting proxy, reads it with cat twice, page cache
// dropped before each: the first read fills the cache from S3, the second
// comes from the cache. The SDK baseline reads the same object with ranged
// GETs. The GETs of each read are counted, and the file is checksummed
// after (untimed, from the cache).
func (b *bench) reread() error {
	src, err := b.source(b.opt.size)
	if err != nil {
		return err
	}
	b.logf("reread: copy %d bytes in", src.size)
	name := "reread"
	if err := runCmd(b.ctx, nil, "cp", src.path, filepath.Join(b.direct.dir, name)); err != nil {
		return err
	}
	dir := filepath.Join(b.tmp, "read-cache")
	m, err := b.mount("cached", b.s3Proxy.URL, "--cache-dir", dir, "--cache-size", fmt.Sprint(2*src.size+(64<<20)))
	if err != nil {
		return err
	}
	defer m.unmount()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	path := filepath.Join(m.dir, name)
	gets := func() int {
		c := b.s3Proxy.snapshot()
		return c["GetObject"] + c["GetObject(range)"]
	}
	var got [2]int
	for i, metric := range []string{"csefs.reread.first", "csefs.reread.cached"} {
		b.drop()
		g := gets()
		t, err := timed(func() error { return runCmd(b.ctx, devnull, "cat", path) })
		if err != nil {
			return err
		}
		got[i] = gets() - g
		b.record(metric, t)
	}
	b.drop()
	t, err := timed(func() error {
		return sdkRangedGet(b.ctx, b.s3c, b.bucket, "fs/"+name, src.size+16, sdkPartSize, sdkConcurrency)
	})
	if err != nil {
		return err
	}
	b.record("sdk.reread.ranged", t)
	b.drop()
	sum, n, err := fileSum(path)
	if err != nil {
		return err
	}
	if n != src.size || sum != src.sum {
		return fmt.Errorf("%w: %s read back from the cache: %d bytes sha256 %x, want %d bytes %x", errMismatch, path, n, sum, src.size, src.sum)
	}
	b.checks++
	b.note("read cache (%s): first read made %d GETs, the cached re-read %d", fmtSize(src.size), got[0], got[1])
	return nil
}
