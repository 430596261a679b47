package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The rclone+crypt column: rclone mount of a crypt remote over an s3 remote
// of the bench's MinIO, --vfs-cache-mode off (every write goes to S3 before
// close returns, every read comes from S3, as with csefs), with rclone's
// defaults otherwise. The remotes of the config:
//
//	s3direct, s3counted  the bench's bucket, at MinIO / at the counting proxy
//	crypt, cryptcounted  crypt remotes over BUCKET/rclone of each, one password
//
// Every workload is timed on crypt:; create and ls run a second time on
// cryptcounted: so that their S3 requests are counted, as for csefs.

// Errors of driving rclone.
var (
	// errRcloneExited: the rclone mount process ended before the mount
	// appeared (its log says why).
	errRcloneExited = errors.New("rclone mount exited")
	// errNotMounted: the mount did not appear in /proc/self/mountinfo in time.
	errNotMounted = errors.New("mount did not appear")
)

// rcloneMountTimeout bounds the wait for an rclone mount to appear and for
// its process to exit after an unmount.
const rcloneMountTimeout = 60 * time.Second

// rcloneConfig returns the text of an rclone config with the remotes above:
// s3 remotes of provider Minio, path style, at endpoint and proxyEndpoint,
// and crypt remotes over bucket/prefix of each with the already-obscured
// password and salt (rclone obscure). Standard name encryption, as by default.
func rcloneConfig(endpoint, proxyEndpoint, accessKey, secretKey, region, bucket, prefix, obscuredPass, obscuredSalt string) string {
	var sb strings.Builder
	for _, r := range []struct{ s3, crypt, endpoint string }{
		{"s3direct", "crypt", endpoint}, {"s3counted", "cryptcounted", proxyEndpoint},
	} {
		fmt.Fprintf(&sb, "[%s]\ntype = s3\nprovider = Minio\nenv_auth = false\naccess_key_id = %s\nsecret_access_key = %s\n"+
			"region = %s\nendpoint = %s\nforce_path_style = true\n\n", r.s3, accessKey, secretKey, region, r.endpoint)
		fmt.Fprintf(&sb, "[%s]\ntype = crypt\nremote = %s:%s/%s\nfilename_encryption = standard\ndirectory_name_encryption = true\n"+
			"password = %s\npassword2 = %s\n\n", r.crypt, r.s3, bucket, prefix, obscuredPass, obscuredSalt)
	}
	return sb.String()
}

// rcloneSetup writes the rclone config into the bench's temporary directory
// and adds RCLONE_CONFIG to b.rcEnv.
func (b *bench) rcloneSetup() error {
	obscure := func() (string, error) {
		var p [24]byte
		if _, err := rand.Read(p[:]); err != nil {
			return "", err
		}
		var out strings.Builder
		if err := runCmd(b.ctx, &out, b.rcloneBin, "obscure", hex.EncodeToString(p[:])); err != nil {
			return "", err
		}
		return strings.TrimSpace(out.String()), nil
	}
	pass, err := obscure()
	if err != nil {
		return err
	}
	salt, err := obscure()
	if err != nil {
		return err
	}
	conf := filepath.Join(b.tmp, "rclone.conf")
	text := rcloneConfig(b.s3srv.Endpoint, b.s3Proxy.URL, b.s3srv.AccessKey, b.s3srv.SecretKey, b.s3srv.Region, b.bucket, "rclone", pass, salt)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	b.rcEnv = append(slices.Clone(b.env), "RCLONE_CONFIG="+conf, "RCLONE_CACHE_DIR="+filepath.Join(b.tmp, "rclone-cache"))
	return nil
}

// rcloneMount is one running `rclone mount`, a child of the bench in its own
// process group (a Ctrl-C reaches the bench, which then unmounts).
type rcloneMount struct {
	dir, log string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has been waited for
	waitErr  error         // cmd.Wait's result, once exited is closed
	mounted  bool
}

// rcloneMountRemote mounts remote (crypt: or cryptcounted:) at tmp/mnt-name
// with --vfs-cache-mode off and returns once the mount is in
// /proc/self/mountinfo. The mount is unmounted by b.cleanup at the latest.
func (b *bench) rcloneMountRemote(remote, name string) (*rcloneMount, error) {
	m := &rcloneMount{
		dir:    filepath.Join(b.tmp, "mnt-"+name),
		log:    filepath.Join(b.tmp, "rclone-"+name+".log"),
		exited: make(chan struct{}),
	}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return nil, err
	}
	m.cmd = exec.Command(b.rcloneBin, "mount", remote, m.dir, "--vfs-cache-mode", "off", "--log-file", m.log)
	m.cmd.Env = b.rcEnv
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("rclone mount: %w", err)
	}
	go func() { m.waitErr = m.cmd.Wait(); close(m.exited) }()
	m.mounted = true
	b.cleanups = append(b.cleanups, func() {
		if err := m.unmount(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	})
	if err := waitMounted(b.ctx, m.dir, m.exited, rcloneMountTimeout); err != nil {
		if errors.Is(err, errRcloneExited) {
			err = fmt.Errorf("%w (%v); log %s: %s", err, m.waitErr, m.log, tail(m.log, 400))
		}
		return nil, fmt.Errorf("rclone mount %s: %w", remote, err)
	}
	return m, nil
}

// pid is the rclone process's pid.
func (m *rcloneMount) pid() int { return m.cmd.Process.Pid }

// unmount unmounts with fusermount3 -u and waits for rclone to exit; if that
// fails it sends SIGTERM (rclone unmounts itself on it), then SIGKILL and a
// lazy unmount. It is safe to call more than once.
func (m *rcloneMount) unmount() error {
	if !m.mounted {
		return nil
	}
	m.mounted = false
	var errs []error
	if out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("fusermount3 -u %s: %v: %s", m.dir, err, strings.TrimSpace(string(out))))
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-m.exited:
	case <-time.After(rcloneMountTimeout):
		errs = append(errs, fmt.Errorf("rclone mount %s did not exit after unmount: killed", m.dir))
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	if slices.Contains(mountsUnder(m.dir), m.dir) {
		_ = exec.Command("fusermount3", "-uz", m.dir).Run()
		errs = append(errs, fmt.Errorf("%s still mounted after rclone exited: lazily unmounted", m.dir))
	}
	return errors.Join(errs...)
}

// crashed reports whether the rclone log shows a panic or an error.
func (m *rcloneMount) crashed() string {
	b, _ := os.ReadFile(m.log)
	for _, bad := range []string{"panic:", "fatal error:", "ERROR :"} {
		if strings.Contains(string(b), bad) {
			return bad
		}
	}
	return ""
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	return tailBytes(b, n)
}

// waitMounted returns once dir is a mountpoint in /proc/self/mountinfo. It
// sleeps in poll(2) on mountinfo, which the kernel wakes (POLLPRI) whenever
// the mount table changes, so there is no polling interval to tune; the
// poll's timeout only bounds how late an exit of the mounting process
// (exited closed: errRcloneExited), the end of ctx or the timeout
// (errNotMounted) are seen.
func waitMounted(ctx context.Context, dir string, exited <-chan struct{}, timeout time.Duration) error {
	f, err := os.Open("/proc/self/mountinfo") // opened first: any change after this wakes the poll
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	for {
		if slices.Contains(mountsUnder(dir), dir) {
			return nil
		}
		select {
		case <-exited:
			return errRcloneExited
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w at %s within %v", errNotMounted, dir, timeout)
		}
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
		if _, err := unix.Poll(fds, 100); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll mountinfo: %w", err)
		}
	}
}

// rcloneCmd runs rclone with the bench's config, killed if b.ctx ends.
func (b *bench) rcloneCmd(args ...string) error {
	cmd := exec.CommandContext(b.ctx, b.rcloneBin, args...)
	cmd.Env = b.rcEnv
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("rclone %s: %v: %s", strings.Join(args, " "), err, tailBytes(out, 400))
	}
	return nil
}

// tailBytes returns the last n bytes of b as trimmed text.
func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// rcloneSeq is one run of the write and read workloads through rclone:
// cp of the page-cached source into the mount (close returns once rclone
// has uploaded it), then cat to /dev/null after dropping caches, then,
// untimed and cold, a checksum of the file read back.
func (b *bench) rcloneSeq(size int64, run int) error {
	src, err := b.source(size)
	if err != nil {
		return err
	}
	path := filepath.Join(b.rc.dir, "seq")
	pid := b.rc.pid()
	b.logf("run %d: rclone write", run)
	b.drop()
	if err := warm(src.path); err != nil {
		return err
	}
	if err := b.rssPhase(pid, "rclone.write", func() error {
		t, err := timed(func() error { return runCmd(b.ctx, nil, "cp", src.path, path) })
		b.record("rclone.write", t)
		return err
	}); err != nil {
		return err
	}
	b.logf("run %d: rclone read", run)
	b.drop()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	if err := b.rssPhase(pid, "rclone.read", func() error {
		t, err := timed(func() error { return runCmd(b.ctx, devnull, "cat", path) })
		b.record("rclone.read", t)
		return err
	}); err != nil {
		return err
	}
	b.drop()
	sum, n, err := fileSum(path)
	if err != nil {
		return fmt.Errorf("reading back %s: %w", path, err)
	}
	if n != size || sum != src.sum {
		return fmt.Errorf("%w: %s (rclone) read back %d bytes with sha256 %x, want %d bytes %x", errMismatch, path, n, sum, size, src.sum)
	}
	b.rcChecks++
	return nil
}

// rcloneCreates is the create workload through an rclone mount: timed on
// one that talks to MinIO directly (like csefs), then repeated on one whose
// S3 requests are counted; the last file is read back and compared.
func (b *bench) rcloneCreates() error {
	n := b.opt.creates
	small, err := b.smallFile()
	if err != nil {
		return err
	}
	want, err := os.ReadFile(small)
	if err != nil {
		return err
	}
	for i, pass := range []struct{ remote, name, dir string }{
		{"crypt:", "rcreate", "creates"}, {"cryptcounted:", "rcounted", "creates-counted"},
	} {
		b.logf("create: rclone (%s)", pass.remote)
		b.drop()
		m, err := b.rcloneMountRemote(pass.remote, pass.name)
		if err != nil {
			return err
		}
		s0 := b.s3Proxy.snapshot()
		if err := b.rssPhase(m.pid(), "rclone.create", func() error {
			t, err := b.cpLoop(filepath.Join(m.dir, pass.dir), n)
			if i == 0 {
				b.record("rclone.create", t)
			}
			return err
		}); err != nil {
			return err
		}
		if i == 1 {
			b.s3Ops = append(b.s3Ops, "rclone create: "+fmtCounts(diffCounts(s0, b.s3Proxy.snapshot())))
		}
		last := filepath.Join(m.dir, pass.dir, fmt.Sprintf("f%05d", n-1))
		got, err := os.ReadFile(last)
		if err != nil {
			return err
		}
		if string(got) != string(want) {
			return fmt.Errorf("%w: %s (rclone) read back %d bytes, not the 4 KiB written", errMismatch, last, len(got))
		}
		if err := m.unmount(); err != nil {
			return err
		}
		if bad := m.crashed(); bad != "" {
			return fmt.Errorf("rclone log %s contains %q", m.log, bad)
		}
	}
	return nil
}

// rcloneLs is the ls -l workload through rclone: the -files empty files are
// uploaded with rclone copy (untimed), then ls -l runs on a fresh mount
// after dropping caches (cold) and at once again (warm).
func (b *bench) rcloneLs() error {
	n := b.opt.files
	local := filepath.Join(b.tmp, "many-local")
	if err := os.MkdirAll(local, 0o755); err != nil {
		return err
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(local, fmt.Sprintf("f%05d", i)), nil, 0o644); err != nil {
			return err
		}
	}
	b.logf("ls: rclone copy of %d empty files", n)
	t, err := timed(func() error {
		return b.rcloneCmd("copy", local, "crypt:many", "--transfers", "32", "--checkers", "32",
			"--no-check-dest", "--s3-no-head", "--s3-no-check-bucket")
	})
	if err != nil {
		return err
	}
	b.note("rclone ls: the %d entries were made with `rclone copy --transfers 32` in %.1f s (untimed setup)", n, t)
	if err := os.RemoveAll(local); err != nil {
		return err
	}
	// Timed on a mount that talks to MinIO directly, then counted on one
	// through the counting proxy, as for csefs.
	for i, pass := range []struct{ remote, name string }{{"crypt:", "rls"}, {"cryptcounted:", "rcounted"}} {
		b.logf("ls: rclone cold (%s)", pass.remote)
		b.drop()
		m, err := b.rcloneMountRemote(pass.remote, pass.name)
		if err != nil {
			return err
		}
		dir := filepath.Join(m.dir, "many")
		s0 := b.s3Proxy.snapshot()
		if err := b.rssPhase(m.pid(), "rclone.ls", func() error {
			t, err := b.timedLs(dir, n)
			if i == 0 {
				b.record("rclone.ls.cold", t)
			}
			return err
		}); err != nil {
			return err
		}
		if i == 1 {
			b.s3Ops = append(b.s3Ops, "rclone ls -l cold: "+fmtCounts(diffCounts(s0, b.s3Proxy.snapshot())))
		}
		s0 = b.s3Proxy.snapshot()
		t, err := b.timedLs(dir, n)
		if err != nil {
			return err
		}
		if i == 0 {
			b.record("rclone.ls.warm", t)
		} else {
			b.s3Ops = append(b.s3Ops, "rclone ls -l warm: "+fmtCounts(diffCounts(s0, b.s3Proxy.snapshot())))
		}
		if err := m.unmount(); err != nil {
			return err
		}
		if bad := m.crashed(); bad != "" {
			return fmt.Errorf("rclone log %s contains %q", m.log, bad)
		}
	}
	return nil
}

// rclonePread is the pread workload through rclone, at the same offsets as
// for csefs and the SDK.
func (b *bench) rclonePread() error {
	const blk = 4096
	size := b.opt.size
	src, err := b.source(size)
	if err != nil {
		return err
	}
	path := filepath.Join(b.rc.dir, "seq")
	if fi, err := os.Stat(path); err != nil || fi.Size() != size { // write not run: store the file untimed
		if err := runCmd(b.ctx, nil, "cp", src.path, path); err != nil {
			return err
		}
	}
	offs := randomOffsets(b.opt.preads, size, blk)
	var lat []time.Duration
	b.logf("pread: rclone")
	b.drop()
	if err := b.rssPhase(b.rc.pid(), "rclone.pread", func() error {
		lat, err = preads(path, src.path, offs, blk)
		return err
	}); err != nil {
		return err
	}
	b.recordLatencies("rclone.pread", lat)
	return nil
}
