// Package config owns meshd's settings: the typed Config, the one table
// that describes every setting (name, default, type, doc), reading it from
// the environment and from --kebab-case flags (a flag wins over its
// variable), per-upstream policy overrides, and the generated docs page.
//
// It imports no other meshd package.
package config

//go:generate sh -c "go run ../cmd/meshd config docs > ../docs/configuration.md"

import (
	"errors"
	"fmt"
	"time"
)

// Config is meshd's effective configuration. Load fills it; Default
// returns it with every default.
type Config struct {
	// Listeners.
	OutboundAddr   string // MESHD_OUTBOUND_ADDR, loopback only
	InboundAddr    string // MESHD_INBOUND_ADDR
	AdminAddr      string // MESHD_ADMIN_ADDR
	HealthAddr     string // MESHD_HEALTH_ADDR
	ProxyUID       int    // MESHD_PROXY_UID
	InboundTarget  string // MESHD_INBOUND_TARGET: "original" or "localhost"
	DetectTimeout  time.Duration
	OpaquePorts    Ports
	DrainTimeout   time.Duration
	LogLevel       string // debug, info, warn or error
	AccessLog      bool
	StaticServices StaticEndpoints

	// Limits on what clients may make meshd do.
	MaxHeaderBytes      Size          // request header bytes per request
	MaxHeaderCount      int           // request header fields per request
	ReadHeaderTimeout   time.Duration // to read a request's headers
	IdleTimeout         time.Duration // a downstream keep-alive connection with no request
	MaxConnections      int           // open client connections per listener
	MaxConnsPerEndpoint int           // upstream connections per endpoint; 0 = no limit

	// Consul and registration.
	ConsulHTTPAddr   string // CONSUL_HTTP_ADDR; empty = no Consul
	ConsulHTTPToken  string // CONSUL_HTTP_TOKEN; never printed
	ConsulDatacenter string
	DiscoveryIdle    time.Duration
	ServiceName      string
	ServiceAddress   string
	AppPort          uint16 // 0 = none
	ConsulRegister   bool

	// iptables.
	InboundPorts         InboundPorts
	ExcludeInboundPorts  Ports
	ExcludeOutboundPorts Ports
	ExcludeOutboundCIDRs Prefixes
	IPv6                 string // auto, true or false

	// Defaults is the resilience policy of every upstream without an
	// override.
	Defaults Policy
	// Upstreams holds the full policy of each upstream that has at least one
	// MESHD_UPSTREAM_<NAME>_<SETTING> override, keyed by UpstreamKey(name).
	Upstreams map[string]Policy
	// Overrides records the raw override values per upstream key and
	// setting name, for display.
	Overrides map[string]map[string]string
}

// Policy is the resilience policy of one upstream. Zero durations mean
// "none" where the setting's doc says so.
type Policy struct {
	ConnectTimeout             time.Duration
	RequestTimeout             time.Duration // 0 = none
	StreamIdleTimeout          time.Duration // 0 = none
	PerTryTimeout              time.Duration // 0 = none
	TCPIdleTimeout             time.Duration // 0 = none
	RetryMax                   int
	RetryOn                    RetryOn
	RetryBackoffBase           time.Duration
	RetryBackoffMax            time.Duration
	RetryBudget                float64
	RetryBudgetMinPerSec       int
	RetryBodyMax               Size
	BreakerConsecutiveFailures int // 0 = this trigger is off
	BreakerFailureRatio        float64
	BreakerMinRequests         int
	BreakerInterval            time.Duration
	BreakerOpenTimeout         time.Duration
	BreakerHalfOpenMax         int
	EjectConsecutiveFailures   int // 0 = no ejection
	EjectBaseTime              time.Duration
	EjectMaxPercent            int
	MaxRequestsPerUpstream     int
}

// Policy returns the policy of the named upstream: its overrides on top of
// the defaults.
func (c *Config) Policy(upstream string) Policy {
	if p, ok := c.Upstreams[UpstreamKey(upstream)]; ok {
		return p
	}
	return c.Defaults
}

// Error is a bad setting: Name is the variable, Flag the flag it came from
// (empty when it came from the environment), Value what was given and
// Expected what would have been accepted.
type Error struct {
	Name     string
	Flag     string
	Value    string
	Expected string
}

// Error renders one line naming the variable, the value and the expected form.
func (e *Error) Error() string {
	name := e.Name
	if e.Flag != "" {
		name = "--" + e.Flag + " (" + e.Name + ")"
	}
	return fmt.Sprintf("%s=%q: expected %s", name, e.Value, e.Expected)
}

// ErrUsage marks command-line errors that are not about one setting: an
// unknown flag, a stray argument.
var ErrUsage = errors.New("usage")

// Default returns the configuration with every setting at its default.
func Default() *Config {
	c := &Config{Upstreams: map[string]Policy{}, Overrides: map[string]map[string]string{}}
	for _, s := range Settings() {
		if err := s.apply(c, &c.Defaults, s.Default); err != nil {
			panic(fmt.Sprintf("config: default of %s does not parse: %v", s.Name, err))
		}
	}
	return c
}
