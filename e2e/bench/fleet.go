package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// fleetTools measures the bucket tools on -fleet objects of 4 KiB: csefs
// encrypt (plaintext to V2 GCM), verify, rewrap to a second KMS key, and a
// second rewrap that only checks. Each is recorded in seconds per 1000
// objects (fleet.*), with --concurrency 8 (the default); the rewrap's
// progress lines and summary go into the notes.
func (b *bench) fleetTools() error {
	n := b.opt.fleet
	b.logf("fleet: %d plaintext objects", n)
	if err := sdkPuts(b.ctx, b.s3c, b.bucket, "fleet/f", randomBytes(4096), n, 16); err != nil {
		return err
	}
	key, err := b.kmssrv.NewClient().CreateKey(b.ctx, &kms.CreateKeyInput{})
	if err != nil {
		return fmt.Errorf("fleet: second KMS key: %w", err)
	}
	keyB := *key.KeyMetadata.KeyId
	target := "s3://" + b.bucket + "/fleet/"
	for _, step := range []struct {
		name string
		args []string
	}{
		{"encrypt", []string{"encrypt"}},
		{"verify", []string{"verify"}},
		{"rewrap", []string{"rewrap", "--to-kms-key-id", keyB}},
		{"rewrap.again", []string{"rewrap", "--to-kms-key-id", keyB}},
	} {
		b.logf("fleet: %s", step.name)
		args := append(step.args, "--endpoint-url", b.s3srv.Endpoint, "--path-style", "--region", b.s3srv.Region,
			"--kms-endpoint-url", b.kmssrv.Endpoint, "--cse", "kms", "--kms-key-id", b.kmssrv.KeyID,
			"--progress-interval", "1s", target)
		var stderr bytes.Buffer
		t, err := timed(func() error {
			cmd := exec.CommandContext(b.ctx, b.bin, args...)
			cmd.Env, cmd.Stderr = b.env, &stderr
			return cmd.Run()
		})
		if err != nil {
			return fmt.Errorf("csefs %s: %w\n%s", step.name, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), fmt.Sprintf(": %d objects checked", n)) {
			return fmt.Errorf("%w: csefs %s did not check %d objects:\n%s", errMismatch, step.name, n, stderr.String())
		}
		b.record("fleet."+step.name+".per1000", t*1000/float64(n))
		if step.name == "rewrap" {
			for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				b.note("fleet rewrap output: `%s`", l)
			}
		}
	}
	return nil
}
