package e2e

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/e2e/oracle"
	"github.com/csefs/csefs/metadata"
)

func emrfsSite(props ...string) string {
	var b strings.Builder
	b.WriteString("<?xml version=\"1.0\"?>\n<configuration>\n")
	for i := 0; i+1 < len(props); i += 2 {
		b.WriteString("  <property><name>" + props[i] + "</name><value>" + props[i+1] + "</value></property>\n")
	}
	b.WriteString("</configuration>\n")
	return b.String()
}

// TestEMRFSSiteKMS: a mount configured only by an emrfs-site.xml for CSE-KMS
// writes what the same flags write (wrap kms, {"kms_cmk_id": key}), reads it
// back, and GO1 s3crypto decrypts it.
func TestEMRFSSiteKMS(t *testing.T) {
	w := newWorld(t)
	site := writeConfig(t, "emrfs-site.xml", emrfsSite(
		"fs.s3.cse.enabled", "true",
		"fs.s3.cse.encryptionMaterialsProvider", "com.amazon.ws.emr.hadoop.fs.cse.KMSEncryptionMaterialsProvider",
		"fs.s3.cse.kms.keyId", w.KMS.KeyID,
		"fs.s3.cse.cryptoMode", "AuthenticatedEncryption",
		"fs.s3.consistent", "false",
	))
	m := mountWith(t, w.env, "s3://"+w.Bucket+"/site", w.plainArgs("--emrfs-site", site, "--log-level", "debug")...)
	writeMount(t, m, "a.txt", "from emrfs-site")
	readMount(t, m, "a.txt", "from emrfs-site")
	if log := m.logText(t); !strings.Contains(log, "fs.s3.consistent") {
		t.Errorf("unknown property not logged at debug level:\n%s", log)
	}
	m.Unmount(t)
	f := w.mount(t, "flags", "--kms-wrap", "kms")
	writeMount(t, f, "a.txt", "from flags")
	f.Unmount(t)

	siteEnv := storedEnvelope(t, w, "site/a.txt", false)
	flagEnv := storedEnvelope(t, w, "flags/a.txt", false)
	checkEnvelopeShape(t, w, "site/a.txt", siteEnv, cse.WrapKMS)
	if siteEnv.Key.WrapAlg != flagEnv.Key.WrapAlg || siteEnv.Key.CEKAlg != flagEnv.Key.CEKAlg || !reflect.DeepEqual(siteEnv.Key.MatDesc, flagEnv.Key.MatDesc) {
		t.Errorf("emrfs-site envelope %s %s %v differs from the flags' %s %s %v", siteEnv.Key.WrapAlg, siteEnv.Key.CEKAlg, siteEnv.Key.MatDesc, flagEnv.Key.WrapAlg, flagEnv.Key.CEKAlg, flagEnv.Key.MatDesc)
	}
	go1, err := oracle.GO1Decrypter(w.servers(), oracle.GO1LoadDefault)
	if err != nil {
		t.Fatal(err)
	}
	got, err := oracle.GO1Get(bg, go1, w.Bucket, "site/a.txt")
	checkSame(t, "GO1", "site/a.txt", got, err, []byte("from emrfs-site"))
}

// TestEMRFSMaterialsDescription: --materials-description stores Path (the
// S3 URI) and JobflowId; with kms+context both are in the KMS context (GO3
// decrypts with it). A rename keeps the envelope, stale Path included.
func TestEMRFSMaterialsDescription(t *testing.T) {
	w := newWorld(t)
	jf := writeConfig(t, "job-flow.json", `{"jobFlowId":"j-E2ETEST","jobFlowCreationInstant":1700000000000}`)
	m := w.mount(t, "md", "--materials-description", "--job-flow-json", jf)
	writeMount(t, m, "dir/x.txt", "described")
	m.Unmount(t)
	envl := storedEnvelope(t, w, "md/dir/x.txt", false)
	want := map[string]string{"Path": "s3://" + w.Bucket + "/md/dir/x.txt", "JobflowId": "j-E2ETEST", cse.ReservedCEKAlgKey: cse.CEKAlgGCM}
	if !reflect.DeepEqual(envl.Key.MatDesc, want) {
		t.Errorf("matdesc %v, want %v", envl.Key.MatDesc, want)
	}
	go3, err := oracle.GO3(w.servers(), w.KMS.KeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := oracle.GO3Get(bg, go3, w.Bucket, "md/dir/x.txt")
	checkSame(t, "GO3", "md/dir/x.txt", got, err, []byte("described"))

	m = w.mount(t, "md", "--materials-description", "--job-flow-id", "j-FLAG", "--log-level", "debug")
	run(t, "mv", m.path("dir/x.txt"), m.path("dir/y.txt"))
	readMount(t, m, "dir/y.txt", "described")
	writeMount(t, m, "z.txt", "z")
	m.Unmount(t)
	if t.Failed() {
		t.Logf("DEBUG log:\n%s", m.logText(t))
	}
	moved := storedEnvelope(t, w, "md/dir/y.txt", false)
	if !reflect.DeepEqual(moved.Key.MatDesc, want) {
		t.Errorf("after mv: matdesc %v, want the original %v (the envelope is kept)", moved.Key.MatDesc, want)
	}
	if md := storedEnvelope(t, w, "md/z.txt", false).Key.MatDesc; md["JobflowId"] != "j-FLAG" || md["Path"] != "s3://"+w.Bucket+"/md/z.txt" {
		t.Errorf("--job-flow-id: matdesc %v", md)
	}
}

// kmsKeyOf asks KMS which key wrapped key's data key.
func kmsKeyOf(t *testing.T, w *world, key string) (string, string) {
	t.Helper()
	envl := storedEnvelope(t, w, key, false)
	out, err := w.KMS.Client(t).Decrypt(bg, &kms.DecryptInput{CiphertextBlob: envl.Key.Blob, EncryptionContext: envl.Key.MatDesc})
	if err != nil {
		t.Fatalf("%s: KMS Decrypt: %v", key, err)
	}
	cse.Zero(out.Plaintext)
	_, meta := w.head(t, key)
	blob, _ := metadata.Lookup(meta, "x-amz-key-v2")
	return *out.KeyId, blob
}

// TestZonesMove: in a mount with a KMS zone, mv across zones re-encrypts
// under the destination zone's key (files and directories), and mv within
// a zone keeps the wrapped key.
func TestZonesMove(t *testing.T) {
	w := newWorld(t)
	finID, finARN := w.KMS.NewKey(t)
	zones := writeConfig(t, "zones.json", `{"zones":[{"prefix":"fin/","key":"kms:`+finID+`"}]}`)
	m := w.mount(t, "", "--zones-file", zones)
	writeMount(t, m, "fin/a.txt", "a")
	writeMount(t, m, "other/b.txt", "b")
	writeMount(t, m, "other/c.txt", "c")
	writeMount(t, m, "other/d/e.txt", "e")
	if k, _ := kmsKeyOf(t, w, "fin/a.txt"); k != finARN {
		t.Fatalf("fin/a.txt wrapped by %s, want the zone's key %s", k, finARN)
	}
	if k, _ := kmsKeyOf(t, w, "other/b.txt"); k != w.KMS.KeyARN {
		t.Fatalf("other/b.txt wrapped by %s, want the default %s", k, w.KMS.KeyARN)
	}
	_, blobA := kmsKeyOf(t, w, "fin/a.txt")
	_, blobC := kmsKeyOf(t, w, "other/c.txt")

	run(t, "mv", m.path("other/b.txt"), m.path("fin/b.txt"))
	run(t, "mv", m.path("other/d"), m.path("fin/d"))
	run(t, "mv", m.path("fin/a.txt"), m.path("fin/a2.txt"))
	run(t, "mv", m.path("other/c.txt"), m.path("other/c2.txt"))
	readMount(t, m, "fin/b.txt", "b")
	readMount(t, m, "fin/d/e.txt", "e")
	readMount(t, m, "fin/a2.txt", "a")
	readMount(t, m, "other/c2.txt", "c")
	for _, gone := range []string{"other/b.txt", "other/d/e.txt", "fin/a.txt", "other/c.txt"} {
		if _, err := os.Stat(m.path(gone)); !os.IsNotExist(err) {
			t.Errorf("%s still there after mv: %v", gone, err)
		}
	}
	m.Unmount(t)
	for _, key := range []string{"fin/b.txt", "fin/d/e.txt"} {
		if k, _ := kmsKeyOf(t, w, key); k != finARN {
			t.Errorf("%s after cross-zone mv: wrapped by %s, want the destination zone's %s", key, k, finARN)
		}
	}
	if _, blob := kmsKeyOf(t, w, "fin/a2.txt"); blob != blobA {
		t.Errorf("mv within zone fin/ re-wrapped the key")
	}
	if _, blob := kmsKeyOf(t, w, "other/c2.txt"); blob != blobC {
		t.Errorf("mv within the default zone re-wrapped the key")
	}
}

// TestBadConfigFilesRefused: malformed or unusable configuration files stop
// the mount with a message naming the file and the problem.
func TestBadConfigFilesRefused(t *testing.T) {
	w := newWorld(t)
	badXML := writeConfig(t, "emrfs-site.xml", "<configuration><property><name>fs.s3.cse.enabled</name><value>true</value></property>")
	custom := writeConfig(t, "custom-site.xml", emrfsSite("fs.s3.cse.enabled", "true", "fs.s3.cse.encryptionMaterialsProvider", "com.example.VaultProvider"))
	badJSON := writeConfig(t, "security.json", `{"EncryptionConfiguration": {"AtRestEncryptionConfiguration": `)
	badZones := writeConfig(t, "zones.json", `{"zones":[{"prefix":"a/","key":"nokind"}]}`)
	ring := writeConfig(t, "keyring.json", `{"version":2,"keys":[{"name":"k","aes256_file":"absent.key"}]}`)
	envRing := writeConfig(t, "env-keyring.json", `{"version":2,"keys":[{"name":"k","aes256_env":"CSEFS_E2E_UNSET_KEY"}]}`)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"malformed XML", []string{"--emrfs-site", badXML}, []string{badXML, "XML"}},
		{"unknown provider class", []string{"--emrfs-site", custom}, []string{custom, "com.example.VaultProvider", "--keyring"}},
		{"malformed JSON", []string{"--security-configuration", badJSON}, []string{badJSON, "JSON"}},
		{"bad zones file", []string{"--cse", "kms", "--kms-key-id", w.KMS.KeyID, "--zones-file", badZones}, []string{badZones, "nokind"}},
		{"missing key file", []string{"--cse", "custom", "--keyring", ring}, []string{ring, "absent.key"}},
		{"missing env var", []string{"--cse", "custom", "--keyring", envRing}, []string{envRing, "CSEFS_E2E_UNSET_KEY"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, out, err := tryMount(t, w.env, "s3://"+w.Bucket, w.plainArgs(tc.args...)...)
			if err == nil {
				t.Fatalf("mount succeeded")
			}
			for _, s := range tc.want {
				if !strings.Contains(out, s) {
					t.Errorf("message does not mention %q:\n%s", s, out)
				}
			}
		})
	}
}
