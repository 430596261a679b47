package e2e

// Interop through a real mount, both directions: what csefs writes decrypts
// with the official clients (GO3 = amazon-s3-encryption-client-go v3.2.0,
// GO1 = aws-sdk-go v1 s3crypto), and what they write reads through csefs.
// GO31 (v3.1.0) is checked as a subprocess in oracle31_test.go.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/metadata"
)

var bg = context.Background()

func (w *world) servers() oracle.Servers { return oracle.Servers{S3: w.S3, KMS: w.KMS} }

// setGO3InstructionEnv lets GO3's instruction-file fallback reach MinIO from
// this process. The test must not be parallel.
func setGO3InstructionEnv(t *testing.T, w *world) {
	for _, kv := range oracle.GO3InstructionEnv(w.S3, t.TempDir()) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// storedEnvelope returns the envelope stored for key: in its metadata, or in
// its instruction file (which must then exist, with its marker).
func storedEnvelope(t *testing.T, w *world, key string, instruction bool) *metadata.Envelope {
	t.Helper()
	_, meta := w.head(t, key)
	envl, err := metadata.Detect(meta)
	if instruction {
		if !errors.Is(err, metadata.ErrNoEnvelope) {
			t.Fatalf("%s: object metadata holds a whole envelope in instruction-file mode: %v %v", key, err, meta)
		}
		body, imeta := w.getRaw(t, metadata.InstructionKey(key))
		if _, ok := metadata.Lookup(imeta, metadata.KeyInstrMarker); !ok {
			t.Errorf("%s: instruction file lacks %s: %v", key, metadata.KeyInstrMarker, imeta)
		}
		envl, err = metadata.ParseInstructionWith(body, meta)
	}
	if err != nil {
		t.Fatalf("%s: stored envelope: %v", key, err)
	}
	return envl
}

// TestMountWritesOraclesRead: files copied into the mount (single PUT and a
// 40 MiB multipart upload) decrypt byte-exact with GO3 and GO1, for the
// default kms+context wrap, the legacy kms wrap and instruction files.
func TestMountWritesOraclesRead(t *testing.T) {
	w := newWorld(t)
	setGO3InstructionEnv(t, w)
	src := t.TempDir()
	sizes := []int64{0, 1, 1000, 3<<20 + 7, 40 << 20}
	files := map[int64]string{}
	for _, n := range sizes {
		files[n] = randomFile(t, src, fmt.Sprint(n), n)
	}
	modes := []struct {
		name        string
		flags       []string
		wrap        string
		instruction bool
	}{
		{"default", nil, cse.WrapKMSContext, false},
		{"kms-wrap-kms", []string{"--kms-wrap", "kms"}, cse.WrapKMS, false},
		{"instruction-file", []string{"--storage-mode", "instruction-file"}, cse.WrapKMSContext, true},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			m := w.mount(t, mode.name, mode.flags...)
			for _, n := range sizes {
				run(t, "cp", files[n], m.path(fmt.Sprint(n)))
			}
			m.Unmount(t) // every upload has finished
			go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, mode.wrap == cse.WrapKMS)
			if err != nil {
				t.Fatal(err)
			}
			go1, err := oracle.GO1Decrypter(w.servers(), oracle.GO1LoadDefault)
			if err != nil {
				t.Fatal(err)
			}
			go1Instr, err := oracle.GO1Decrypter(w.servers(), oracle.GO1LoadInstruction)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range sizes {
				key := mode.name + "/" + fmt.Sprint(n)
				want, err := os.ReadFile(files[n])
				if err != nil {
					t.Fatal(err)
				}
				if size, _ := w.head(t, key); size != n+cse.TagSize {
					t.Errorf("%s: stored %d bytes, want %d", key, size, n+cse.TagSize)
				}
				envl := storedEnvelope(t, w, key, mode.instruction)
				checkEnvelopeShape(t, w, key, envl, mode.wrap)
				if n == 40<<20 {
					out, err := w.S3.Client(t).HeadObject(bg, &s3.HeadObjectInput{Bucket: &w.Bucket, Key: &key})
					if err != nil {
						t.Fatal(err)
					}
					if etag := aws.ToString(out.ETag); !strings.Contains(etag, "-") {
						t.Errorf("%s: ETag %s is not a multipart ETag", key, etag)
					}
				}
				got, err := oracle.GO3Get(bg, go3, w.Bucket, key)
				checkSame(t, "GO3", key, got, err, want)
				got, err = oracle.GO1Get(bg, go1, w.Bucket, key)
				checkSame(t, "GO1", key, got, err, want)
				if mode.instruction {
					got, err = oracle.GO1Get(bg, go1Instr, w.Bucket, key)
					checkSame(t, "GO1 (instruction-file load strategy)", key, got, err, want)
				}
			}
		})
	}
}

// checkEnvelopeShape checks the algorithms and the matdesc each wrap stores.
func checkEnvelopeShape(t *testing.T, w *world, key string, envl *metadata.Envelope, wrap string) {
	t.Helper()
	if envl.Version != 2 || envl.Key.CEKAlg != cse.CEKAlgGCM || envl.Key.WrapAlg != wrap {
		t.Errorf("%s: envelope v%d cek %q wrap %q, want v2 %s %s", key, envl.Version, envl.Key.CEKAlg, envl.Key.WrapAlg, cse.CEKAlgGCM, wrap)
	}
	if len(envl.IV) != cse.GCMIVSize {
		t.Errorf("%s: IV of %d bytes", key, len(envl.IV))
	}
	var want map[string]string
	switch wrap {
	case cse.WrapKMSContext:
		want = map[string]string{cse.ReservedCEKAlgKey: cse.CEKAlgGCM}
	case cse.WrapKMS:
		// The legacy EMRFS context: the key id exactly as configured.
		want = map[string]string{cse.LegacyKMSKeyIDKey: w.KMS.KeyID}
	}
	gotJSON, _ := json.Marshal(envl.Key.MatDesc)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("%s: matdesc %s, want %s", key, gotJSON, wantJSON)
	}
}

func checkSame(t *testing.T, who, key string, got []byte, err error, want []byte) {
	t.Helper()
	if err != nil {
		t.Errorf("%s read %s: %v", who, key, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s read %s: %d bytes differ from the %d written", who, key, len(got), len(want))
	}
}

// oracleObject is one object an official client wrote, with its plaintext
// in a local file.
type oracleObject struct {
	key, file string
	size      int64
}

// TestOraclesWriteMountReads: objects GO3 (kms+context, with and without a
// caller encryption context) and GO1 (V2 kms+context, in metadata and in an
// instruction file; V1 kms with GCM and with CBC) wrote read byte-exact
// through the mount, and stat shows their exact plaintext size, also for CBC
// objects with and without x-amz-unencrypted-content-length.
func TestOraclesWriteMountReads(t *testing.T) {
	w := newWorld(t)
	src := t.TempDir()
	sizes := []int64{0, 1, 15, 16, 17, 1000, 3<<20 + 7}
	var objs []oracleObject
	add := func(key string, plain []byte) {
		p := filepath.Join(src, strings.ReplaceAll(key, "/", "_"))
		if err := os.WriteFile(p, plain, 0o600); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, oracleObject{key: key, file: p, size: int64(len(plain))})
	}
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	for name, ec := range map[string]map[string]string{
		"noEC":   nil,
		"withEC": {"department": "x", "Path": "s3://" + w.Bucket + "/a"},
	} {
		for _, n := range sizes {
			key := fmt.Sprintf("GO3-%s/%d", name, n)
			plain := randBytes(t, n)
			if err := oracle.GO3Put(bg, go3, w.Bucket, key, plain, ec); err != nil {
				t.Fatal(err)
			}
			add(key, plain)
		}
	}
	for _, wr := range oracle.GO1Writers {
		for _, n := range sizes {
			key := fmt.Sprintf("%s/%d", wr.Name, n)
			plain := randBytes(t, n)
			if err := wr.Put(bg, w.servers(), w.KMS.KeyID, w.Bucket, key, plain); err != nil {
				t.Fatal(err)
			}
			add(key, plain)
			if wr.CBC {
				// GO1 stores no plaintext length, so the size of its CBC
				// objects comes from decrypting the last block. JV1
				// (EMRFS) stores one: the same object with it added.
				body, meta := w.getRaw(t, key)
				if v, ok := metadata.Lookup(meta, metadata.KeyPlainLen); ok {
					t.Fatalf("%s: GO1 stored %s=%s; the last-block case is not covered", key, metadata.KeyPlainLen, v)
				}
				meta[metadata.KeyPlainLen] = fmt.Sprint(n)
				withLen := fmt.Sprintf("%s-withlen/%d", wr.Name, n)
				w.putRaw(t, withLen, body, meta)
				add(withLen, plain)
			}
		}
	}

	m := w.mount(t, "")
	for _, o := range objs {
		t.Run(o.key, func(t *testing.T) {
			run(t, "cmp", o.file, m.path(o.key))
			st, err := os.Stat(m.path(o.key))
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != o.size {
				t.Errorf("stat size %d, want %d", st.Size(), o.size)
			}
			dir, name := filepath.Split(o.key)
			ls := run(t, "ls", "-l", m.path(dir))
			if !regexpLine(ls, name, o.size) {
				t.Errorf("ls -l shows no %d-byte %s:\n%s", o.size, name, ls)
			}
		})
	}
	// The instruction files themselves are not listed.
	entries, err := os.ReadDir(m.path("GO1-V2-kms+context-instruction"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if metadata.IsInstructionKey(e.Name()) {
			t.Errorf("instruction file %s is listed", e.Name())
		}
	}
}

// TestOracleObjectsRandomReads: pread at odd offsets of a GO1 CBC object
// (with and without its plaintext length) and a GO3 GCM object of a few MiB
// returns the right bytes.
func TestOracleObjectsRandomReads(t *testing.T) {
	w := newWorld(t)
	const n = 5<<20 + 123
	plain := randBytes(t, n)
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := oracle.GO3Put(bg, go3, w.Bucket, "gcm", plain, nil); err != nil {
		t.Fatal(err)
	}
	if err := oracle.FindGO1Writer("GO1-V1-kms-CBC").Put(bg, w.servers(), w.KMS.KeyID, w.Bucket, "cbc", plain); err != nil {
		t.Fatal(err)
	}
	body, meta := w.getRaw(t, "cbc") // GO1 stores no plaintext length
	meta[metadata.KeyPlainLen] = fmt.Sprint(n)
	w.putRaw(t, "cbc-withlen", body, meta)

	m := w.mount(t, "")
	ranges := []struct{ off, len int64 }{
		{0, 1}, {1, 15}, {15, 2}, {16, 16}, {17, 4093}, {4095, 4097},
		{1<<20 - 1, 3}, {1<<20 + 7, 300_001}, {3<<20 + 11, 1 << 20},
		{n - 1, 1}, {n - 17, 17}, {n - 100, 100}, {n - 5000, 5000}, {0, n},
	}
	for _, key := range []string{"gcm", "cbc", "cbc-withlen"} {
		t.Run(key, func(t *testing.T) {
			f, err := os.Open(m.path(key))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Back to front, so no read can be served by a sequential stream.
			for i := len(ranges) - 1; i >= 0; i-- {
				r := ranges[i]
				got := make([]byte, r.len)
				k, err := f.ReadAt(got, r.off)
				if err != nil && !(err == io.EOF && int64(k) == r.len) {
					t.Fatalf("ReadAt(off %d, len %d): %d bytes, %v", r.off, r.len, k, err)
				}
				if !bytes.Equal(got, plain[r.off:r.off+r.len]) {
					t.Fatalf("ReadAt(off %d, len %d): wrong bytes", r.off, r.len)
				}
			}
			// Past the end: nothing, io.EOF.
			k, err := f.ReadAt(make([]byte, 10), n)
			if k != 0 || err != io.EOF {
				t.Errorf("ReadAt at the end: %d bytes, %v", k, err)
			}
			// dd with bs=1 at an odd offset, as a shell user would.
			out := run(t, "dd", "if="+m.path(key), "bs=1", "skip=1048583", "count=37", "status=none")
			if out != string(plain[1048583:1048583+37]) {
				t.Errorf("dd bs=1 skip=1048583 count=37: wrong bytes")
			}
		})
	}
}

// TestKMSKeyIDForms: --kms-key-id as an alias name, a key ARN and an alias
// ARN all write objects that read back (through a fresh mount, so from S3)
// and decrypt with GO3.
func TestKMSKeyIDForms(t *testing.T) {
	w := newWorld(t)
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []struct{ name, id string }{
		{"alias-name", w.KMS.AliasName},
		{"key-arn", w.KMS.KeyARN},
		{"alias-arn", w.KMS.AliasARN},
	} {
		for _, wrap := range []string{cse.WrapKMSContext, cse.WrapKMS} {
			t.Run(form.name+"/"+wrap, func(t *testing.T) {
				prefix := form.name + "-" + strings.ReplaceAll(wrap, "+", "-")
				src := "s3://" + w.Bucket + "/" + prefix
				args := []string{
					"--endpoint-url", w.S3.Endpoint, "--path-style", "--region", w.S3.Region,
					"--kms-endpoint-url", w.KMS.Endpoint, "--cse", "kms", "--kms-key-id", form.id, "--kms-wrap", wrap,
				}
				plain := randBytes(t, 70_000)
				m := mountWith(t, w.env, src, args...)
				if err := os.WriteFile(m.path("f"), plain, 0o644); err != nil {
					t.Fatal(err)
				}
				m.Unmount(t)
				m = mountWith(t, w.env, src, args...)
				got, err := os.ReadFile(m.path("f"))
				checkSame(t, "mount", "f", got, err, plain)
				key := prefix + "/f"
				got, err = oracle.GO3Get(bg, go3, w.Bucket, key)
				checkSame(t, "GO3", key, got, err, plain)
				envl := storedEnvelope(t, w, key, false)
				if wrap == cse.WrapKMS && envl.Key.MatDesc[cse.LegacyKMSKeyIDKey] != form.id {
					t.Errorf("kms_cmk_id %q, want the id as given, %q", envl.Key.MatDesc[cse.LegacyKMSKeyIDKey], form.id)
				}
			})
		}
	}
}

func randBytes(t testing.TB, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return b
}
