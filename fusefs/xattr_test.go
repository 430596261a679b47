package fusefs

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/csefs/csefs/cse"
	"github.com/csefs/csefs/metadata"
)

var zeroTime time.Time

func TestEncryptionDesc(t *testing.T) {
	env := func(wrap, cek string) *metadata.Envelope {
		return &metadata.Envelope{Key: cse.WrappedKey{WrapAlg: wrap, CEKAlg: cek}}
	}
	for _, tc := range []struct {
		o    *object
		want string
	}{
		{&object{kind: kindPlain}, "plaintext"},
		{&object{kind: kindEncrypted, env: env(cse.WrapKMSContext, cse.CEKAlgGCM)}, "kms+context AES/GCM/NoPadding"},
		{&object{kind: kindEncrypted, env: env(cse.WrapKMS, cse.CEKAlgGCM), instr: true}, "kms AES/GCM/NoPadding instruction-file"},
		{&object{kind: kindEncrypted, env: env(cse.WrapAESGCM, cse.CEKAlgGCM)}, "AES/GCM AES/GCM/NoPadding"},
		{&object{kind: kindEncrypted, env: env(cse.WrapV1, cse.CEKAlgCBC)}, "V1 AES/CBC/PKCS5Padding"},
		{&object{kind: kindEncrypted, env: env(cse.WrapKMSContext, cse.CEKAlgGCMCommit), instr: true}, "kms+context ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY instruction-file"},
	} {
		if got := encryptionDesc(tc.o); got != tc.want {
			t.Errorf("encryptionDesc = %q, want %q", got, tc.want)
		}
	}
}

func TestXattr(t *testing.T) {
	ctx := context.Background()
	f, root, st := newTestFS(t, InstructionFile, true)
	writeObj(t, f, "enc", []byte("x"))
	if _, err := st.Put(ctx, "plain", []byte("y"), nil); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"enc": "AES/GCM AES/GCM/NoPadding instruction-file", "plain": "plaintext"} {
		n := newFileNode(f, key)
		size, errno := n.Getxattr(ctx, xattrEncryption, nil)
		if errno != syscall.ERANGE || int(size) != len(want) {
			t.Errorf("%s: size query = %d, %v", key, size, errno)
		}
		buf := make([]byte, 100)
		size, errno = n.Getxattr(ctx, xattrEncryption, buf)
		if errno != 0 || string(buf[:size]) != want {
			t.Errorf("%s: getxattr = %q, %v; want %q", key, buf[:size], errno, want)
		}
		if _, errno := n.Getxattr(ctx, "user.other", buf); errno != syscall.ENODATA {
			t.Errorf("%s: other name: %v", key, errno)
		}
		size, errno = n.Listxattr(ctx, buf)
		if errno != 0 || string(buf[:size]) != xattrEncryption+"\x00" {
			t.Errorf("%s: listxattr = %q, %v", key, buf[:size], errno)
		}
		if errno := n.Setxattr(ctx, "user.x", []byte("1"), 0); errno != syscall.ENOTSUP {
			t.Errorf("setxattr = %v", errno)
		}
		if errno := n.Removexattr(ctx, xattrEncryption); errno != syscall.ENOTSUP {
			t.Errorf("removexattr = %v", errno)
		}
	}
	if errno := root.Setxattr(ctx, "user.x", nil, 0); errno != syscall.ENOTSUP {
		t.Errorf("dir setxattr = %v", errno)
	}
}
