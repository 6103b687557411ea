package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meshd/meshd/inject"
)

const injectUsage = `Usage: meshd inject [-f FILE] [flags]

Reads Kubernetes manifests (FILE, or stdin when FILE is - or not given) and
writes them to stdout with the meshd iptables init container and the meshd
sidecar added to every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
Job and CronJob. Other objects pass through unchanged. See docs/kubernetes.md.

Flags:
`

// cmdInject is `meshd inject`: exit 0 on success, 1 when the input cannot
// be read or parsed, 2 on a bad flag.
func cmdInject(e env) int {
	fs := flag.NewFlagSet("meshd inject", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var opts inject.Options
	file := fs.String("f", "-", "manifest `file` to read; - is stdin")
	fs.StringVar(file, "filename", "-", "same as -f")
	fs.StringVar(&opts.Image, "image", inject.DefaultImage, "`image` of the meshd containers")
	fs.StringVar(&opts.ImagePullPolicy, "image-pull-policy", "", "imagePullPolicy of the meshd containers: Always, IfNotPresent or Never (default: Kubernetes' own)")
	mode := fs.String("sidecar-mode", string(inject.Native), "sidecar `mode`: native (an init container with restartPolicy Always, Kubernetes >= 1.29) or classic (the first container, older clusters)")
	fs.Func("env", "set `NAME=VALUE` on both meshd containers; repeatable", func(s string) error {
		v, err := inject.ParseEnvVar(s)
		if err == nil {
			opts.Env = append(opts.Env, v)
		}
		return err
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), injectUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(e.args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "meshd inject: unexpected argument %q (use -f FILE)\n", fs.Arg(0))
		return exitUsage
	}
	m, err := inject.ParseSidecarMode(*mode)
	if err != nil {
		fmt.Fprintf(e.stderr, "meshd inject: --sidecar-mode: %v\n", err)
		return exitUsage
	}
	opts.Mode = m

	var in []byte
	name := *file
	if name == "-" || name == "" {
		name = "stdin"
		in, err = io.ReadAll(os.Stdin)
	} else {
		in, err = os.ReadFile(name)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "meshd inject: %v\n", oneLine(err))
		return exitFailure
	}
	res, err := inject.Inject(in, opts)
	var de *inject.DocumentError
	switch {
	case errors.As(err, &de):
		fmt.Fprintf(e.stderr, "meshd inject: %s: %v\n", name, oneLine(err))
		return exitFailure
	case err != nil: // an option
		fmt.Fprintf(e.stderr, "meshd inject: %v\n", oneLine(err))
		return exitUsage
	}
	for _, n := range res.Notes {
		fmt.Fprintf(e.stderr, "meshd inject: %s\n", n)
	}
	if _, err := e.stdout.Write(res.Output); err != nil {
		fmt.Fprintf(e.stderr, "meshd inject: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// oneLine folds a multi-line error message onto one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// cmdWaitReady is `meshd wait-ready [--timeout D] [--health-addr A]`: it
// polls http://<health addr>/ready and exits 0 at the first 200, 1 at the
// timeout. The classic sidecar's postStart hook runs it, so that the
// kubelet starts the app's containers only once meshd is ready; it needs
// no shell.
func cmdWaitReady(e env) int {
	fs := flag.NewFlagSet("meshd wait-ready", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	addr := fs.String("health-addr", lookupEnv(e.environ, "MESHD_HEALTH_ADDR", ":15021"), "meshd's health listener (default $MESHD_HEALTH_ADDR or :15021)")
	if err := fs.Parse(e.args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "meshd wait-ready: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		fmt.Fprintf(e.stderr, "meshd wait-ready: health address %q: expected host:port\n", *addr)
		return exitUsage
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/ready"
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := waitReady(ctx, url); err != nil {
		fmt.Fprintf(e.stderr, "meshd wait-ready: %s not ready after %s: %v\n", url, *timeout, err)
		return exitFailure
	}
	return exitOK
}

// waitReady polls url until it answers 200 or ctx ends; it returns the last
// failure.
func waitReady(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second}
	last := errors.New("no answer")
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %s", resp.Status)
		} else if ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lookupEnv returns the value of name in environ, or def.
func lookupEnv(environ []string, name, def string) string {
	for i := len(environ) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(environ[i], name+"="); ok {
			return v
		}
	}
	return def
}
