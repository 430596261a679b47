// Package e2e holds csefs's end-to-end tests: real FUSE mounts of the built
// binary against MinIO and local-kms started by the tests (see testenv).
package e2e
