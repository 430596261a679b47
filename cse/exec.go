package cse

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// ExecOptions configures an ExecProvider.
type ExecOptions struct {
	// Timeout bounds one run of the program; 0 means 10s.
	Timeout time.Duration
	// Args are passed to the program after its path.
	Args []string
	// Env is the program's environment ("K=V"); nil inherits csefs's.
	Env []string
}

// ExecProvider is a Provider that delegates to an external program, the Go
// counterpart of EMRFS's custom EncryptionMaterialsProvider class. Safe for
// concurrent use (each call runs its own process). An example program, with
// tests, is cse/exec-provider-example.
//
// # The exec protocol, version 1
//
// --materials-provider exec:/path/to/program runs the program once per key
// operation: csefs writes one JSON request to its stdin (then closes it) and
// reads one JSON response from its stdout. The mount caches unwrapped data
// keys (keycache), so the program runs once per new object written and once
// per object first read, not once per read(2).
//
// Encrypt (a new object is being written):
//
//	stdin:  {"version":1, "operation":"encrypt", "object":"s3://bucket/key",
//	         "materials_description":{"Path":"..."}, "cek_alg":"AES/GCM/NoPadding"}
//	stdout: {"key":"<standard base64 of the 32-byte data key>",
//	         "wrapped_key":"<standard base64 of the wrapped key>",
//	         "wrap_alg":"AES/GCM",
//	         "materials_description":{"keyname":"..."}}
//
// The response's wrapped_key, wrap_alg and materials_description are stored
// with the object as x-amz-key-v2, x-amz-wrap-alg and x-amz-matdesc
// (materials_description may be omitted: the request's is stored). wrap_alg
// may be any non-empty string the program recognises on decrypt; with a
// standard one ("AES/GCM" as s3ec-format.md §4.3, "RSA-OAEP-SHA1" §4.4,
// "kms+context") the objects are also readable by the AWS clients and by a
// csefs keyring holding the same master key. With another string, only this
// program can read them.
//
// Decrypt (an object is being read):
//
//	stdin:  {"version":1, "operation":"decrypt", "object":"s3://bucket/key",
//	         "materials_description":{...}, "wrapped_key":"<base64>",
//	         "wrap_alg":"AES/GCM", "cek_alg":"AES/GCM/NoPadding"}
//	stdout: {"key":"<base64 of the data key>"}
//
// "object" is empty when the caller did not say (WrappedKey.Object).
// The program must check every binding its wrap has (for AES/GCM, the
// cek_alg as additional data).
//
// cek_alg is "AES/GCM/NoPadding" for V2 objects and "115" for V3 ones (the
// key-committing suite, --commitment-policy require-*); the program binds it
// as it binds any other value. A V3 object can only name the wraps
// "AES/GCM", "kms+context" and "RSA-OAEP-SHA1": a write under a V3 policy
// whose program answers another wrap_alg fails.
//
// Errors: the program exits non-zero, or prints {"error":"message"} (with any
// exit status). csefs reports ErrKeyAccess (EACCES through the mount) with
// the message, or with the first 512 bytes of stderr, cleaned of control
// characters and of anything shaped like base64 of a 32-byte key. A program
// that runs longer than ExecOptions.Timeout is killed with its whole process
// group (it runs in a new one) and gives ErrKeyAccess "timed out". Output
// that is not one JSON object, or a key that is not base64 of 16, 24 or 32
// bytes (32 for encrypt), or an encrypt response without wrapped_key or
// wrap_alg, gives ErrMalformed. Unknown response fields are ignored, and
// stdout beyond 1 MiB is an error.
//
// The program inherits csefs's environment unless ExecOptions.Env is set,
// and csefs's working directory. It must never print keys to stderr.
type ExecProvider struct {
	path string
	opt  ExecOptions
}

var _ Provider = (*ExecProvider)(nil)

const (
	execProtocolVersion = 1
	execMaxStdout       = 1 << 20
	execMaxStderr       = 4 << 10
	execMaxMessage      = 512
)

// NewExecProvider checks that path is an executable regular file and returns
// a provider running it. A missing or non-executable program gives
// ErrKeyUnusable.
func NewExecProvider(path string, opt ExecOptions) (*ExecProvider, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("cse: exec provider %q: %w: %w", path, ErrKeyUnusable, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("cse: exec provider: %w: %w", ErrKeyUnusable, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("cse: exec provider %s: not an executable file (mode %v): %w", abs, fi.Mode(), ErrKeyUnusable)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	opt.Args = append([]string(nil), opt.Args...)
	if opt.Env != nil {
		opt.Env = append([]string{}, opt.Env...)
	}
	return &ExecProvider{path: abs, opt: opt}, nil
}

type execRequest struct {
	Version    int               `json:"version"`
	Operation  string            `json:"operation"`
	Object     string            `json:"object"`
	MatDesc    map[string]string `json:"materials_description"`
	CEKAlg     string            `json:"cek_alg"`
	WrappedKey []byte            `json:"wrapped_key,omitempty"` // base64 by encoding/json
	WrapAlg    string            `json:"wrap_alg,omitempty"`
}

type execResponse struct {
	Key        []byte            `json:"key"`
	WrappedKey []byte            `json:"wrapped_key"`
	WrapAlg    string            `json:"wrap_alg"`
	MatDesc    map[string]string `json:"materials_description"`
	Error      *string           `json:"error"`
}

// GenerateKey implements Provider.
func (p *ExecProvider) GenerateKey(ctx context.Context, req KeyRequest) ([]byte, WrappedKey, error) {
	if req.CEKAlg == "" {
		req.CEKAlg = CEKAlgGCM
	}
	md := req.MatDesc
	if md == nil {
		md = map[string]string{}
	}
	resp, err := p.run(ctx, execRequest{Version: execProtocolVersion, Operation: "encrypt", Object: req.Object, MatDesc: md, CEKAlg: req.CEKAlg})
	if err != nil {
		return nil, WrappedKey{}, err
	}
	if len(resp.Key) != KeySize || len(resp.WrappedKey) == 0 || resp.WrapAlg == "" {
		Zero(resp.Key)
		return nil, WrappedKey{}, fmt.Errorf("cse: exec provider %s: encrypt answered a %d-byte key, a %d-byte wrapped key and wrap_alg %q; want 32 bytes, a wrapped key and a wrap_alg: %w",
			p.path, len(resp.Key), len(resp.WrappedKey), resp.WrapAlg, ErrMalformed)
	}
	w := WrappedKey{WrapAlg: resp.WrapAlg, CEKAlg: req.CEKAlg, Blob: resp.WrappedKey, MatDesc: resp.MatDesc}
	if w.MatDesc == nil {
		w.MatDesc = make(map[string]string, len(md))
		for k, v := range md {
			w.MatDesc[k] = v
		}
	}
	return resp.Key, w, nil
}

// DecryptKey implements Provider.
func (p *ExecProvider) DecryptKey(ctx context.Context, w WrappedKey) ([]byte, error) {
	md := w.MatDesc
	if md == nil {
		md = map[string]string{}
	}
	resp, err := p.run(ctx, execRequest{Version: execProtocolVersion, Operation: "decrypt", Object: w.Object,
		MatDesc: md, CEKAlg: w.CEKAlg, WrappedKey: w.Blob, WrapAlg: w.WrapAlg})
	if err != nil {
		return nil, err
	}
	Zero(resp.WrappedKey)
	if !validCEKLen(len(resp.Key)) {
		Zero(resp.Key)
		return nil, fmt.Errorf("cse: exec provider %s: decrypt answered a %d-byte key: %w", p.path, len(resp.Key), ErrMalformed)
	}
	return resp.Key, nil
}

// run executes the program once.
func (p *ExecProvider) run(ctx context.Context, req execRequest) (*execResponse, error) {
	in, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("cse: exec provider request: %w: %v", ErrMalformed, err)
	}
	runCtx, cancel := context.WithTimeout(ctx, p.opt.Timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, p.path, p.opt.Args...)
	cmd.Env = p.opt.Env
	cmd.Stdin = bytes.NewReader(in)
	stdout := &boundedBuffer{max: execMaxStdout}
	stderr := &boundedBuffer{max: execMaxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// A process group of its own, so a timeout kills whatever it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// If something outside the group still holds stdout or stderr, stop
	// waiting for it soon after the program is gone.
	cmd.WaitDelay = time.Second
	runErr := cmd.Run()
	defer Zero(stdout.buf.Bytes())

	if ctx.Err() != nil {
		return nil, fmt.Errorf("cse: exec provider %s: %w: %w", p.path, ErrKeyAccess, ctx.Err())
	}
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		return nil, fmt.Errorf("cse: exec provider %s: provider timed out after %v: %w", p.path, p.opt.Timeout, ErrKeyAccess)
	}
	var resp execResponse
	dec := json.NewDecoder(bytes.NewReader(stdout.buf.Bytes()))
	decErr := dec.Decode(&resp)
	if decErr == nil && dec.More() {
		decErr = errors.New("data after the JSON object")
	}
	if decErr == nil && resp.Error != nil {
		Zero(resp.Key)
		return nil, fmt.Errorf("cse: exec provider %s: %s failed: %s: %w", p.path, req.Operation, cleanMessage([]byte(*resp.Error)), ErrKeyAccess)
	}
	if runErr != nil {
		Zero(resp.Key)
		msg := cleanMessage(stderr.buf.Bytes())
		if msg == "" {
			msg = "(no stderr)"
		}
		var exit *exec.ExitError
		if errors.As(runErr, &exit) {
			return nil, fmt.Errorf("cse: exec provider %s: %s failed: %v: %s: %w", p.path, req.Operation, exit.ProcessState, msg, ErrKeyAccess)
		}
		return nil, fmt.Errorf("cse: exec provider %s: %s failed: %s: %w: %w", p.path, req.Operation, msg, ErrKeyAccess, runErr)
	}
	if stdout.overflow {
		return nil, fmt.Errorf("cse: exec provider %s: more than %d bytes on stdout: %w", p.path, execMaxStdout, ErrMalformed)
	}
	if decErr != nil {
		Zero(resp.Key)
		return nil, fmt.Errorf("cse: exec provider %s: %s: output is not one JSON response (%s): %w", p.path, req.Operation, describeJSONError(decErr), ErrMalformed)
	}
	return &resp, nil
}

// describeJSONError says what was wrong with a response without quoting it
// (it may hold a key).
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var b64 base64.CorruptInputError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.As(err, &b64):
		return fmt.Sprintf("bad base64 at byte %d of a field", int64(b64))
	case errors.Is(err, io.EOF):
		return "empty output"
	}
	return "malformed"
}

// boundedBuffer keeps the first max bytes written to it and drops the rest.
type boundedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.overflow = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

// keyShaped matches base64 text of 32 bytes (and longer runs containing it).
var keyShaped = regexp.MustCompile(`[A-Za-z0-9+/_-]{43}=?`)

// cleanMessage makes a provider's message safe to show: valid UTF-8, no
// control characters, nothing shaped like a base64 data key, at most
// execMaxMessage bytes.
func cleanMessage(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = keyShaped.ReplaceAllString(s, "[redacted]")
	s = strings.TrimSpace(s)
	if len(s) > execMaxMessage {
		s = strings.ToValidUTF8(s[:execMaxMessage], "") + "…"
	}
	return s
}
