package mount

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// NewLogger builds the logger for a level name (debug, info, warn, error),
// a format (text or json; "" is text) and a destination.
func NewLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, fmt.Errorf("--log-level %q: expected debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: expected text or json", format)
}

// Logger is NewLogger in the text format.
func Logger(level string, w io.Writer) (*slog.Logger, error) { return NewLogger(level, "text", w) }

// DefaultLogFile is where a background mount of mnt logs when --log-file
// is not given: /var/log/csefs/NAME.log for root, else
// $XDG_STATE_HOME/csefs/log/NAME.log (~/.local/state/csefs/log), NAME the
// absolute mountpoint with '/' and ' ' as '_'. Under systemd a background
// mount logs to stderr instead (UnderSystemd).
func DefaultLogFile(mnt string) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(strings.Trim(mnt, "/")) + ".log"
	if os.Geteuid() == 0 {
		return filepath.Join("/var/log/csefs", name)
	}
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return strings.TrimSuffix(pidFile(mnt), ".pid") + ".log"
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "csefs", "log", name)
}

// envLogFile names the daemon child's log file, which the parent opened as
// the child's stdout and stderr; the child reopens it on SIGHUP.
const envLogFile = "CSEFS_LOG_FILE"

// LogFile is a log destination that can be reopened (for logrotate: it
// renames the file, then sends SIGHUP).
type LogFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
	// stdio: the file is also fds 1 and 2 (the daemon child), so that
	// panics and the runtime's own messages land in it too.
	stdio bool
}

// OpenLogFile opens path for appending (mode 0600, its directory made
// 0700 if missing).
func OpenLogFile(path string) (*LogFile, error) {
	l := &LogFile{path: path}
	return l, l.Reopen()
}

// DaemonLogFile is the log file the parent set up for this daemon child,
// or nil (logging to the inherited stderr: systemd's journal).
func DaemonLogFile() *LogFile {
	p := os.Getenv(envLogFile)
	if p == "" || !IsDaemonChild() {
		return nil
	}
	return &LogFile{path: p, f: os.Stderr, stdio: true}
}

// Path is the file's name.
func (l *LogFile) Path() string { return l.path }

// Write writes to the file as it is now.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the file's path again (creating it), and writes there from
// now on.
func (l *LogFile) Reopen() error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stdio {
		for _, fd := range []int{1, 2} {
			if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
				f.Close()
				return fmt.Errorf("log file: %w", err)
			}
		}
		f.Close()
		return nil
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f = f
	return nil
}

// Close closes the file (not stdio's).
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stdio || l.f == nil {
		return nil
	}
	return l.f.Close()
}
