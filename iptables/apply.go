package iptables

import (
	"context"
	"fmt"
)

// Runner is the seam between the rules and the OS. NewExecRunner runs the
// iptables binaries; tests use a recording fake.
type Runner interface {
	// Save returns the nat table of family f as "iptables-save -t nat"
	// prints it.
	Save(ctx context.Context, f Family) (string, error)
	// Restore feeds text to "iptables-restore --noflush" for family f: the
	// text is applied atomically, and tables and chains it does not name
	// are left alone.
	Restore(ctx context.Context, f Family, text string) error
}

// families returns the families to work on: IPv4, and IPv6 when asked for.
func families(ipv6 bool) []Family {
	if ipv6 {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

// Apply installs meshd's rules for o through r: IPv4, and IPv6 when
// o.IPv6 is set (ip6tables is not touched otherwise). For each family it
// reads the nat table, then makes one Restore call that (re)declares
// meshd's chains, which empties them, fills them, and adds the jumps from
// PREROUTING and OUTPUT unless an identical jump is already there. Applying
// the same Options twice therefore leaves the table exactly as it was, and
// applying changed Options replaces the chains' rules in place.
//
// Both families are read and prepared before either is changed. If the
// IPv6 restore fails after the IPv4 one succeeded, the IPv4 rules stay;
// running Apply again is safe.
func Apply(ctx context.Context, o Options, r Runner) error {
	if err := o.Validate(); err != nil {
		return err
	}
	fams := families(o.IPv6)
	texts := make([]string, len(fams))
	for i, f := range fams {
		st, err := readState(ctx, r, f)
		if err != nil {
			return fmt.Errorf("apply %s rules: %w", f, err)
		}
		texts[i] = render(o, f, &st)
	}
	for i, f := range fams {
		if err := r.Restore(ctx, f, texts[i]); err != nil {
			return fmt.Errorf("apply %s rules: %w", f, err)
		}
	}
	return nil
}

// Clean removes everything Apply installed through r: every rule outside
// meshd's chains that jumps into a MESHD_ chain, then every MESHD_ chain.
// It works on IPv4, and on IPv6 too when ipv6 is set. Each family takes at
// most one Restore call, none when there is nothing to remove, so Clean on
// a namespace without meshd's rules succeeds without changing anything.
func Clean(ctx context.Context, r Runner, ipv6 bool) error {
	for _, f := range families(ipv6) {
		st, err := readState(ctx, r, f)
		if err != nil {
			return fmt.Errorf("clean %s rules: %w", f, err)
		}
		text := cleanText(st)
		if text == "" {
			continue
		}
		if err := r.Restore(ctx, f, text); err != nil {
			return fmt.Errorf("clean %s rules: %w", f, err)
		}
	}
	return nil
}

func readState(ctx context.Context, r Runner, f Family) (natState, error) {
	out, err := r.Save(ctx, f)
	if err != nil {
		return natState{}, err
	}
	st, err := parseSave(out)
	if err != nil {
		return natState{}, fmt.Errorf("parse save output: %w", err)
	}
	return st, nil
}
