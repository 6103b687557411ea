// Command meshd is a sidecar service-mesh data plane proxy: it takes a
// pod's east/west traffic (redirected by iptables or sent explicitly),
// resolves peers from Consul or static endpoints, and wraps every outbound
// call in timeouts, retries and circuit breakers.
//
// This package only parses the command line, wires the packages together
// and maps errors to exit codes: 0 success, 1 a runtime failure, 2 a bad
// setting or command line.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/meshd/meshd/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const usage = `meshd: a sidecar service-mesh data plane proxy

Usage:
  meshd run [flags]                  run the sidecar (outbound, inbound, admin and health listeners)
  meshd iptables apply|clean|print   install, remove or show the traffic redirect rules
  meshd status [--admin-addr A] [--json]
                                     show upstreams, breakers and endpoints from the admin API
  meshd version                      print version, commit and Go version
  meshd config docs                  print the configuration reference (Markdown)
  meshd inject [-f FILE] [--env N=V]... [--image I] [--sidecar-mode native|classic]
                                     add the meshd init container and sidecar to Kubernetes manifests
  meshd wait-ready [--timeout 60s]   wait until /ready answers 200 (classic sidecar's postStart hook)

Every setting is an environment variable with a --kebab-case flag of the same
name (MESHD_ADMIN_ADDR = --admin-addr); see docs/configuration.md.
`

// env is what a subcommand gets from the process: its arguments after the
// subcommand name, the environment, and where to write.
type env struct {
	args    []string
	environ []string
	stdout  io.Writer
	stderr  io.Writer
}

func main() {
	os.Exit(dispatch(os.Args[1:], env{environ: os.Environ(), stdout: os.Stdout, stderr: os.Stderr}))
}

func dispatch(args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	e.args = args[1:]
	switch args[0] {
	case "run":
		return cmdRun(e)
	case "iptables":
		return cmdIptables(e)
	case "status":
		return cmdStatus(e)
	case "version", "--version":
		return cmdVersion(e)
	case "config":
		return cmdConfig(e)
	case "inject":
		return cmdInject(e)
	case "wait-ready":
		return cmdWaitReady(e)
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(e.stderr, "meshd: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// loadConfig reads the configuration for a subcommand. On error it prints
// one line and returns the exit code to use (0 for -h).
func loadConfig(e env, maxArgs int) (*config.Config, []string, int, bool) {
	cfg, rest, err := config.Load(e.environ, e.args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(e.stdout, usage)
		return nil, nil, exitOK, false
	case err != nil:
		fmt.Fprintf(e.stderr, "meshd: %v\n", err)
		return nil, nil, exitUsage, false
	case len(rest) > maxArgs:
		fmt.Fprintf(e.stderr, "meshd: unexpected argument %q\n", rest[maxArgs])
		return nil, nil, exitUsage, false
	}
	return cfg, rest, exitOK, true
}

func cmdConfig(e env) int {
	if len(e.args) != 1 || e.args[0] != "docs" {
		fmt.Fprintf(e.stderr, "meshd: usage: meshd config docs\n")
		return exitUsage
	}
	if _, err := e.stdout.Write(config.Markdown()); err != nil {
		fmt.Fprintf(e.stderr, "meshd: %v\n", err)
		return exitFailure
	}
	return exitOK
}
