// Package cse implements the client-side encryption of Amazon S3 Encryption
// Client (S3EC) and EMRFS CSE objects: content ciphers, data-key wrapping, and
// the materials providers (KMS and local keyrings). The byte format is fixed
// by docs/s3ec-format.md; this package produces and consumes exactly those
// bytes.
//
// # No I/O in the ciphers
//
// The content ciphers and key wraps do no I/O of their own: they take byte
// slices, or wrap an io.Reader/io.Writer the caller supplies, and never know
// about S3, paths or FUSE. Only KMSProvider talks to a service, through the
// KMSClient interface the caller passes in (kms.go); LoadKeyring reads the key
// files a keyring names, and ExecProvider runs its program. Nothing in this package
// logs; no error message contains key material or plaintext.
//
// # Providers
//
// A Provider (materials.go) makes and unwraps data keys. KMSProvider uses an
// AWS KMS key; KeyringProvider local AES and RSA master keys. A keyring file
// (LoadKeyring: version 2, or version 1 as NewKeyringFile writes) names master
// keys inline or by reference (key file, environment variable, KMS key) and
// has rules choosing a key by object key prefix; Keyring.Writer, Rules,
// Default and Reader turn it into providers. Router dispatches GenerateKey by
// the longest matching prefix and DecryptKey over a list of readers.
// ExecProvider delegates to an external program through a JSON protocol
// documented on the type (cse/exec-provider-example is a working example).
//
// # Content
//
// Callers see one value per object body, whatever its algorithm
// (content.go): Params are the content fields an envelope stores (NewParams
// makes them for a new object, with its content key), and Content answers a
// reader's questions about a stored body: its plaintext size, the stored
// range a plaintext range needs, ranged decryption, and a stream that
// authenticates at its end. Callers do no block arithmetic of their own; a
// new content algorithm is a change in this package only.
//
// # What is authenticated, and when
//
//   - AES/GCM/NoPadding, whole body (Content.NewReader): the ciphertext and
//     its length are authenticated by the 16-byte tag at the end. The
//     streaming reader releases plaintext before it has seen the tag (it
//     holds back only the final piece); the body is authentic only once Read
//     has returned io.EOF. On ErrAuthentication or ErrTruncated the caller
//     must discard, not merely stop using, what it has read so far.
//   - The V3 suite "115" (commit.go): the same GCM body, under a content key
//     HKDF-SHA512 derives from the data key and the object's message ID,
//     with IV 01×12 and the suite id 00 73 as additional data. Before that
//     key exists, Params.ContentKey checks the stored key commitment in
//     constant time, so a substituted data key, message ID or commitment is
//     refused (ErrCommitment) before anything is decrypted. CommitmentPolicy
//     says whether V3 is written and whether objects without it are read.
//   - AES/GCM ranges (Content.DecryptRange): plain AES-CTR, NOT
//     authenticated. An attacker who can write the object can flip chosen
//     plaintext bits. Use it only under an explicit policy that accepts this
//     (as the Java clients' "legacy unauthenticated modes" do).
//   - AES/CBC/PKCS5Padding (legacy, read-only): never authenticated. The
//     padding check catches most wrong keys and cuts at block boundaries, and
//     is reported as ErrAuthentication, but tampering goes undetected.
//   - Key wraps: AES/GCM (the AAD binds the content algorithm, "115" for
//     V3), RSA-OAEP-SHA1 (the pseudo key binds the content algorithm), AESWrap (RFC 3394
//     integrity value) and RSA-OAEP-SHA256 are integrity-checked; kms and
//     kms+context are checked by KMS, with the encryption context as AAD.
//     V1 AES/ECB has only a padding check and V1 RSA PKCS#1 v1.5 only its
//     padding.
//
// # Errors
//
// Every error of cryptographic origin wraps exactly one of the sentinels in
// materials.go; classify with errors.Is. Errors from a caller-supplied reader,
// writer or KMS client are wrapped with %w as well, so errors.As still
// reaches them. Streams have sticky errors. Panics ("cse: internal error: ...")
// are for caller bugs such as sealing after the last piece.
//
// # Streaming GCM
//
// The Go standard library's AEAD is one-shot. GCMSealer, EncryptWriter and
// the GCM reader produce and check the same bytes in bounded memory, built on
// the standard library's assembly (GHASH in ghash.go, sealing in gcmseal.go,
// opening in gcmopen.go):
//
//   - Sealing: the first 64 KiB chunk is a one-shot Seal under the object's
//     IV. Up to 1 MiB, later chunks are AES-CTR (counter IV || BE32(2+k) for
//     plaintext block k) followed by GHASH. GHASH comes from authenticating
//     the chunk as additional data under a fixed internal nonce and unmasking
//     the tag. Past 1 MiB, each 1 MiB chunk is a fused one-shot Seal under a
//     16-byte nonce solved so that GCM's counter starts at the chunk's block
//     (this costs one GF(2^128) inversion per message). Chunk GHASH values are
//     combined with powers of H (gcmCore, sealChunk).
//   - Opening: CTR plus GHASH-as-additional-data, per 64 KiB chunk. The
//     library's fused Open cannot be used, because it needs each chunk's tag
//     before it releases anything.
//
// The output is byte-identical to a one-shot Seal, which the tests check
// over a length × step grid. Measured on the 2-core dev VM (see
// TestMeasureRatios), sealing runs at 0.90–0.97× one-shot Seal. Opening runs
// at about 0.7× an in-memory one-shot Open and 0.9× a one-shot Open that must
// first read the body.
package cse
