package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// Help, usage errors and completion for the whole command tree
// (polishApp), kept apart from the commands so that they stay plain.

// flagCategories groups flags in --help, by name. Flags not listed fall
// in the unnamed group at the top.
var flagCategories = map[string]string{}

func init() {
	for cat, names := range map[string][]string{
		"Connection": {"endpoint-url", "kms-endpoint-url", "region", "path-style", "s3-retry-deadline",
			"kms-timeout", "kms-deadline", "kms-region", "ca-bundle", "tls-artifacts", "allow-http"},
		"Encryption and keys": {"cse", "kms-key-id", "kms-wrap", "storage-mode", "commitment-policy", "keyring",
			"emrfs-site", "security-configuration", "zones-file", "zone", "materials-description", "job-flow-id",
			"job-flow-json", "materials-provider", "materials-provider-timeout", "key-cache-size", "key-cache-ttl", "kms-key-ahead",
			"sse", "sse-kms-key-id", "sse-c-key-file"},
		"Reading": {"plaintext", "verify-threshold", "strict-ranged-reads", "metadata-ttl", "attrs-from-list", "xattrs",
			"page-cache", "cache-dir", "cache-size"},
		"Writing and memory": {"part-size", "upload-concurrency", "staging-dir", "staging-limit", "memory-budget",
			"memory-target"},
		"Mount": {"foreground", "read-only", "noexec", "allow-other", "allow-non-empty", "uid", "gid", "file-mode", "dir-mode"},
		"Logs, metrics and debugging": {"log-level", "log-file", "log-format", "metrics-addr", "pprof-addr",
			"allow-core-dumps", "fuse-debug"},
	} {
		for _, n := range names {
			flagCategories[n] = cat
		}
	}
}

// examples are shown at the end of a command's --help.
var examples = map[string]string{
	"mount": `EXAMPLES:
   # KMS, in the background; returns when the mount serves
   csefs mount --cse kms --kms-key-id alias/my-key s3://my-bucket/data /mnt/data
   # MinIO or another S3 (flags may come after the arguments too)
   csefs mount s3://bucket /mnt/b --endpoint-url http://127.0.0.1:9000 --path-style --cse kms --kms-key-id alias/k
   # a local directory with a keyring (~/.config/csefs/keyring.json by default)
   csefs mount file:///srv/store /mnt/store
   # the same as mount(8) options, as in /etc/fstab
   mount -t fuse.csefs -o _netdev,cse=kms,kms-key-id=alias/my-key s3://my-bucket/data /mnt/data
   # under systemd (Type=notify), with metrics
   csefs mount --foreground --metrics-addr 9464 --cse kms --kms-key-id alias/k s3://b/p /mnt/p`,
	"unmount": `EXAMPLES:
   csefs unmount /mnt/data          # waits for open files and uploads, saying which
   csefs unmount --lazy /mnt/data   # detach a dead mount`,
}

// polishApp gives every command of app a one-line usage error with a hint,
// grouped flags in --help, examples, and shell completion.
func polishApp(app *cli.App) {
	app.EnableBashCompletion = true
	app.OnUsageError = usageError("csefs")
	app.CommandNotFound = func(c *cli.Context, name string) {
		fmt.Fprintf(os.Stderr, "csefs: no command %q (csefs --help lists them)\n", name)
		os.Exit(1)
	}
	app.Commands = append(app.Commands, completionCommand(app))
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			full := prefix + " " + c.Name
			c.OnUsageError = usageError(full)
			if ex := examples[c.Name]; ex != "" && prefix == "csefs" {
				c.CustomHelpTemplate = cli.CommandHelpTemplate + "\n" + ex + "\n"
			}
			for _, f := range c.Flags {
				setCategory(f, flagCategories[f.Names()[0]])
			}
			walk(full, c.Subcommands)
		}
	}
	walk("csefs", app.Commands)
}

// usageError prints a usage error as one line with a hint, not the whole
// help.
func usageError(cmd string) cli.OnUsageErrorFunc {
	return func(c *cli.Context, err error, _ bool) error {
		msg := strings.TrimPrefix(err.Error(), "flag provided but not defined: ")
		if msg != err.Error() {
			if !strings.HasPrefix(msg, "--") {
				msg = "-" + msg // the flag package reports --x as -x
			}
			msg = "unknown flag " + msg
		}
		return cli.Exit(fmt.Sprintf("csefs: %s (see %s --help)", msg, cmd), 2)
	}
}

func setCategory(f cli.Flag, cat string) {
	if cat == "" {
		return
	}
	switch f := f.(type) {
	case *cli.StringFlag:
		f.Category = cat
	case *cli.BoolFlag:
		f.Category = cat
	case *cli.IntFlag:
		f.Category = cat
	case *cli.DurationFlag:
		f.Category = cat
	case *cli.StringSliceFlag:
		f.Category = cat
	}
}

// completionCommand prints a completion script; the scripts ask csefs
// itself (urfave/cli's --generate-bash-completion) for the candidates.
func completionCommand(app *cli.App) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "bash: source <(csefs completion bash), or save it as /etc/bash_completion.d/csefs\n" +
			"zsh:  csefs completion zsh > \"${fpath[1]}/_csefs\"\n" +
			"fish: csefs completion fish > ~/.config/fish/completions/csefs.fish",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			case "fish":
				s, err := app.ToFishCompletion()
				if err != nil {
					return err
				}
				fmt.Fprint(c.App.Writer, s)
			default:
				return cli.Exit("csefs: completion needs a shell: bash, zsh or fish (see csefs completion --help)", 2)
			}
			return nil
		},
	}
}

const bashCompletion = `# bash completion for csefs
_csefs() {
    local cur opts
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    if [[ "$cur" == "-"* ]]; then
        opts=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:$COMP_CWORD-1}" "$cur" --generate-bash-completion 2>/dev/null)
    else
        opts=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:$COMP_CWORD-1}" --generate-bash-completion 2>/dev/null)
    fi
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    return 0
}
complete -o bashdefault -o default -F _csefs csefs
`

const zshCompletion = `#compdef csefs
_csefs() {
    local -a opts
    local cur=${words[-1]}
    if [[ "$cur" == "-"* ]]; then
        opts=("${(@f)$(${words[1]} ${words[@]:1:-1} $cur --generate-bash-completion 2>/dev/null)}")
    else
        opts=("${(@f)$(${words[1]} ${words[@]:1:-1} --generate-bash-completion 2>/dev/null)}")
    fi
    compadd -a opts
}
compdef _csefs csefs
`
