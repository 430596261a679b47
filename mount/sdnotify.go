package mount

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// sdNotify sends state ("READY=1", "STOPPING=1", "STATUS=…", newline
// separated) to the service manager, as sd_notify(3) does: one datagram to
// the unix socket named by $NOTIFY_SOCKET (a leading '@' is the abstract
// namespace). Without $NOTIFY_SOCKET it does nothing. Errors are returned
// for logging only: a manager that is gone must not stop the mount.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// UnderSystemd reports whether this process runs as a systemd service
// ($NOTIFY_SOCKET) or with its stderr connected to the journal
// ($JOURNAL_STREAM naming stderr's device and inode, as systemd.exec(5)
// says to check: a shell started by a service inherits the variable with
// another stderr): its logs then go to stderr, which is the journal.
func UnderSystemd() bool {
	if os.Getenv("NOTIFY_SOCKET") != "" {
		return true
	}
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
