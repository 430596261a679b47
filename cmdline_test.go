package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestRewriteArgs(t *testing.T) {
	app := newApp()
	for _, tc := range []struct {
		in   string
		want string
		fake bool
	}{
		// flags after the positionals, with values, and after --
		{"csefs mount s3://b/p /mnt --cse kms --kms-key-id=alias/k --read-only",
			"csefs mount --cse kms --kms-key-id=alias/k --read-only s3://b/p /mnt", false},
		{"csefs mount --part-size 8MiB s3://b -- -odd", "csefs mount --part-size 8MiB -- s3://b -odd", false},
		{"csefs unmount /mnt --lazy", "csefs unmount --lazy /mnt", false},
		{"csefs uploads list s3://b --region eu-west-1", "csefs uploads list --region eu-west-1 s3://b", false},
		// -o on csefs mount itself
		{"csefs mount -o ro,cse=kms,allow_other s3://b /mnt", "csefs mount --read-only --cse kms --allow-other s3://b /mnt", false},
		// mount.fuse3's form
		{"csefs s3://b/p /mnt -o ro,dev,suid,_netdev,nofail,x-systemd.automount,kms-key-id=alias/k,uid=0",
			"csefs mount --read-only --kms-key-id alias/k --uid 0 s3://b/p /mnt", false},
		// mount(8)'s form for a mount.fuse.csefs link
		{"/sbin/mount.fuse.csefs s3://b /mnt -n -o rw,defaults,noexec -t fuse.csefs",
			"/sbin/mount.fuse.csefs mount --read-only=false --noexec s3://b /mnt", false},
		{"/sbin/mount.fuse.csefs s3://b /mnt -sf -o whatever=1", "/sbin/mount.fuse.csefs mount s3://b /mnt", true},
	} {
		got, fake, err := rewriteArgs(app, strings.Fields(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if want := strings.Fields(tc.want); !reflect.DeepEqual(got, want) || fake != tc.fake {
			t.Errorf("%s:\n got %q fake %v\nwant %q fake %v", tc.in, got, fake, want, tc.fake)
		}
	}
	for _, in := range []string{
		"csefs s3://b /mnt -o bogus",      // unknown option
		"csefs s3://b /mnt -o kms-key-id", // a value flag without a value
		"csefs s3://b -o ro",              // no mountpoint
		"csefs mount -o uid=no-such-user-x s3://b /mnt",
	} {
		if got, _, err := rewriteArgs(app, strings.Fields(in)); err == nil {
			t.Errorf("%s: accepted as %q", in, got)
		}
	}
}
