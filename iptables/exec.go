package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// ErrMissingBinaries is wrapped by the errors of DetectBackend and of the
// exec Runner when the iptables binaries they need are not in PATH.
var ErrMissingBinaries = errors.New("iptables binaries not found in PATH")

// Backend names the binaries of one iptables variant.
type Backend struct {
	// Name is "iptables" (whatever the plain binaries are on this
	// machine), "legacy" (iptables-legacy) or "nft" (iptables-nft).
	Name string
	// Save and Restore are the IPv4 binaries, e.g. "iptables-legacy-save".
	Save, Restore string
	// Save6 and Restore6 are the IPv6 binaries, e.g. "ip6tables-legacy-save".
	Save6, Restore6 string
}

// saveBin and restoreBin return the binary for family f.
func (b Backend) saveBin(f Family) string {
	if f == IPv6 {
		return b.Save6
	}
	return b.Save
}

func (b Backend) restoreBin(f Family) string {
	if f == IPv6 {
		return b.Restore6
	}
	return b.Restore
}

// backendNamed returns the Backend of a variant: "iptables", "legacy" or
// "nft".
func backendNamed(name string) Backend {
	suffix := ""
	if name != "iptables" {
		suffix = "-" + name
	}
	return Backend{
		Name:     name,
		Save:     "iptables" + suffix + "-save",
		Restore:  "iptables" + suffix + "-restore",
		Save6:    "ip6tables" + suffix + "-save",
		Restore6: "ip6tables" + suffix + "-restore",
	}
}

// variants are the backends DetectBackend considers, in order of
// preference.
var variants = []string{"iptables", "legacy", "nft"}

// DetectBackend picks the iptables variant to use in the current network
// namespace, as Istio does: the first of plain iptables, iptables-legacy
// and iptables-nft whose save output (IPv4, then IPv6) already has rules,
// because rules split across the two kernel interfaces would be evaluated
// in an order nobody chose. When no variant has rules it returns plain
// iptables, or the first variant installed if plain iptables is not. A
// variant counts as installed when its IPv4 save and restore binaries are
// in PATH; when none is, the error wraps ErrMissingBinaries.
func DetectBackend(ctx context.Context) (Backend, error) {
	return detectBackend(ctx, exec.LookPath, func(ctx context.Context, bin string) (string, error) {
		return run(ctx, bin, nil)
	})
}

// detectBackend is DetectBackend with its OS calls passed in. save runs a
// save binary with no arguments (every table: a probe must not load the
// nat table as a side effect).
func detectBackend(ctx context.Context, lookPath func(string) (string, error),
	save func(ctx context.Context, bin string) (string, error)) (Backend, error) {
	var installed []Backend
	var missing []string
	for _, name := range variants {
		b := backendNamed(name)
		ok := true
		for _, bin := range []string{b.Save, b.Restore} {
			if _, err := lookPath(bin); err != nil {
				missing = append(missing, bin)
				ok = false
			}
		}
		if !ok {
			continue
		}
		installed = append(installed, b)
		saves := []string{b.Save}
		if _, err := lookPath(b.Save6); err == nil {
			saves = append(saves, b.Save6)
		}
		for _, bin := range saves {
			out, err := save(ctx, bin)
			if ctx.Err() != nil {
				return Backend{}, fmt.Errorf("detect iptables backend: %w", ctx.Err())
			}
			// A variant that cannot even list its tables has no rules
			// we could be mixing with: a failed probe is "no rules".
			if err == nil && hasRules(out) {
				return b, nil
			}
		}
	}
	if len(installed) == 0 {
		return Backend{}, fmt.Errorf("detect iptables backend: %w: none of %s",
			ErrMissingBinaries, strings.Join(missing, ", "))
	}
	return installed[0], nil
}

// hasRules reports whether save output holds at least one rule.
func hasRules(save string) bool {
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "-A ") {
			return true
		}
	}
	return false
}

// NewExecRunner returns a Runner that runs b's binaries in the current
// network namespace: "<save> -t nat" and "<restore> --noflush --wait",
// where --wait makes iptables-legacy wait for the xtables lock instead of
// failing when another program holds it (iptables-nft ignores it). Use ctx
// to bound the wait. A binary missing from PATH gives an error wrapping
// ErrMissingBinaries.
func NewExecRunner(b Backend) Runner { return execRunner{b: b} }

type execRunner struct{ b Backend }

var _ Runner = execRunner{}

func (e execRunner) Save(ctx context.Context, f Family) (string, error) {
	return run(ctx, e.b.saveBin(f), nil, "-t", "nat")
}

func (e execRunner) Restore(ctx context.Context, f Family, text string) error {
	_, err := run(ctx, e.b.restoreBin(f), strings.NewReader(text), "--noflush", "--wait")
	return err
}

// run runs bin with args and stdin, and returns its standard output. The
// error names the command and carries its standard error.
func run(ctx context.Context, bin string, stdin io.Reader, args ...string) (string, error) {
	if bin == "" {
		return "", fmt.Errorf("%w: no binary configured", ErrMissingBinaries)
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrMissingBinaries, bin, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if msg := oneLine(stderr.String()); msg != "" {
			return "", fmt.Errorf("%s: %w: %s", strings.Join(append([]string{bin}, args...), " "), err, msg)
		}
		return "", fmt.Errorf("%s: %w", strings.Join(append([]string{bin}, args...), " "), err)
	}
	return stdout.String(), nil
}

// oneLine joins the meaningful lines of a tool's standard error with "; ",
// leaving out its usage hint, so that an error stays on one line.
func oneLine(stderr string) string {
	var parts []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Try `") {
			continue
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, "; ")
}
