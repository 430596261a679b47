package main

import (
	"fmt"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
)

// The command line before urfave/cli sees it. Two rewrites:
//
//   - mount(8) helpers. `mount -t fuse.csefs -o OPTS SOURCE DIR` (and so an
//     fstab line) runs mount.fuse3, which runs `csefs SOURCE DIR -o OPTS`; a
//     `mount.fuse.csefs` link to csefs is run by mount(8) itself as
//     `mount.fuse.csefs SOURCE DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]`.
//     Both become `csefs mount FLAGS SOURCE DIR`.
//   - flags anywhere: urfave/cli v2 stops parsing flags at the first
//     positional argument, so the flags of the (sub)command are moved before
//     its positionals, keeping each flag's value with it and everything after
//     `--` positional.

// helperNames are the program names under which csefs is a mount helper.
var helperNames = map[string]bool{"mount.fuse.csefs": true, "mount.csefs": true}

// rewriteArgs returns args (os.Args) as urfave/cli should parse them, and
// whether the invocation is mount(8)'s -f (fake: check, do not mount).
func rewriteArgs(app *cli.App, args []string) ([]string, bool, error) {
	if len(args) == 0 {
		return args, false, nil
	}
	// urfave/cli completes only when its flag is the last argument.
	const complete = "--generate-bash-completion"
	if args[len(args)-1] == complete {
		out, fake, err := rewriteArgs(app, args[:len(args)-1])
		return append(out, complete), fake, err
	}
	fake := false
	if helperNames[filepath.Base(args[0])] || len(args) > 2 && strings.Contains(args[1], "://") && findCommand(app.Commands, args[1]) == nil {
		var err error
		if args, fake, err = helperArgs(args, mountFlagsOf(app)); err != nil {
			return nil, false, err
		}
	}
	args, err := reorderArgs(app, args)
	return args, fake, err
}

// helperArgs turns a helper invocation into `csefs mount FLAGS SOURCE DIR`.
func helperArgs(args []string, flags []cli.Flag) ([]string, bool, error) {
	var pos, opts []string
	sloppy, fake := false, false
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 == len(args) {
				return nil, false, fmt.Errorf("mount helper: %s needs a value", a)
			}
			if a == "-o" {
				opts = append(opts, args[i+1])
			}
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, a[2:])
		case strings.HasPrefix(a, "-t"), strings.HasPrefix(a, "-N"):
		case len(a) > 1 && a[0] == '-' && strings.Trim(a[1:], "sfnvr w") == "" && !strings.HasPrefix(a, "--"):
			// mount(8)'s -s (sloppy), -f (fake), -n (no mtab), -v (verbose),
			// -r/-w (read-only/read-write, also given as -o ro/rw).
			sloppy = sloppy || strings.Contains(a, "s")
			fake = fake || strings.Contains(a, "f")
			if strings.Contains(a, "r") {
				opts = append(opts, "ro")
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, false, fmt.Errorf("mount helper: want SOURCE DIR [-o OPTIONS], got %q", strings.Join(args[1:], " "))
	}
	out := []string{args[0], "mount"}
	for _, o := range opts {
		f, err := optionFlags(o, sloppy, flags)
		if err != nil {
			return nil, false, err
		}
		out = append(out, f...)
	}
	return append(out, "--", pos[0], pos[1]), fake, nil
}

// ignoredOptions are the mount(8) and FUSE options that concern mount(8),
// fstab or systemd and not csefs, or that csefs always applies: the mount
// is always nosuid and nodev (decrypted files must not become setuid
// programs or devices, whatever their stored mode), so suid and dev, which
// mount.fuse3 adds by default, change nothing.
var ignoredOptions = map[string]bool{
	"defaults": true, "_netdev": true, "nofail": true, "auto": true, "noauto": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "async": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
	"nostrictatime": true, "diratime": true, "nodiratime": true, "lazytime": true, "nolazytime": true,
	"default_permissions": true, "fsname": true, "subtype": true, "comment": true,
	"loud": true, "silent": true, "bg": true, "fg": true,
}

// optionFlags turns one -o list (comma-separated) into csefs mount flags:
// key=value is --key value, a bare key of a boolean flag is --key; '_' and
// '-' are the same in keys. ro, rw, allow_other, nonempty, exec, noexec,
// uid and gid (numeric or a name) are honoured; ignoredOptions, x-* and
// comment= are dropped. Unknown options are an error, or with sloppy (-s)
// dropped too.
func optionFlags(list string, sloppy bool, flags []cli.Flag) ([]string, error) {
	byName := map[string]cli.Flag{}
	for _, f := range flags {
		for _, n := range f.Names() {
			byName[n] = f
		}
	}
	var out []string
	for _, o := range strings.Split(list, ",") {
		if o == "" {
			continue
		}
		key, val, hasVal := strings.Cut(o, "=")
		if ignoredOptions[key] || strings.HasPrefix(key, "x-") {
			continue
		}
		switch key {
		case "ro":
			out = append(out, "--read-only")
			continue
		case "rw":
			out = append(out, "--read-only=false")
			continue
		case "exec":
			out = append(out, "--noexec=false") // the default; undoes an earlier noexec
			continue
		case "nonempty":
			out = append(out, "--allow-non-empty")
			continue
		case "uid", "gid":
			if hasVal {
				id, err := lookupID(key, val)
				if err != nil {
					return nil, err
				}
				val = id
			}
		}
		name := strings.ReplaceAll(key, "_", "-")
		f, ok := byName[name]
		if !ok {
			if sloppy {
				continue
			}
			return nil, fmt.Errorf("unknown mount option %q (-o takes csefs mount's flags without the dashes, e.g. -o cse=kms,kms-key-id=alias/k; see csefs mount --help)", key)
		}
		_, isBool := f.(*cli.BoolFlag)
		switch {
		case isBool && !hasVal:
			out = append(out, "--"+name)
		case isBool:
			out = append(out, "--"+name+"="+val)
		case !hasVal:
			return nil, fmt.Errorf("mount option %q needs a value (%s=VALUE)", key, key)
		default:
			out = append(out, "--"+name, val)
		}
	}
	return out, nil
}

// lookupID resolves uid=NAME and gid=NAME to numbers (numbers pass).
func lookupID(key, val string) (string, error) {
	if strings.Trim(val, "0123456789") == "" && val != "" {
		return val, nil
	}
	if key == "uid" {
		u, err := user.Lookup(val)
		if err != nil {
			return "", fmt.Errorf("mount option uid=%s: %w", val, err)
		}
		return u.Uid, nil
	}
	g, err := user.LookupGroup(val)
	if err != nil {
		return "", fmt.Errorf("mount option gid=%s: %w", val, err)
	}
	return g.Gid, nil
}

func mountFlagsOf(app *cli.App) []cli.Flag {
	if c := findCommand(app.Commands, "mount"); c != nil {
		return c.Flags
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
		for _, a := range c.Aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// reorderArgs moves the flags of the command named by args (a leaf of
// app's command tree) before its positional arguments. A flag's value goes
// with it (--flag value, --flag=value); after `--` everything is
// positional. For mount, -o OPTIONS is expanded (optionFlags) wherever it
// stands. Other commands' lines are returned as they are.
func reorderArgs(app *cli.App, args []string) ([]string, error) {
	i := 1
	var cmd *cli.Command
	for cmds := app.Commands; i < len(args); {
		c := findCommand(cmds, args[i])
		if c == nil {
			break
		}
		cmd, cmds = c, c.Subcommands
		i++
		if len(cmds) == 0 {
			break
		}
	}
	if cmd == nil || len(cmd.Subcommands) > 0 {
		return args, nil
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	rest := args[i:]
	var flags, pos []string
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			pos = append(pos, rest[j+1:]...)
			break
		}
		if cmd.Name == "mount" && (a == "-o" || strings.HasPrefix(a, "-o") && !strings.HasPrefix(a, "--")) {
			list := strings.TrimPrefix(a, "-o")
			if list == "" {
				if j+1 == len(rest) {
					return nil, fmt.Errorf("-o needs a value, e.g. -o cse=kms,kms-key-id=alias/k")
				}
				j++
				list = rest[j]
			}
			f, err := optionFlags(list, false, cmd.Flags)
			if err != nil {
				return nil, err
			}
			flags = append(flags, f...)
			continue
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && takesValue[name] && j+1 < len(rest) {
			j++
			flags = append(flags, rest[j])
		}
	}
	out := append(append([]string{}, args[:i]...), flags...)
	for _, p := range pos {
		if strings.HasPrefix(p, "-") {
			out = append(out, "--")
			break
		}
	}
	return append(out, pos...), nil
}
