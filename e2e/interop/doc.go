// Package interop proves, at library level, that csefs's crypto core (cse,
// metadata, keycache) and the official S3 Encryption Clients read each
// other's objects byte for byte, against real servers (MinIO and local-kms,
// started by e2e/testenv):
//
//   - objects the core writes (single PUT and multipart, object-metadata and
//     instruction-file mode, kms+context and legacy kms wraps) decrypt with
//     amazon-s3-encryption-client-go v3.2.0 (GO3), v4.0.0 (GO4) and aws-sdk-go v1.55.8
//     s3crypto (GO1); v3.1.0 (GO31) is a module of its own, e2e/oracle/go31,
//     checked through a mount by e2e's TestGO31Interop;
//   - objects GO3 and GO1 write (kms+context with and without a caller
//     encryption context, legacy kms with GCM and CBC, instruction files)
//     decrypt through the core;
//   - tampered, mis-keyed and malformed objects fail with the documented
//     sentinel errors and return no plaintext.
//
// Everything is in _test.go files; the package has no API.
package interop
