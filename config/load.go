package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// UpstreamPrefix starts every per-upstream override variable.
const UpstreamPrefix = "MESHD_UPSTREAM_"

// UpstreamKey is the form of an upstream name used in override variables:
// upper-cased, with '-' and '.' written as '_' ("payments-v2" is
// PAYMENTS_V2).
func UpstreamKey(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == '.':
			return '_'
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		}
		return r
	}, name)
}

// rawValue is a flag.Value that keeps the text it was given.
type rawValue struct {
	set     bool
	value   string
	boolean bool
}

func (v *rawValue) String() string     { return v.value }
func (v *rawValue) Set(s string) error { v.value, v.set = s, true; return nil }
func (v *rawValue) IsBoolFlag() bool   { return v.boolean }

// Load reads the configuration from environ (KEY=VALUE strings, as
// os.Environ returns them) and from args (--kebab-case flags; a flag wins
// over its variable). It returns the configuration, the positional
// arguments that follow the flags, and the first bad setting as an *Error,
// or an error wrapping ErrUsage for a bad command line, or flag.ErrHelp.
func Load(environ, args []string) (*Config, []string, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}

	fs := flag.NewFlagSet("meshd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	flags := make([]*rawValue, len(settings))
	for i, s := range settings {
		flags[i] = &rawValue{boolean: s.isBool()}
		fs.Var(flags[i], s.Flag(), s.Doc)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}

	c := &Config{Upstreams: map[string]Policy{}, Overrides: map[string]map[string]string{}}
	for i, s := range settings {
		raw, flagName := s.Default, ""
		if v, ok := env[s.Name]; ok {
			raw = v
		}
		if flags[i].set {
			raw, flagName = flags[i].value, s.Flag()
		}
		if err := s.apply(c, &c.Defaults, raw); err != nil {
			return nil, nil, &Error{Name: s.Name, Flag: flagName, Value: raw, Expected: err.Error()}
		}
	}
	if err := c.Defaults.validate(""); err != nil {
		return nil, nil, err
	}
	if err := c.loadOverrides(env); err != nil {
		return nil, nil, err
	}
	if err := c.validate(); err != nil {
		return nil, nil, err
	}
	return c, fs.Args(), nil
}

// loadOverrides reads every MESHD_UPSTREAM_<NAME>_<SETTING> variable.
func (c *Config) loadOverrides(env map[string]string) error {
	names := make([]string, 0)
	for k := range env {
		if strings.HasPrefix(k, UpstreamPrefix) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		raw := env[name]
		key, s, ok := splitOverride(name)
		if !ok {
			return &Error{Name: name, Value: raw, Expected: "a variable of the form MESHD_UPSTREAM_<NAME>_<SETTING>, with SETTING one of " + strings.Join(upstreamSuffixes(), ", ")}
		}
		p, ok := c.Upstreams[key]
		if !ok {
			p = c.Defaults
			c.Overrides[key] = map[string]string{}
		}
		// The policy holds a slice (RetryOn.Codes); parsing replaces it
		// whole, so the copy never shares it with the defaults in a way
		// that a later write could change.
		if err := s.apply(c, &p, raw); err != nil {
			return &Error{Name: name, Value: raw, Expected: err.Error()}
		}
		c.Upstreams[key] = p
		c.Overrides[key][s.Name] = raw
	}
	for key, p := range c.Upstreams {
		if err := p.validate(key); err != nil {
			return err
		}
	}
	return nil
}

// splitOverride splits MESHD_UPSTREAM_<NAME>_<SETTING> into the upstream
// key and the setting, matching the longest known setting suffix.
func splitOverride(name string) (string, Setting, bool) {
	rest := strings.TrimPrefix(name, UpstreamPrefix)
	var best Setting
	found := false
	for _, s := range settings {
		suf := "_" + s.Suffix()
		if s.PerUpstream && strings.HasSuffix(rest, suf) && len(rest) > len(suf) &&
			(!found || len(s.Suffix()) > len(best.Suffix())) {
			best, found = s, true
		}
	}
	if !found {
		return "", Setting{}, false
	}
	return strings.TrimSuffix(rest, "_"+best.Suffix()), best, true
}

func upstreamSuffixes() []string {
	var out []string
	for _, s := range settings {
		if s.PerUpstream {
			out = append(out, s.Suffix())
		}
	}
	return out
}

// validate checks what a single setting cannot: relations between the
// settings of one policy. upstream is the override key, empty for defaults.
func (p Policy) validate(upstream string) error {
	if p.RetryBackoffMax < p.RetryBackoffBase {
		name := "MESHD_RETRY_BACKOFF_MAX"
		if upstream != "" {
			name = UpstreamPrefix + upstream + "_RETRY_BACKOFF_MAX"
		}
		return &Error{Name: name, Value: formatDuration(p.RetryBackoffMax),
			Expected: "a duration of at least MESHD_RETRY_BACKOFF_BASE (" + formatDuration(p.RetryBackoffBase) + ")"}
	}
	return nil
}

// validate checks relations between global settings.
func (c *Config) validate() error {
	if c.ConsulRegister {
		if c.ServiceName == "" {
			return &Error{Name: "MESHD_SERVICE_NAME", Value: "", Expected: "a service name when MESHD_CONSUL_REGISTER=true"}
		}
		if c.AppPort == 0 {
			return &Error{Name: "MESHD_APP_PORT", Value: "0", Expected: "the app's port when MESHD_CONSUL_REGISTER=true"}
		}
	}
	return nil
}

// Unknown returns the MESHD_ variables in environ that are no setting and
// no per-upstream override: most likely typos, worth a warning.
func Unknown(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "MESHD_") || strings.HasPrefix(k, UpstreamPrefix) || k == "MESHD_E2E" {
			continue
		}
		if _, ok := Lookup(k); !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Values returns every setting's effective value in its variable's syntax,
// keyed by variable name; secrets that are set read "<redacted>".
func (c *Config) Values() map[string]string {
	out := make(map[string]string, len(settings))
	for _, s := range settings {
		v := s.format(c, &c.Defaults)
		if s.Secret && v != "" {
			v = "<redacted>"
		}
		out[s.Name] = v
	}
	return out
}

// Effective is the effective configuration as a JSON-friendly document:
// every setting, and the overrides of each upstream that has some.
type Effective struct {
	Settings  map[string]string            `json:"settings"`
	Upstreams map[string]map[string]string `json:"upstreams"`
}

// Effective returns the effective configuration, secrets redacted.
func (c *Config) Effective() Effective {
	e := Effective{Settings: c.Values(), Upstreams: map[string]map[string]string{}}
	for key, p := range c.Upstreams {
		m := map[string]string{}
		for name := range c.Overrides[key] {
			s, _ := Lookup(name)
			m[name] = s.format(c, &p)
		}
		e.Upstreams[key] = m
	}
	return e
}
