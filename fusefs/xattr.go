package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/csefs/csefs/cse"
)

// Extended attributes. csefs stores none: Setxattr and Removexattr fail
// with ENOTSUP. Files have one read-only attribute, user.csefs.encryption,
// describing how the object is stored (encryptionDesc); any other name is
// ENODATA. Directories have none.

// xattrEncryption names the read-only attribute of every file.
const xattrEncryption = "user.csefs.encryption"

var (
	_ fs.NodeGetxattrer    = (*fileNode)(nil)
	_ fs.NodeListxattrer   = (*fileNode)(nil)
	_ fs.NodeSetxattrer    = (*fileNode)(nil)
	_ fs.NodeRemovexattrer = (*fileNode)(nil)
	_ fs.NodeSetxattrer    = (*dirNode)(nil)
	_ fs.NodeRemovexattrer = (*dirNode)(nil)
)

// encryptionDesc is the value of user.csefs.encryption: "plaintext", or the
// key-wrapping algorithm ("V1" for x-amz-key objects) and the content
// algorithm, e.g. "kms+context AES/GCM/NoPadding" (for V3 objects the suite's
// name, "kms+context ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY"), followed by
// " instruction-file" when the envelope is in an instruction file.
func encryptionDesc(o *object) string {
	if o.kind == kindPlain || o.env == nil {
		return "plaintext"
	}
	wrap := o.env.Key.WrapAlg
	if wrap == cse.WrapV1 {
		wrap = "V1"
	}
	content := o.env.Key.CEKAlg
	if content == cse.CEKAlgGCMCommit {
		content = "ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
	}
	s := wrap + " " + content
	if o.instr {
		s += " instruction-file"
	}
	return s
}

// xattrValue copies v into dest by the getxattr(2) protocol: with dest too
// small (a size query), the size and ERANGE.
func xattrValue(v string, dest []byte) (uint32, syscall.Errno) {
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	ctx, done := n.fsys.untilKilled(ctx, "getxattr", n.key())
	defer done()
	if attr != xattrEncryption {
		return 0, syscall.ENODATA
	}
	f := n.fsys
	key := n.key()
	o, err := f.head(ctx, key)
	if err != nil {
		return 0, f.logErr("getxattr", key, err)
	}
	return xattrValue(encryptionDesc(o), dest)
}

func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return xattrValue(xattrEncryption+"\x00", dest)
}

func (n *fileNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

func (n *fileNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.ENOTSUP
}

func (d *dirNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

func (d *dirNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.ENOTSUP
}
