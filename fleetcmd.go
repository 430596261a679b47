package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/csefs/csefs/fleet"
	"github.com/csefs/csefs/mount"
)

// toolFlags are the flags every bucket tool has besides connectionFlags and
// keyFlags.
func toolFlags(extra ...cli.Flag) []cli.Flag {
	f := append(connectionFlags(), keyFlags()...)
	f = append(f,
		&cli.IntFlag{Name: "concurrency", Value: 8, Usage: "objects worked on at once"},
		&cli.BoolFlag{Name: "json", Usage: "one JSON object per line on stdout instead of text"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "report every object, not only those changed or failed"},
		&cli.DurationFlag{Name: "progress-interval", Value: 10 * time.Second, Usage: "how often a progress line is written when stderr is not a terminal"},
		&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error"},
	)
	return append(f, extra...)
}

// writeFlags are the flags of the tools that write bodies.
var writeFlags = []cli.Flag{
	&cli.StringFlag{Name: "part-size", Value: "16MiB", Usage: "multipart upload part size"},
	&cli.IntFlag{Name: "upload-concurrency", Value: 2, Usage: "parts of one object uploaded in parallel"},
	&cli.StringFlag{Name: "memory-budget", Value: "128MiB", Usage: "upload buffers of all objects together beyond one part each"},
}

const targetUsage = "s3://BUCKET[/KEY|/PREFIX]|file:///ABS/DIR[/FILE]"

func fleetCommands() []*cli.Command {
	return []*cli.Command{{
		Name:      "inspect",
		Usage:     "describe the encryption of objects: format, storage, wrapping and key, materials description, sizes, attributes",
		ArgsUsage: targetUsage,
		Description: "Reads metadata (and instruction files) only; never prints key material. The key\n" +
			"service is called only with --unwrap, which reports whether each data key unwraps\n" +
			"(and, for KMS, the ARN of the key that unwrapped it).",
		Flags: toolFlags(&cli.BoolFlag{Name: "unwrap", Usage: "unwrap each data key (calls KMS or reads the keyring)"}),
		Action: func(c *cli.Context) error {
			return runTool(c, c.Bool("unwrap"), "inspected", func(ctx, stop context.Context, f *mount.Fleet, o fleet.Options) (fleet.Summary, error) {
				return fleet.Inspect(ctx, stop, o, c.Bool("unwrap"))
			})
		},
	}, {
		Name:      "verify",
		Usage:     "unwrap and fully authenticate every encrypted object (GCM tag, V3 commitment, CBC padding); exit 1 if any fails",
		ArgsUsage: targetUsage,
		Flags:     toolFlags(),
		Action: func(c *cli.Context) error {
			return runTool(c, true, "verified", func(ctx, stop context.Context, f *mount.Fleet, o fleet.Options) (fleet.Summary, error) {
				return fleet.Verify(ctx, stop, o)
			})
		},
	}, {
		Name:      "rewrap",
		Usage:     "wrap every data key again under a new KMS key or keyring key (key rotation; bodies untouched)",
		ArgsUsage: targetUsage,
		Flags: toolFlags(
			&cli.StringFlag{Name: "to-kms-key-id", Usage: "the new KMS key (key id, ARN, alias/NAME)"},
			&cli.StringFlag{Name: "to-keyring", Usage: "the keyring file holding the new key"},
			&cli.StringFlag{Name: "to-keyname", Usage: "the key of --to-keyring (default: its encrypt_with key)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "report what would change, write nothing"},
		),
		Action: func(c *cli.Context) error {
			toKMS, toKR := c.String("to-kms-key-id"), c.String("to-keyring")
			if (toKMS == "") == (toKR == "") {
				return errors.New("rewrap needs exactly one of --to-kms-key-id and --to-keyring")
			}
			return runTool(c, true, "rewrapped", func(ctx, stop context.Context, f *mount.Fleet, o fleet.Options) (fleet.Summary, error) {
				var t *mount.RewrapTarget
				var err error
				if toKMS != "" {
					t, err = f.KMSTarget(ctx, toKMS)
				} else {
					t, err = f.KeyringTarget(ctx, toKR, c.String("to-keyname"))
				}
				if err != nil {
					return fleet.Summary{}, err
				}
				return fleet.Rewrap(ctx, stop, o, fleet.RewrapOptions{
					Wrapper: t.Wrapper, IsTarget: t.IsTarget, Target: t.Name, DryRun: c.Bool("dry-run"),
				})
			})
		},
	}, {
		Name:      "encrypt",
		Usage:     "encrypt plaintext objects in place (and, with --upgrade-legacy, re-encrypt CBC and V1 objects as GCM)",
		ArgsUsage: targetUsage,
		Description: "Each object is read and its encrypted version written with If-Match on the ETag\n" +
			"read, so an object another client replaces meanwhile is left alone and reported.\n" +
			"The envelope goes into the object's metadata (written atomically with the body).",
		Flags: toolFlags(append([]cli.Flag{
			&cli.BoolFlag{Name: "upgrade-legacy", Usage: "also re-encrypt AES-CBC and V1 objects as AES-GCM"},
			&cli.BoolFlag{Name: "dry-run", Usage: "report what would change, write nothing"},
		}, writeFlags...)...),
		Action: func(c *cli.Context) error {
			if c.String("storage-mode") == "instruction-file" {
				return errors.New("encrypt writes the envelope into the object's metadata only: an instruction file is a second object, and a crash between the two writes would lose the data key or misdescribe the object")
			}
			return runTool(c, true, "encrypted", func(ctx, stop context.Context, f *mount.Fleet, o fleet.Options) (fleet.Summary, error) {
				if f.Provider == nil {
					return fleet.Summary{}, errors.New("encrypt needs a key: --cse kms --kms-key-id KEY, or --cse custom with a keyring")
				}
				return fleet.Encrypt(ctx, stop, o, fleet.EncryptOptions{
					Provider: f.Provider, MatDesc: f.MatDesc, MatDescFor: f.MatDescFor,
					UpgradeLegacy: c.Bool("upgrade-legacy"), DryRun: c.Bool("dry-run"),
				})
			})
		},
	}}
}

type toolFunc func(ctx, stop context.Context, f *mount.Fleet, o fleet.Options) (fleet.Summary, error)

// runTool opens the target and runs tool with progress on stderr and
// reports on stdout. The first SIGINT or SIGTERM stops taking new objects
// (those in flight finish); a second one cancels them.
func runTool(c *cli.Context, keys bool, verb string, tool toolFunc) error {
	if c.NArg() != 1 {
		return fmt.Errorf("%s needs one target: %s", c.Command.Name, targetUsage)
	}
	cfg := readConfig(c, c.Args().First())
	var err error
	if cfg.PartSize, err = mount.ParseSize(stringOr(c, "part-size", "16MiB")); err != nil {
		return fmt.Errorf("--part-size: %w", err)
	}
	if cfg.MemoryBudget, err = mount.ParseSize(stringOr(c, "memory-budget", "128MiB")); err != nil {
		return fmt.Errorf("--memory-budget: %w", err)
	}
	cfg.UploadConcurrency = c.Int("upload-concurrency")
	log, err := mount.Logger(c.String("log-level"), os.Stderr)
	if err != nil {
		return err
	}
	ctx := context.Background()
	stop, stopNow := context.WithCancel(ctx)
	work, cancelWork := context.WithCancel(ctx)
	defer stopNow()
	defer cancelWork()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for range sigs {
			if n++; n == 1 {
				fmt.Fprintln(os.Stderr, "csefs: stopping after the objects in flight (again to abort them)")
				stopNow()
			} else {
				cancelWork()
			}
		}
	}()

	f, err := mount.OpenFleet(work, cfg, keys, log)
	if err != nil {
		return err
	}
	defer f.Close()
	if keys {
		if err := f.EnableKMSUnwrap(work, ""); err != nil {
			return err
		}
	}
	o := fleet.Options{
		Store: f.Store, URI: f.URI, Path: f.Path, Policy: f.Policy, Concurrency: c.Int("concurrency"),
		Report: &fleet.Reporter{W: c.App.Writer, JSON: c.Bool("json"), Verbose: c.Bool("verbose")},
		Progress: &fleet.Progress{W: c.App.ErrWriter, Terminal: term.IsTerminal(int(os.Stderr.Fd())),
			Interval: c.Duration("progress-interval"), Verb: verb},
	}
	if keys {
		o.Unwrap = f.Unwrap
	}
	_, err = tool(work, stop, f, o)
	switch {
	case errors.Is(err, fleet.ErrFailed):
		return cli.Exit("", 1)
	case errors.Is(err, fleet.ErrInterrupted):
		return cli.Exit("", 130)
	}
	return err
}

func stringOr(c *cli.Context, name, def string) string {
	if v := c.String(name); v != "" {
		return v
	}
	return def
}
