package mount

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Version describes this build: the module version, the VCS revision and
// time it was built from (with "+dirty" for uncommitted changes), and the Go
// toolchain, as debug.ReadBuildInfo reports them. A binary built without
// module or VCS information says "unknown" for the parts it lacks.
func Version() string {
	ver, rev, when, dirty := "unknown", "unknown", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	b.WriteString(ver)
	b.WriteString(" (revision ")
	b.WriteString(rev)
	if dirty && !strings.HasSuffix(ver, "+dirty") {
		b.WriteString("+dirty")
	}
	if when != "" {
		b.WriteString(", " + when)
	}
	b.WriteString(", " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")")
	return b.String()
}
