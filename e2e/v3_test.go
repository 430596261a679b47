package e2e

// The S3EC V3 format (key commitment, suite 115) through a real mount: what
// the Go v4 client (GO4) writes reads back, what the mount writes under each
// --commitment-policy decrypts with GO4 and GO3 v3.2.0, and every kind of
// tampered V3 envelope fails with the right errno while the mount keeps
// serving good files.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/metadata"
)

const (
	policyForbid  = "forbid-encrypt-allow-decrypt"
	policyAllow   = "require-encrypt-allow-decrypt"
	policyRequire = "require-encrypt-require-decrypt"
)

// preadCheck reads ranges of the file at random offsets (and its edges) and
// compares them with plain.
func preadCheck(t *testing.T, path string, plain []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := int64(len(plain))
	r := rand.New(rand.NewPCG(uint64(n), 7))
	type rng struct{ off, len int64 }
	ranges := []rng{{0, min(n, 1)}, {max(n-1, 0), min(n, 1)}, {max(n-17, 0), min(n, 17)}}
	for i := 0; i < 24 && n > 0; i++ {
		off := r.Int64N(n)
		ranges = append(ranges, rng{off, min(1+r.Int64N(300_000), n-off)})
	}
	for _, g := range ranges {
		got := make([]byte, g.len)
		k, err := f.ReadAt(got, g.off)
		if err != nil && !(err == io.EOF && int64(k) == g.len) {
			t.Fatalf("%s: ReadAt(%d, %d): %d bytes, %v", path, g.off, g.len, k, err)
		}
		if !bytes.Equal(got, plain[g.off:g.off+g.len]) {
			t.Fatalf("%s: ReadAt(%d, %d): wrong bytes", path, g.off, g.len)
		}
	}
}

// TestGO4WritesMountReads: objects GO4 writes with its defaults (V3) and
// with FORBID_ENCRYPT_ALLOW_DECRYPT (V2) read back byte-exact through a
// mount with the default policy, with the right stat size, also with
// --attrs-from-list, and with random preads; under
// require-encrypt-require-decrypt the V3 ones read and the V2 ones give
// EACCES with a log line naming the object and the policy.
func TestGO4WritesMountReads(t *testing.T) {
	w := newWorld(t)
	src := t.TempDir()
	type obj struct {
		key  string
		v3   bool
		file string
		size int64
	}
	var objs []obj
	for _, pol := range []struct {
		name   string
		policy oracle.GO4Policy
		v3     bool
		sizes  []int64
	}{
		{"default", oracle.GO4RequireEncryptRequireDecrypt, true, []int64{0, 1, 16<<20 - 1, 100 << 20}},
		{"forbid", oracle.GO4ForbidEncryptAllowDecrypt, false, []int64{0, 1, 16<<20 - 1}},
	} {
		c, err := oracle.GO4(w.servers(), w.KMS.KeyID, pol.policy)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range pol.sizes {
			key := fmt.Sprintf("GO4-%s/%d", pol.name, n)
			plain := randBytes(t, n)
			if err := oracle.GO4Put(bg, c, w.Bucket, key, plain, map[string]string{"dept": "x"}); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(src, strings.ReplaceAll(key, "/", "_"))
			if err := os.WriteFile(p, plain, 0o600); err != nil {
				t.Fatal(err)
			}
			objs = append(objs, obj{key, pol.v3, p, n})
			if v := storedEnvelope(t, w, key, false).Version; (v == 3) != pol.v3 {
				t.Fatalf("%s: GO4 wrote version %d", key, v)
			}
		}
	}
	check := func(t *testing.T, m *mounted, o obj, stat bool) {
		run(t, "cmp", o.file, m.path(o.key))
		if stat {
			st, err := os.Stat(m.path(o.key))
			if err != nil || st.Size() != o.size {
				t.Errorf("stat: %v, %v; want size %d", st, err, o.size)
			}
		}
		if o.size >= 16<<20-1 {
			plain, err := os.ReadFile(o.file)
			if err != nil {
				t.Fatal(err)
			}
			preadCheck(t, m.path(o.key), plain)
		}
	}
	t.Run("default-policy", func(t *testing.T) {
		m := w.mount(t, "")
		for _, o := range objs {
			t.Run(o.key, func(t *testing.T) { check(t, m, o, true) })
		}
	})
	t.Run("attrs-from-list", func(t *testing.T) {
		m := w.mount(t, "", "--attrs-from-list")
		for _, dir := range []string{"GO4-default", "GO4-forbid"} {
			ls := run(t, "ls", "-l", m.path(dir))
			for _, o := range objs {
				if d, name := filepath.Split(o.key); d == dir+"/" && !regexpLine(ls, name, o.size) {
					t.Errorf("ls -l shows no %d-byte %s:\n%s", o.size, name, ls)
				}
			}
		}
		for _, o := range objs {
			if o.size < 100<<20 {
				t.Run(o.key, func(t *testing.T) { check(t, m, o, false) })
			}
		}
	})
	t.Run(policyRequire, func(t *testing.T) {
		m := w.mount(t, "", "--commitment-policy", policyRequire)
		for _, o := range objs {
			if o.size == 100<<20 {
				continue // read above; one pass is enough
			}
			t.Run(o.key, func(t *testing.T) {
				if o.v3 {
					check(t, m, o, true)
					return
				}
				wantReadErrno(t, m, w, o.key, syscall.EACCES, policyRequire)
			})
		}
	})
}

// TestMountWritesV3OraclesRead: what the mount writes under each policy and
// storage mode (single PUT and a 40 MiB multipart upload) is V3 or V2 as the
// policy says, and decrypts with GO4 under REQUIRE_ENCRYPT_REQUIRE_DECRYPT
// (V3) or ALLOW_DECRYPT (V2) and with GO3 v3.2.0.
func TestMountWritesV3OraclesRead(t *testing.T) {
	w := newWorld(t)
	setGO3InstructionEnv(t, w)
	src := t.TempDir()
	sizes := []int64{0, 1, 1000, 40 << 20}
	files := map[int64]string{}
	for _, n := range sizes {
		files[n] = randomFile(t, src, fmt.Sprint(n), n)
	}
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	go4Require, err := oracle.GO4(w.servers(), w.KMS.KeyID, oracle.GO4RequireEncryptRequireDecrypt)
	if err != nil {
		t.Fatal(err)
	}
	go4Allow, err := oracle.GO4(w.servers(), w.KMS.KeyID, oracle.GO4RequireEncryptAllowDecrypt)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		policy, storage string
		v3              bool
	}{
		{policyForbid, "object-metadata", false},
		{policyAllow, "object-metadata", true},
		{policyRequire, "object-metadata", true},
		{policyAllow, "instruction-file", true},
		{policyRequire, "instruction-file", true},
	} {
		name := mode.policy + "/" + mode.storage
		t.Run(name, func(t *testing.T) {
			m := w.mount(t, name, "--commitment-policy", mode.policy, "--storage-mode", mode.storage)
			for _, n := range sizes {
				run(t, "cp", files[n], m.path(fmt.Sprint(n)))
			}
			m.Unmount(t)
			instr := mode.storage == "instruction-file"
			for _, n := range sizes {
				key := name + "/" + fmt.Sprint(n)
				want, err := os.ReadFile(files[n])
				if err != nil {
					t.Fatal(err)
				}
				if size, _ := w.head(t, key); size != n+cse.TagSize {
					t.Errorf("%s: stored %d bytes, want %d", key, size, n+cse.TagSize)
				}
				envl := storedEnvelope(t, w, key, instr)
				if mode.v3 {
					checkV3Envelope(t, w, key, envl, instr)
				} else {
					checkEnvelopeShape(t, w, key, envl, cse.WrapKMSContext)
				}
				got, err := oracle.GO4Get(bg, go4Allow, w.Bucket, key)
				checkSame(t, "GO4 REQUIRE_ENCRYPT_ALLOW_DECRYPT", key, got, err, want)
				got, err = oracle.GO4Get(bg, go4Require, w.Bucket, key)
				if mode.v3 {
					checkSame(t, "GO4 REQUIRE_ENCRYPT_REQUIRE_DECRYPT", key, got, err, want)
				} else if err == nil {
					t.Errorf("GO4 REQUIRE_ENCRYPT_REQUIRE_DECRYPT read the V2 object %s", key)
				}
				got, err = oracle.GO3Get(bg, go3, w.Bucket, key)
				checkSame(t, "GO3 v3.2.0", key, got, err, want)
			}
			// And the mount reads its own objects back from S3.
			m = w.mount(t, name, "--commitment-policy", mode.policy)
			for _, n := range sizes {
				run(t, "cmp", files[n], m.path(fmt.Sprint(n)))
			}
		})
	}
}

// checkV3Envelope checks what a V3 object written through the mount stores:
// suite 115, kms+context with {"aws:x-amz-cek-alg": "115"} in x-amz-t, a
// 28-byte message ID and commitment; in instruction-file mode the object
// keeps exactly x-amz-c, x-amz-d and x-amz-i, and the file the rest.
func checkV3Envelope(t *testing.T, w *world, key string, envl *metadata.Envelope, instr bool) {
	t.Helper()
	if envl.Version != 3 || envl.Key.CEKAlg != cse.CEKAlgGCMCommit || envl.Key.WrapAlg != cse.WrapKMSContext ||
		len(envl.MessageID) != cse.MessageIDSize || len(envl.Commitment) != cse.CommitmentSize {
		t.Errorf("%s: envelope v%d %q %q, message ID %d bytes, commitment %d bytes", key, envl.Version, envl.Key.CEKAlg,
			envl.Key.WrapAlg, len(envl.MessageID), len(envl.Commitment))
	}
	if len(envl.Key.MatDesc) != 1 || envl.Key.MatDesc[cse.ReservedCEKAlgKey] != cse.CEKAlgGCMCommit {
		t.Errorf("%s: encryption context %v", key, envl.Key.MatDesc)
	}
	_, meta := w.head(t, key)
	for _, k := range []string{metadata.KeyV3CEKAlg, metadata.KeyV3Commitment, metadata.KeyV3MessageID} {
		if _, ok := metadata.Lookup(meta, k); !ok {
			t.Errorf("%s: object metadata lacks %s: %v", key, k, meta)
		}
	}
	for _, k := range []string{metadata.KeyV3Key, metadata.KeyV3WrapAlg, metadata.KeyV3Context} {
		if _, ok := metadata.Lookup(meta, k); ok == instr {
			t.Errorf("%s: %s in object metadata: %v (instruction-file mode %v)", key, k, ok, instr)
		}
	}
	if instr {
		body, _ := w.getRaw(t, metadata.InstructionKey(key))
		var file map[string]string
		if err := json.Unmarshal(body, &file); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{metadata.KeyV3CEKAlg, metadata.KeyV3Commitment, metadata.KeyV3MessageID} {
			if _, ok := file[k]; ok {
				t.Errorf("%s: instruction file holds %s", key, k)
			}
		}
	}
}

// TestV3BadInputsMount: copies of a good V3 object with a changed x-amz-d,
// x-amz-i, x-amz-c or x-amz-3 (another object's key: the substitution key
// commitment is for; and garbled bytes), a truncated commitment, an unknown
// suite or wrap code, a V3 instruction file whose object lost x-amz-d, and a
// V3 instruction-file object whose instruction file was replaced by a V2 one,
// each fail on a real mount with EIO (a garbled KMS blob: EACCES, which is
// what KMS's refusal maps to), with a log line; a V2 object under
// require-encrypt-require-decrypt gets EACCES (stat still works), and so
// does a V1 CBC object (stat too: its size needs its key). The mount serves
// the good objects before, between and after, and does not crash.
func TestV3BadInputsMount(t *testing.T) {
	w := newWorld(t)
	plain := randBytes(t, 70_000)
	wr := w.mount(t, "", "--commitment-policy", policyRequire)
	for _, k := range []string{"good", "other"} {
		if err := os.WriteFile(wr.path(k), plain, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wr.Unmount(t)
	wr = w.mount(t, "", "--commitment-policy", policyRequire, "--storage-mode", "instruction-file")
	if err := os.WriteFile(wr.path("instr"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	wr.Unmount(t)
	wr = w.mount(t, "")
	if err := os.WriteFile(wr.path("v2"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	wr.Unmount(t)
	wr = w.mount(t, "", "--storage-mode", "instruction-file")
	if err := os.WriteFile(wr.path("v2-instr"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	wr.Unmount(t)

	// A V1 CBC object (EMRFS CSE-KMS's default) without a plaintext length.
	if err := oracle.FindGO1Writer("GO1-V1-kms-CBC").Put(bg, w.servers(), w.KMS.KeyID, w.Bucket, "cbc", plain); err != nil {
		t.Fatal(err)
	}

	body, meta := w.getRaw(t, "good")
	_, otherMeta := w.getRaw(t, "other")
	b64 := base64.StdEncoding
	flip := func(s string) string {
		b, err := b64.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-1] ^= 1
		return b64.EncodeToString(b)
	}
	commit, _ := b64.DecodeString(meta["x-amz-d"])
	bad := []struct {
		key, k, v string
		errno     syscall.Errno
		cause     string
	}{
		{"d-changed", "x-amz-d", flip(meta["x-amz-d"]), syscall.EIO, "commitment"},
		{"i-changed", "x-amz-i", flip(meta["x-amz-i"]), syscall.EIO, "commitment"},
		{"3-substituted", "x-amz-3", otherMeta["x-amz-3"], syscall.EIO, "commitment"},
		{"3-garbled", "x-amz-3", flip(meta["x-amz-3"]), syscall.EACCES, "data key"},
		{"c-114", "x-amz-c", "114", syscall.EIO, "suite"},
		{"c-v2-name", "x-amz-c", cse.CEKAlgGCM, syscall.EIO, "suite"},
		{"d-truncated", "x-amz-d", b64.EncodeToString(commit[:27]), syscall.EIO, "x-amz-d"},
		{"w-unknown", "x-amz-w", "32", syscall.EIO, "wrapping algorithm code"},
	}
	for _, b := range bad {
		m := make(map[string]string, len(meta))
		for k, v := range meta {
			m[k] = v
		}
		m[b.k] = b.v
		w.putRaw(t, b.key, body, m)
	}
	// The instruction-file object loses its commitment: the object no longer
	// says where its envelope is complete.
	ibody, imeta := w.getRaw(t, "instr")
	delete(imeta, "x-amz-d")
	w.putRaw(t, "instr-no-d", ibody, imeta)
	ifile, ifmeta := w.getRaw(t, metadata.InstructionKey("instr"))
	w.putRaw(t, metadata.InstructionKey("instr-no-d"), ifile, ifmeta)
	// The V3 instruction-file object gets a V2 instruction file (one whose
	// data key the mount can unwrap): a downgrade that would decrypt the body
	// under a key nothing commits to. Refused as malformed, before any key
	// is unwrapped.
	ibody, imeta = w.getRaw(t, "instr")
	w.putRaw(t, "instr-v2-file", ibody, imeta)
	v2file, v2fmeta := w.getRaw(t, metadata.InstructionKey("v2-instr"))
	w.putRaw(t, metadata.InstructionKey("instr-v2-file"), v2file, v2fmeta)

	for _, policy := range []string{policyForbid, policyRequire} {
		t.Run(policy, func(t *testing.T) {
			m := w.mount(t, "", "--commitment-policy", policy)
			readMount(t, m, "good", string(plain))
			for _, b := range bad {
				t.Run(b.key, func(t *testing.T) {
					wantReadErrno(t, m, w, b.key, b.errno, b.cause)
					readMount(t, m, "good", string(plain))
				})
			}
			t.Run("instruction-file-without-x-amz-d", func(t *testing.T) {
				wantReadErrno(t, m, w, "instr-no-d", syscall.EIO, "x-amz-d")
				readMount(t, m, "instr", string(plain))
			})
			t.Run("v3-object-with-v2-instruction-file", func(t *testing.T) {
				wantReadErrno(t, m, w, "instr-v2-file", syscall.EIO, "without x-amz-3")
				readMount(t, m, "instr", string(plain))
			})
			t.Run("v2-object", func(t *testing.T) {
				if st, err := os.Stat(m.path("v2")); err != nil || st.Size() != int64(len(plain)) {
					t.Errorf("stat: %v, %v", st, err)
				}
				if policy == policyForbid {
					readMount(t, m, "v2", string(plain))
					return
				}
				wantReadErrno(t, m, w, "v2", syscall.EACCES, policyRequire)
			})
			t.Run("v1-cbc-object", func(t *testing.T) {
				if policy == policyForbid {
					readMount(t, m, "cbc", string(plain))
					return
				}
				// Its size needs its key, which the policy refuses.
				if _, err := os.Stat(m.path("cbc")); !errors.Is(err, syscall.EACCES) {
					t.Errorf("stat: %v, want EACCES", err)
				}
				wantReadErrno(t, m, w, "cbc", syscall.EACCES, policyRequire)
			})
			readMount(t, m, "other", string(plain))
			if log := m.logText(t); strings.Contains(log, meta["x-amz-3"]) {
				t.Error("the log contains a wrapped data key")
			}
		})
	}
}

// TestV3RenameAndTouch: rename, chmod and touch (metadata self-copies) of a
// V3 object, in both storage modes, keep its envelope byte for byte, and the
// file still reads.
func TestV3RenameAndTouch(t *testing.T) {
	w := newWorld(t)
	plain := randBytes(t, 100_000)
	for _, storage := range []string{"object-metadata", "instruction-file"} {
		t.Run(storage, func(t *testing.T) {
			m := w.mount(t, storage, "--commitment-policy", policyAllow, "--storage-mode", storage)
			if err := os.WriteFile(m.path("a"), plain, 0o644); err != nil {
				t.Fatal(err)
			}
			envelope := func(key string) (map[string]string, []byte) {
				_, meta := w.head(t, key)
				env := map[string]string{}
				for k, v := range meta {
					if strings.HasPrefix(k, "x-amz-") {
						env[k] = v
					}
				}
				var file []byte
				if storage == "instruction-file" {
					file, _ = w.getRaw(t, metadata.InstructionKey(key))
				}
				return env, file
			}
			// The upload is committed when close returns.
			before, beforeFile := envelope(storage + "/a")
			if len(before) == 0 {
				t.Fatalf("no V3 keys on the object: %v", before)
			}
			if err := os.Rename(m.path("a"), m.path("b")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(m.path("b"), 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, "touch", m.path("b"))
			m.Unmount(t)
			after, afterFile := envelope(storage + "/b")
			if fmt.Sprint(after) != fmt.Sprint(before) || !bytes.Equal(afterFile, beforeFile) {
				t.Errorf("envelope changed:\nbefore %v %s\nafter  %v %s", before, beforeFile, after, afterFile)
			}
			_, err := w.S3.Client(t).HeadObject(bg, &s3.HeadObjectInput{Bucket: &w.Bucket, Key: aws.String(storage + "/a")})
			if err == nil {
				t.Error("the old name still exists")
			}
			m = w.mount(t, storage, "--commitment-policy", policyRequire, "--xattrs")
			readMount(t, m, "b", string(plain))
			desc := make([]byte, 200)
			n, err := syscall.Getxattr(m.path("b"), "user.csefs.encryption", desc)
			want := "kms+context ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
			if storage == "instruction-file" {
				want += " instruction-file"
			}
			if err != nil || string(desc[:max(n, 0)]) != want {
				t.Errorf("user.csefs.encryption = %q, %v; want %q", desc[:max(n, 0)], err, want)
			}
			st, err := os.Stat(m.path("b"))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("stat after chmod: %v, %v", st, err)
			}
		})
	}
}

// TestV3CrossZoneMove: mv of a V2 file into another encryption zone on a
// mount with require-encrypt-allow-decrypt re-encrypts it there as V3 under
// the zone's key; mv of a V3 file out under the default policy makes V2.
func TestV3CrossZoneMove(t *testing.T) {
	w := newWorld(t)
	finID, _ := w.KMS.NewKey(t)
	plain := randBytes(t, 50_000)
	m := w.mount(t, "", "--zone", "fin/=kms:"+finID)
	if err := os.MkdirAll(m.path("fin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("v2"), plain, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	m = w.mount(t, "", "--zone", "fin/=kms:"+finID, "--commitment-policy", policyAllow)
	run(t, "mv", m.path("v2"), m.path("fin", "moved"))
	m.Unmount(t)
	envl := storedEnvelope(t, w, "fin/moved", false)
	if envl.Version != 3 {
		t.Errorf("fin/moved: version %d after a cross-zone mv under %s", envl.Version, policyAllow)
	}
	m = w.mount(t, "", "--zone", "fin/=kms:"+finID)
	readMount(t, m, "fin/moved", string(plain))
	run(t, "mv", m.path("fin", "moved"), m.path("back"))
	m.Unmount(t)
	if envl := storedEnvelope(t, w, "back", false); envl.Version != 2 {
		t.Errorf("back: version %d after a cross-zone mv under the default policy", envl.Version)
	}
}

// TestCommitmentPolicyFlag: a wrong policy name and the legacy kms wrap with
// a policy that writes V3 are refused at mount time with a message.
func TestCommitmentPolicyFlag(t *testing.T) {
	w := newWorld(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--commitment-policy", "require"}, "--commitment-policy"},
		{[]string{"--commitment-policy", policyAllow, "--kms-wrap", "kms"}, "kms+context"},
	} {
		m, out, err := tryMount(t, w.env, "s3://"+w.Bucket, w.s3Args(tt.args...)...)
		if err == nil {
			m.Unmount(t)
			t.Errorf("mount %v succeeded", tt.args)
			continue
		}
		if !strings.Contains(out, tt.want) {
			t.Errorf("mount %v: message does not mention %q:\n%s", tt.args, tt.want, out)
		}
	}
}

// stdlibOpenV3 decrypts a V3 body with the standard library only (HKDF from
// crypto/hkdf, one-shot GCM), given the unwrapped data key: the reference
// for raw-keyring objects, which no official Go client reads.
func stdlibOpenV3(t *testing.T, dk []byte, envl *metadata.Envelope, body []byte) []byte {
	t.Helper()
	suite := []byte{0x00, 0x73}
	commit, err := hkdf.Key(sha512.New, dk, envl.MessageID, string(suite)+"COMMITKEY", 28)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(commit, envl.Commitment) {
		t.Fatal("stored commitment differs from the one HKDF derives")
	}
	ck, err := hkdf.Key(sha512.New, dk, envl.MessageID, string(suite)+"DERIVEKEY", 32)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := stdGCM(t, ck).Open(nil, bytes.Repeat([]byte{1}, 12), body, suite)
	if err != nil {
		t.Fatalf("stdlib GCM open: %v", err)
	}
	return plain
}

func stdGCM(t *testing.T, key []byte) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

// TestV3Keyrings: with a raw AES and a raw RSA master key (keyring) and with
// an exec provider, a mount under require-encrypt-require-decrypt writes V3
// envelopes (x-amz-w "02", "22", x-amz-m with the keyname) in both storage
// modes; stdlib-only code (OAEP or GCM with AAD "115" for the wrap, HKDF, GCM
// with AAD 00 73 for the content) decrypts them; a fresh mount reads them;
// and the stdlib-built vectors of cse/testdata/v3 read through a mount.
func TestV3Keyrings(t *testing.T) {
	w := newWorld(t)
	pemPath, err := filepath.Abs("../cse/testdata/rsa2048-test-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := os.ReadFile(pemPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemData)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	priv, err := parseRSA(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	aesB64 := aesKeyB64(t)
	kek, _ := base64.StdEncoding.DecodeString(aesB64)
	ring := writeConfig(t, "ring.json", `{"version":2,"keys":[{"name":"aes1","aes256":"`+aesB64+`"},{"name":"rsa1","rsa_private_key_pem_file":"`+pemPath+`"}],"rules":[{"prefix":"object-metadata/rsa/","key":"rsa1"},{"prefix":"instruction-file/rsa/","key":"rsa1"}],"encrypt_with":"aes1"}`)
	args := w.plainArgs("--cse", "custom", "--keyring", ring, "--commitment-policy", policyRequire)
	plain := randBytes(t, 3<<20+5)
	for _, storage := range []string{"object-metadata", "instruction-file"} {
		t.Run(storage, func(t *testing.T) {
			m := mountWith(t, w.env, "s3://"+w.Bucket+"/"+storage, append(args, "--storage-mode", storage)...)
			for _, name := range []string{"aes.bin", "rsa/rsa.bin"} {
				if err := os.MkdirAll(filepath.Dir(m.path(name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(m.path(name), plain, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m.Unmount(t)
			instr := storage == "instruction-file"
			for _, tc := range []struct{ name, wrap, keyname string }{
				{"aes.bin", cse.WrapAESGCM, "aes1"},
				{"rsa/rsa.bin", cse.WrapRSAOAEPSHA1, "rsa1"},
			} {
				key := storage + "/" + tc.name
				envl := storedEnvelope(t, w, key, instr)
				if envl.Version != 3 || envl.Key.WrapAlg != tc.wrap || envl.Key.MatDesc[cse.KeyNameKey] != tc.keyname {
					t.Fatalf("%s: v%d wrap %q matdesc %v", key, envl.Version, envl.Key.WrapAlg, envl.Key.MatDesc)
				}
				var dk []byte
				if tc.wrap == cse.WrapAESGCM {
					b := envl.Key.Blob
					if dk, err = stdGCM(t, kek).Open(nil, b[:12], b[12:], []byte("115")); err != nil {
						t.Fatalf("%s: stdlib AES/GCM unwrap with AAD \"115\": %v", key, err)
					}
				} else {
					pseudo, err := rsa.DecryptOAEP(sha1.New(), nil, priv, envl.Key.Blob, nil)
					if err != nil || len(pseudo) != 1+32+3 || pseudo[0] != 32 || string(pseudo[33:]) != "115" {
						t.Fatalf("%s: stdlib RSA-OAEP-SHA1 unwrap: %v, pseudo key of %d bytes", key, err, len(pseudo))
					}
					dk = pseudo[1:33]
				}
				body, _ := w.getRaw(t, key)
				if got := stdlibOpenV3(t, dk, envl, body); !bytes.Equal(got, plain) {
					t.Fatalf("%s: stdlib decryption differs", key)
				}
			}
			m = mountWith(t, w.env, "s3://"+w.Bucket+"/"+storage, args...)
			for _, name := range []string{"aes.bin", "rsa/rsa.bin"} {
				got, err := os.ReadFile(m.path(name))
				checkSame(t, "mount", name, got, err, plain)
			}
		})
	}

	t.Run("exec-provider", func(t *testing.T) {
		prog := filepath.Join(t.TempDir(), "exec-provider-example")
		build := exec.Command("go", "build", "-o", prog, "./cse/exec-provider-example")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building the example provider: %v\n%s", err, out)
		}
		env := append(append([]string(nil), w.env...), "CSEFS_EXAMPLE_KEY="+aesB64)
		eargs := w.plainArgs("--materials-provider", "exec:"+prog, "--commitment-policy", policyRequire)
		m := mountWith(t, env, "s3://"+w.Bucket+"/exec", eargs...)
		writeMount(t, m, "x.txt", "exec v3")
		m.Unmount(t)
		envl := storedEnvelope(t, w, "exec/x.txt", false)
		if envl.Version != 3 || envl.Key.WrapAlg != cse.WrapAESGCM {
			t.Fatalf("exec envelope v%d wrap %q", envl.Version, envl.Key.WrapAlg)
		}
		m = mountWith(t, env, "s3://"+w.Bucket+"/exec", eargs...)
		readMount(t, m, "x.txt", "exec v3")
	})

	t.Run("stdlib-vectors", func(t *testing.T) {
		for _, v := range []struct{ file, ring string }{
			{"stdlib-aes-gcm.json", `{"name":"golden","aes256":"%s"}`},
			{"stdlib-rsa-oaep-sha1.json", `{"name":"golden","rsa_private_key_pem_file":"` + pemPath + `"}`},
		} {
			raw, err := os.ReadFile(filepath.Join("..", "cse", "testdata", "v3", v.file))
			if err != nil {
				t.Fatal(err)
			}
			var g struct {
				Metadata   map[string]string `json:"metadata"`
				KEK        string            `json:"kek_aes_b64"`
				Ciphertext []byte            `json:"ciphertext_b64"`
				Plaintext  []byte            `json:"plaintext_b64"`
			}
			if err := json.Unmarshal(raw, &g); err != nil {
				t.Fatal(err)
			}
			key := "vectors/" + strings.TrimSuffix(v.file, ".json")
			w.putRaw(t, key, g.Ciphertext, g.Metadata)
			entry := v.ring
			if g.KEK != "" {
				entry = fmt.Sprintf(v.ring, g.KEK)
			}
			r := writeConfig(t, "v.json", `{"version":2,"keys":[`+entry+`],"encrypt_with":"golden"}`)
			m := mountWith(t, w.env, "s3://"+w.Bucket+"/vectors", w.plainArgs("--cse", "custom", "--keyring", r, "--commitment-policy", policyRequire)...)
			readMount(t, m, strings.TrimSuffix(v.file, ".json"), string(g.Plaintext))
			m.Unmount(t)
		}
	})
}

func parseRSA(der []byte) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("not an RSA key")
	}
	return rk, nil
}

// TestV3StagedWrites: an append and an in-place edit (staged writes) of a
// file on a require-encrypt-require-decrypt mount upload a V3 object that
// GO4 decrypts with its defaults, and a V2 file edited there becomes V3.
func TestV3StagedWrites(t *testing.T) {
	w := newWorld(t)
	m := w.mount(t, "")
	base := randBytes(t, 200_000)
	if err := os.WriteFile(m.path("old-v2"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	m.Unmount(t)
	m = w.mount(t, "", "--commitment-policy", policyRequire)
	if err := os.WriteFile(m.path("new"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.path("new"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("appended")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"new": append(bytes.Clone(base), "appended"...)}
	// The V2 file cannot be read under this policy; overwritten in place,
	// it becomes V3.
	if _, err := os.ReadFile(m.path("old-v2")); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("read of a V2 file under %s: %v, want EACCES", policyRequire, err)
	}
	if err := os.WriteFile(m.path("old-v2"), []byte("rewritten"), 0o644); err != nil {
		t.Fatal(err)
	}
	want["old-v2"] = []byte("rewritten")
	run(t, "dd", "if=/dev/zero", "of="+m.path("new"), "bs=1", "seek=1000", "count=10", "conv=notrunc", "status=none")
	copy(want["new"][1000:1010], make([]byte, 10))
	m.Unmount(t)
	go4, err := oracle.GO4(w.servers(), w.KMS.KeyID, oracle.GO4RequireEncryptRequireDecrypt)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range want {
		if v := storedEnvelope(t, w, name, false).Version; v != 3 {
			t.Errorf("%s: version %d", name, v)
		}
		got, err := oracle.GO4Get(bg, go4, w.Bucket, name)
		checkSame(t, "GO4", name, got, err, data)
	}
}

// TestV3ZonePolicy: an encryption zone with "commitment_policy":
// "require-encrypt-require-decrypt" writes V3 under its prefix while the
// rest of the mount writes V2, refuses V2 objects under its prefix with
// EACCES (and reads them elsewhere), and a cross-zone mv into it
// re-encrypts the file as V3: the destination's policy.
func TestV3ZonePolicy(t *testing.T) {
	w := newWorld(t)
	finID, _ := w.KMS.NewKey(t)
	plain := randBytes(t, 30_000)
	m := w.mount(t, "")
	for _, k := range []string{"fin/old-v2", "top-v2"} {
		writeMount(t, m, k, string(plain))
	}
	m.Unmount(t)
	zones := writeConfig(t, "zones.json", `{"zones":[{"prefix":"fin/","key":"kms:`+finID+`","commitment_policy":"`+policyRequire+`"}]}`)
	m = w.mount(t, "", "--zones-file", zones)
	writeMount(t, m, "fin/new", string(plain))
	writeMount(t, m, "top-new", string(plain))
	wantReadErrno(t, m, w, "fin/old-v2", syscall.EACCES, policyRequire)
	readMount(t, m, "top-v2", string(plain))
	readMount(t, m, "fin/new", string(plain))
	run(t, "mv", m.path("top-v2"), m.path("fin", "moved"))
	readMount(t, m, "fin/moved", string(plain))
	m.Unmount(t)
	for key, v := range map[string]int{"fin/new": 3, "fin/moved": 3, "top-new": 2, "fin/old-v2": 2} {
		if got := storedEnvelope(t, w, key, false).Version; got != v {
			t.Errorf("%s: version %d, want %d", key, got, v)
		}
	}
	go4, err := oracle.GO4(w.servers(), finID, oracle.GO4RequireEncryptRequireDecrypt)
	if err != nil {
		t.Fatal(err)
	}
	got, err := oracle.GO4Get(bg, go4, w.Bucket, "fin/moved")
	checkSame(t, "GO4", "fin/moved", got, err, plain)
	if _, err := w.S3.Client(t).HeadObject(bg, &s3.HeadObjectInput{Bucket: &w.Bucket, Key: aws.String("top-v2")}); err == nil {
		t.Error("top-v2 still exists after mv")
	}
}
