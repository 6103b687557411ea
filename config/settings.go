package config

import (
	"strconv"
	"strings"
	"time"
)

// Setting describes one setting: its environment variable, default, type
// and one-line doc. The table returned by Settings is the single source for
// parsing, flags, the effective-config output and docs/configuration.md.
type Setting struct {
	Name        string // environment variable
	Default     string // default, in the variable's own syntax
	Type        string // value syntax, for the docs
	Doc         string // one line
	Section     string // docs section
	PerUpstream bool   // may be overridden as MESHD_UPSTREAM_<NAME>_<SETTING>
	Secret      bool   // never printed

	apply  func(c *Config, p *Policy, raw string) error
	format func(c *Config, p *Policy) string
}

// Flag is the setting's command-line flag, without dashes:
// MESHD_ADMIN_ADDR is admin-addr, CONSUL_HTTP_ADDR is consul-http-addr.
func (s Setting) Flag() string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.Name, "MESHD_")), "_", "-")
}

// Suffix is the part of the name used in per-upstream overrides:
// MESHD_REQUEST_TIMEOUT is REQUEST_TIMEOUT.
func (s Setting) Suffix() string { return strings.TrimPrefix(s.Name, "MESHD_") }

func (s Setting) isBool() bool { return s.Type == "bool" }

// Sections of the docs page, in order.
const (
	SectionListeners  = "Listeners and routing"
	SectionDiscovery  = "Discovery"
	SectionResilience = "Resilience policy (overridable per upstream)"
	SectionLifecycle  = "Lifecycle and logs"
	SectionLimits     = "Limits"
	SectionIptables   = "iptables (meshd iptables apply|clean|print)"
)

func onConfig[T any](s Setting, parse func(string) (T, error), format func(T) string, field func(*Config) *T) Setting {
	s.apply = func(c *Config, _ *Policy, raw string) error {
		v, err := parse(raw)
		if err != nil {
			return err
		}
		*field(c) = v
		return nil
	}
	s.format = func(c *Config, _ *Policy) string { return format(*field(c)) }
	return s
}

func onPolicy[T any](s Setting, parse func(string) (T, error), format func(T) string, field func(*Policy) *T) Setting {
	s.PerUpstream = true
	s.Section = SectionResilience
	s.apply = func(_ *Config, p *Policy, raw string) error {
		v, err := parse(raw)
		if err != nil {
			return err
		}
		*field(p) = v
		return nil
	}
	s.format = func(_ *Config, p *Policy) string { return format(*field(p)) }
	return s
}

func str[T interface{ String() string }](v T) string { return v.String() }
func same(s string) string                           { return s }
func portString(p uint16) string                     { return strconv.Itoa(int(p)) }

var settings = buildSettings()

// Settings returns the table of every setting, in docs order.
func Settings() []Setting { return settings }

// Lookup returns the setting with that variable name.
func Lookup(name string) (Setting, bool) {
	for _, s := range settings {
		if s.Name == name {
			return s, true
		}
	}
	return Setting{}, false
}

func buildSettings() []Setting {
	L, D, R, C, I := SectionListeners, SectionDiscovery, SectionResilience, SectionLifecycle, SectionIptables
	_ = R
	dur := formatDuration
	return []Setting{
		// Listeners and routing.
		onConfig(Setting{Name: "MESHD_OUTBOUND_ADDR", Default: "127.0.0.1:15001", Type: "loopback host:port", Section: L,
			Doc: "Outbound listener: redirected outbound traffic and explicit HTTP-proxy traffic. Loopback only."},
			parseLoopbackAddr, same, func(c *Config) *string { return &c.OutboundAddr }),
		onConfig(Setting{Name: "MESHD_INBOUND_ADDR", Default: ":15006", Type: "host:port", Section: L,
			Doc: "Inbound listener for redirected inbound traffic."},
			parseAddr, same, func(c *Config) *string { return &c.InboundAddr }),
		onConfig(Setting{Name: "MESHD_ADMIN_ADDR", Default: "127.0.0.1:15000", Type: "host:port", Section: L,
			Doc: "Admin API (/breakers, /endpoints, /config, /metrics, /shutdown, pprof). Keep it on loopback."},
			parseAddr, same, func(c *Config) *string { return &c.AdminAddr }),
		onConfig(Setting{Name: "MESHD_HEALTH_ADDR", Default: ":15021", Type: "host:port", Section: L,
			Doc: "Health listener: /healthz and /ready only, for kubelet probes."},
			parseAddr, same, func(c *Config) *string { return &c.HealthAddr }),
		onConfig(Setting{Name: "MESHD_PROXY_UID", Default: "1337", Type: "uid", Section: L,
			Doc: "The uid meshd runs as; the iptables rules never redirect this uid's traffic."},
			parseInt(0, 1<<31-2), strconv.Itoa, func(c *Config) *int { return &c.ProxyUID }),
		onConfig(Setting{Name: "MESHD_INBOUND_TARGET", Default: "original", Type: "original|localhost", Section: L,
			Doc: "Where inbound traffic is delivered: its original destination (the pod's address and port) or 127.0.0.1:<port>."},
			parseEnum("original", "localhost"), same, func(c *Config) *string { return &c.InboundTarget }),
		onConfig(Setting{Name: "MESHD_DETECT_TIMEOUT", Default: "500ms", Type: "duration", Section: L,
			Doc: "How long protocol detection waits for the client's first bytes before proxying as opaque TCP."},
			parseDuration(0, false), dur, func(c *Config) *time.Duration { return &c.DetectTimeout }),
		onConfig(Setting{Name: "MESHD_OPAQUE_PORTS", Default: "25,587,3306,4222,5432,6379,9300,11211", Type: "port list", Section: L,
			Doc: "Destination ports proxied as opaque TCP without protocol detection (server-first protocols)."},
			parsePorts, str[Ports], func(c *Config) *Ports { return &c.OpaquePorts }),

		// Discovery.
		onConfig(Setting{Name: "MESHD_STATIC_ENDPOINTS", Default: "", Type: "name=host:port,...;...", Section: D,
			Doc: "Fixed endpoints per service; a name listed here is always served from this list."},
			ParseStaticEndpoints, str[StaticEndpoints], func(c *Config) *StaticEndpoints { return &c.StaticServices }),
		onConfig(Setting{Name: "CONSUL_HTTP_ADDR", Default: "", Type: "host:port or URL", Section: D,
			Doc: "Consul's own variable: the local agent's HTTP address. Empty = no Consul (static endpoints only)."},
			parseString, same, func(c *Config) *string { return &c.ConsulHTTPAddr }),
		onConfig(Setting{Name: "CONSUL_HTTP_TOKEN", Default: "", Type: "string", Section: D, Secret: true,
			Doc: "Consul's own variable: the ACL token. Never printed; prefer the variable to the flag."},
			parseString, same, func(c *Config) *string { return &c.ConsulHTTPToken }),
		onConfig(Setting{Name: "MESHD_CONSUL_DATACENTER", Default: "", Type: "string", Section: D,
			Doc: "Datacenter to query; empty = the agent's own."},
			parseName(true), same, func(c *Config) *string { return &c.ConsulDatacenter }),
		onConfig(Setting{Name: "MESHD_DISCOVERY_IDLE", Default: "10m", Type: "duration", Section: D,
			Doc: "A watched service name unused for this long stops being watched."},
			parseDuration(0, false), dur, func(c *Config) *time.Duration { return &c.DiscoveryIdle }),
		onConfig(Setting{Name: "MESHD_SERVICE_NAME", Default: "", Type: "service name", Section: D,
			Doc: "Name of the local app's service, for registration and logs."},
			parseName(true), same, func(c *Config) *string { return &c.ServiceName }),
		onConfig(Setting{Name: "MESHD_SERVICE_ADDRESS", Default: "", Type: "IP address", Section: D,
			Doc: "Address registered in Consul; empty = the first non-loopback address."},
			parseOptionalIP, same, func(c *Config) *string { return &c.ServiceAddress }),
		onConfig(Setting{Name: "MESHD_APP_PORT", Default: "0", Type: "port", Section: D,
			Doc: "Port of the local app, registered in Consul and health-checked; 0 = none."},
			parseOptionalPort, portString, func(c *Config) *uint16 { return &c.AppPort }),
		onConfig(Setting{Name: "MESHD_CONSUL_REGISTER", Default: "false", Type: "bool", Section: D,
			Doc: "Register the local app with the local Consul agent at start and deregister it on shutdown."},
			parseBool, strconv.FormatBool, func(c *Config) *bool { return &c.ConsulRegister }),

		// Resilience policy.
		onPolicy(Setting{Name: "MESHD_CONNECT_TIMEOUT", Default: "1s", Type: "duration",
			Doc: "TCP connect to one endpoint."},
			parseDuration(0, false), dur, func(p *Policy) *time.Duration { return &p.ConnectTimeout }),
		onPolicy(Setting{Name: "MESHD_REQUEST_TIMEOUT", Default: "15s", Type: "duration",
			Doc: "Until the response headers arrive, all attempts and backoff included; 0 = none."},
			parseDuration(0, true), dur, func(p *Policy) *time.Duration { return &p.RequestTimeout }),
		onPolicy(Setting{Name: "MESHD_STREAM_IDLE_TIMEOUT", Default: "5m", Type: "duration",
			Doc: "An HTTP body, gRPC stream or WebSocket with no bytes either way for this long is cut; 0 = none."},
			parseDuration(0, true), dur, func(p *Policy) *time.Duration { return &p.StreamIdleTimeout }),
		onPolicy(Setting{Name: "MESHD_PER_TRY_TIMEOUT", Default: "0", Type: "duration",
			Doc: "One attempt, until its response headers; 0 = none."},
			parseDuration(0, true), dur, func(p *Policy) *time.Duration { return &p.PerTryTimeout }),
		onPolicy(Setting{Name: "MESHD_TCP_IDLE_TIMEOUT", Default: "1h", Type: "duration",
			Doc: "An opaque TCP connection with no bytes either way for this long is closed; 0 = none."},
			parseDuration(0, true), dur, func(p *Policy) *time.Duration { return &p.TCPIdleTimeout }),
		onPolicy(Setting{Name: "MESHD_RETRY_MAX", Default: "2", Type: "integer",
			Doc: "Retries after the first attempt."},
			parseInt(0, 100), strconv.Itoa, func(p *Policy) *int { return &p.RetryMax }),
		onPolicy(Setting{Name: "MESHD_RETRY_ON", Default: "connect-failure,refused-stream,unavailable,gateway-error", Type: "token list",
			Doc: "When to retry: connect-failure, reset, 5xx, gateway-error, retriable-4xx, refused-stream, unavailable, cancelled, deadline-exceeded, resource-exhausted, or a status code."},
			ParseRetryOn, str[RetryOn], func(p *Policy) *RetryOn { return &p.RetryOn }),
		onPolicy(Setting{Name: "MESHD_RETRY_BACKOFF_BASE", Default: "25ms", Type: "duration",
			Doc: "First backoff interval; exponential with full jitter."},
			parseDuration(0, false), dur, func(p *Policy) *time.Duration { return &p.RetryBackoffBase }),
		onPolicy(Setting{Name: "MESHD_RETRY_BACKOFF_MAX", Default: "250ms", Type: "duration",
			Doc: "Largest backoff interval; at least MESHD_RETRY_BACKOFF_BASE."},
			parseDuration(0, false), dur, func(p *Policy) *time.Duration { return &p.RetryBackoffMax }),
		onPolicy(Setting{Name: "MESHD_RETRY_BUDGET", Default: "0.2", Type: "ratio",
			Doc: "Retries may add at most this ratio of requests, over a 10 s window."},
			parseFloat(0, 1, false), formatFloat, func(p *Policy) *float64 { return &p.RetryBudget }),
		onPolicy(Setting{Name: "MESHD_RETRY_BUDGET_MIN_PER_SEC", Default: "10", Type: "integer",
			Doc: "Retries allowed per second whatever the budget ratio says."},
			parseInt(0, 1_000_000), strconv.Itoa, func(p *Policy) *int { return &p.RetryBudgetMinPerSec }),
		onPolicy(Setting{Name: "MESHD_RETRY_BODY_MAX", Default: "64KiB", Type: "size",
			Doc: "A request whose body is larger than this is retried only on connect failure."},
			parseSize, str[Size], func(p *Policy) *Size { return &p.RetryBodyMax }),
		onPolicy(Setting{Name: "MESHD_BREAKER_CONSECUTIVE_FAILURES", Default: "5", Type: "integer",
			Doc: "The service breaker trips after this many failed requests in a row; 0 = this trigger is off."},
			parseInt(0, 1_000_000), strconv.Itoa, func(p *Policy) *int { return &p.BreakerConsecutiveFailures }),
		onPolicy(Setting{Name: "MESHD_BREAKER_FAILURE_RATIO", Default: "0.5", Type: "ratio",
			Doc: "... or at this failure ratio over at least MESHD_BREAKER_MIN_REQUESTS requests."},
			parseFloat(0, 1, true), formatFloat, func(p *Policy) *float64 { return &p.BreakerFailureRatio }),
		onPolicy(Setting{Name: "MESHD_BREAKER_MIN_REQUESTS", Default: "20", Type: "integer",
			Doc: "Requests in the window before the failure ratio counts."},
			parseInt(1, 1_000_000), strconv.Itoa, func(p *Policy) *int { return &p.BreakerMinRequests }),
		onPolicy(Setting{Name: "MESHD_BREAKER_INTERVAL", Default: "10s", Type: "duration",
			Doc: "Closed-state counting window."},
			parseDuration(0, false), dur, func(p *Policy) *time.Duration { return &p.BreakerInterval }),
		onPolicy(Setting{Name: "MESHD_BREAKER_OPEN_TIMEOUT", Default: "15s", Type: "duration",
			Doc: "How long the breaker stays open before it lets probes through (half-open)."},
			parseDuration(0, false), dur, func(p *Policy) *time.Duration { return &p.BreakerOpenTimeout }),
		onPolicy(Setting{Name: "MESHD_BREAKER_HALF_OPEN_MAX", Default: "1", Type: "integer",
			Doc: "Probe requests allowed while half-open."},
			parseInt(1, 1_000_000), strconv.Itoa, func(p *Policy) *int { return &p.BreakerHalfOpenMax }),
		onPolicy(Setting{Name: "MESHD_EJECT_CONSECUTIVE_FAILURES", Default: "5", Type: "integer",
			Doc: "Eject one endpoint after this many failed attempts in a row; 0 = never eject."},
			parseInt(0, 1_000_000), strconv.Itoa, func(p *Policy) *int { return &p.EjectConsecutiveFailures }),
		onPolicy(Setting{Name: "MESHD_EJECT_BASE_TIME", Default: "30s", Type: "duration",
			Doc: "An ejection lasts this times the endpoint's number of ejections so far, at most 5 minutes."},
			parseDuration(0, false), dur, func(p *Policy) *time.Duration { return &p.EjectBaseTime }),
		onPolicy(Setting{Name: "MESHD_EJECT_MAX_PERCENT", Default: "50", Type: "percent",
			Doc: "Never eject more than this share of a service's endpoints at once."},
			parseInt(0, 100), strconv.Itoa, func(p *Policy) *int { return &p.EjectMaxPercent }),
		onPolicy(Setting{Name: "MESHD_MAX_REQUESTS_PER_UPSTREAM", Default: "1024", Type: "integer",
			Doc: "Concurrent requests per upstream; more are refused at once with 503 overloaded."},
			parseInt(1, 1_000_000_000), strconv.Itoa, func(p *Policy) *int { return &p.MaxRequestsPerUpstream }),

		// Lifecycle and logs.
		onConfig(Setting{Name: "MESHD_DRAIN_TIMEOUT", Default: "5s", Type: "duration", Section: C,
			Doc: "On SIGTERM, exit at the latest after this long (earlier once idle for 1 s); 0 = exit at once."},
			parseDuration(0, true), dur, func(c *Config) *time.Duration { return &c.DrainTimeout }),
		onConfig(Setting{Name: "MESHD_LOG_LEVEL", Default: "info", Type: "debug|info|warn|error", Section: C,
			Doc: "Level of the JSON logs on stderr."},
			parseEnum("debug", "info", "warn", "error"), same, func(c *Config) *string { return &c.LogLevel }),
		onConfig(Setting{Name: "MESHD_ACCESS_LOG", Default: "false", Type: "bool", Section: C,
			Doc: "Log one line per request and per TCP connection."},
			parseBool, strconv.FormatBool, func(c *Config) *bool { return &c.AccessLog }),

		// Limits.
		onConfig(Setting{Name: "MESHD_MAX_HEADER_BYTES", Default: "64KiB", Type: "size", Section: SectionLimits,
			Doc: "Request header bytes accepted per request; more is answered 431."},
			parseSizeRange(1<<10, 16<<20), str[Size], func(c *Config) *Size { return &c.MaxHeaderBytes }),
		onConfig(Setting{Name: "MESHD_MAX_HEADER_COUNT", Default: "100", Type: "integer", Section: SectionLimits,
			Doc: "Request header fields accepted per request; more is answered 431."},
			parseInt(1, 10000), strconv.Itoa, func(c *Config) *int { return &c.MaxHeaderCount }),
		onConfig(Setting{Name: "MESHD_READ_HEADER_TIMEOUT", Default: "10s", Type: "duration", Section: SectionLimits,
			Doc: "Time a client has to send a request's headers (against slowloris)."},
			parseDuration(0, false), dur, func(c *Config) *time.Duration { return &c.ReadHeaderTimeout }),
		onConfig(Setting{Name: "MESHD_IDLE_TIMEOUT", Default: "5m", Type: "duration", Section: SectionLimits,
			Doc: "A client's keep-alive connection with no request for this long is closed."},
			parseDuration(0, false), dur, func(c *Config) *time.Duration { return &c.IdleTimeout }),
		onConfig(Setting{Name: "MESHD_MAX_CONNECTIONS", Default: "10000", Type: "integer", Section: SectionLimits,
			Doc: "Open client connections per listener; one more is closed at once."},
			parseInt(1, 10_000_000), strconv.Itoa, func(c *Config) *int { return &c.MaxConnections }),
		onConfig(Setting{Name: "MESHD_MAX_CONNECTIONS_PER_ENDPOINT", Default: "1024", Type: "integer", Section: SectionLimits,
			Doc: "HTTP/1.1 connections meshd opens to one endpoint; requests beyond wait for one; 0 = no limit."},
			parseInt(0, 10_000_000), strconv.Itoa, func(c *Config) *int { return &c.MaxConnsPerEndpoint }),

		// iptables.
		onConfig(Setting{Name: "MESHD_INBOUND_PORTS", Default: "*", Type: "* or port list", Section: I,
			Doc: "Destination ports redirected to the inbound listener; * = every port."},
			parseInboundPorts, str[InboundPorts], func(c *Config) *InboundPorts { return &c.InboundPorts }),
		onConfig(Setting{Name: "MESHD_EXCLUDE_INBOUND_PORTS", Default: "15000,15001,15006,15021", Type: "port list", Section: I,
			Doc: "Destination ports never redirected inbound."},
			parsePorts, str[Ports], func(c *Config) *Ports { return &c.ExcludeInboundPorts }),
		onConfig(Setting{Name: "MESHD_EXCLUDE_OUTBOUND_PORTS", Default: "", Type: "port list", Section: I,
			Doc: "Destination ports never redirected outbound."},
			parsePorts, str[Ports], func(c *Config) *Ports { return &c.ExcludeOutboundPorts }),
		onConfig(Setting{Name: "MESHD_EXCLUDE_OUTBOUND_CIDRS", Default: "", Type: "CIDR list", Section: I,
			Doc: "Destinations never redirected outbound."},
			parsePrefixes, str[Prefixes], func(c *Config) *Prefixes { return &c.ExcludeOutboundCIDRs }),
		onConfig(Setting{Name: "MESHD_IPV6", Default: "auto", Type: "auto|true|false", Section: I,
			Doc: "Also install ip6tables rules; auto = when the network namespace has IPv6."},
			parseEnum("auto", "true", "false"), same, func(c *Config) *string { return &c.IPv6 }),
	}
}
