package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time by the Makefile (-X main.version=... -X main.commit=...);
// otherwise read from the build info.
var (
	version = ""
	commit  = ""
)

// buildVersion returns meshd's version, commit and Go version.
func buildVersion() (ver, rev, goVersion string) {
	ver, rev, goVersion = version, commit, runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if ver == "" && bi.Main.Version != "" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && rev == "" {
				rev = s.Value
			}
		}
	}
	if ver == "" {
		ver = "(devel)"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev, goVersion
}

func cmdVersion(e env) int {
	ver, rev, goVersion := buildVersion()
	fmt.Fprintf(e.stdout, "meshd %s\ncommit: %s\ngo: %s %s/%s\n", ver, rev, goVersion, runtime.GOOS, runtime.GOARCH)
	return exitOK
}
