package config

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, env []string, args ...string) (*Config, error) {
	t.Helper()
	c, _, err := Load(env, args)
	return c, err
}

func TestDefaultsMatchContract(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("Load with no input differs from Default()")
	}
	p := c.Defaults
	checks := []struct {
		name      string
		got, want any
	}{
		{"outbound", c.OutboundAddr, "127.0.0.1:15001"},
		{"inbound", c.InboundAddr, ":15006"},
		{"admin", c.AdminAddr, "127.0.0.1:15000"},
		{"health", c.HealthAddr, ":15021"},
		{"uid", c.ProxyUID, 1337},
		{"target", c.InboundTarget, "original"},
		{"detect", c.DetectTimeout, 500 * time.Millisecond},
		{"opaque", c.OpaquePorts, Ports{25, 587, 3306, 4222, 5432, 6379, 9300, 11211}},
		{"drain", c.DrainTimeout, 5 * time.Second},
		{"loglevel", c.LogLevel, "info"},
		{"idle", c.DiscoveryIdle, 10 * time.Minute},
		{"register", c.ConsulRegister, false},
		{"inboundports", c.InboundPorts, InboundPorts{All: true}},
		{"exclude-in", c.ExcludeInboundPorts, Ports{15000, 15001, 15006, 15021}},
		{"ipv6", c.IPv6, "auto"},
		{"connect", p.ConnectTimeout, time.Second},
		{"request", p.RequestTimeout, 15 * time.Second},
		{"stream-idle", p.StreamIdleTimeout, 5 * time.Minute},
		{"per-try", p.PerTryTimeout, time.Duration(0)},
		{"tcp-idle", p.TCPIdleTimeout, time.Hour},
		{"retry-max", p.RetryMax, 2},
		{"retry-on", p.RetryOn, RetryOn{Conditions: RetryConnectFailure | RetryRefusedStream | RetryUnavailable | RetryGatewayError}},
		{"backoff-base", p.RetryBackoffBase, 25 * time.Millisecond},
		{"backoff-max", p.RetryBackoffMax, 250 * time.Millisecond},
		{"budget", p.RetryBudget, 0.2},
		{"budget-min", p.RetryBudgetMinPerSec, 10},
		{"body-max", p.RetryBodyMax, Size(64 << 10)},
		{"breaker-consec", p.BreakerConsecutiveFailures, 5},
		{"breaker-ratio", p.BreakerFailureRatio, 0.5},
		{"breaker-min", p.BreakerMinRequests, 20},
		{"breaker-interval", p.BreakerInterval, 10 * time.Second},
		{"breaker-open", p.BreakerOpenTimeout, 15 * time.Second},
		{"half-open", p.BreakerHalfOpenMax, 1},
		{"eject-consec", p.EjectConsecutiveFailures, 5},
		{"eject-base", p.EjectBaseTime, 30 * time.Second},
		{"eject-max", p.EjectMaxPercent, 50},
		{"max-requests", p.MaxRequestsPerUpstream, 1024},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
}

// TestEverySetting gives each setting one good and one bad value, through
// the environment and through its flag.
func TestEverySetting(t *testing.T) {
	cases := map[string]struct {
		good  string
		check func(c *Config) bool
		bad   string
	}{
		"MESHD_OUTBOUND_ADDR":  {"[::1]:16001", func(c *Config) bool { return c.OutboundAddr == "[::1]:16001" }, "0.0.0.0:15001"},
		"MESHD_INBOUND_ADDR":   {"0.0.0.0:16006", func(c *Config) bool { return c.InboundAddr == "0.0.0.0:16006" }, ":0"},
		"MESHD_ADMIN_ADDR":     {"localhost:9901", func(c *Config) bool { return c.AdminAddr == "localhost:9901" }, "localhost"},
		"MESHD_HEALTH_ADDR":    {":8081", func(c *Config) bool { return c.HealthAddr == ":8081" }, ":70000"},
		"MESHD_PROXY_UID":      {"101", func(c *Config) bool { return c.ProxyUID == 101 }, "-1"},
		"MESHD_INBOUND_TARGET": {"localhost", func(c *Config) bool { return c.InboundTarget == "localhost" }, "pod"},
		"MESHD_DETECT_TIMEOUT": {"1s", func(c *Config) bool { return c.DetectTimeout == time.Second }, "0"},
		"MESHD_OPAQUE_PORTS":   {"6379, 25,25", func(c *Config) bool { return reflect.DeepEqual(c.OpaquePorts, Ports{25, 6379}) }, "25,smtp"},
		"MESHD_STATIC_ENDPOINTS": {"payments=10.0.0.1:80,10.0.0.2:80;ledger=[::1]:9000", func(c *Config) bool {
			return len(c.StaticServices) == 2 && c.StaticServices[1].Endpoints[0] == "[::1]:9000"
		}, "payments=10.0.0.1"},
		"CONSUL_HTTP_ADDR":                   {"127.0.0.1:8500", func(c *Config) bool { return c.ConsulHTTPAddr == "127.0.0.1:8500" }, ""},
		"CONSUL_HTTP_TOKEN":                  {"s3cr3t", func(c *Config) bool { return c.ConsulHTTPToken == "s3cr3t" }, ""},
		"MESHD_CONSUL_DATACENTER":            {"dc2", func(c *Config) bool { return c.ConsulDatacenter == "dc2" }, "dc 2"},
		"MESHD_DISCOVERY_IDLE":               {"30s", func(c *Config) bool { return c.DiscoveryIdle == 30*time.Second }, "-1s"},
		"MESHD_SERVICE_NAME":                 {"web", func(c *Config) bool { return c.ServiceName == "web" }, "web/1"},
		"MESHD_SERVICE_ADDRESS":              {"fd00::5", func(c *Config) bool { return c.ServiceAddress == "fd00::5" }, "pod.local"},
		"MESHD_APP_PORT":                     {"8080", func(c *Config) bool { return c.AppPort == 8080 }, "65536"},
		"MESHD_CONSUL_REGISTER":              {"false", func(c *Config) bool { return !c.ConsulRegister }, "yes"},
		"MESHD_CONNECT_TIMEOUT":              {"250ms", func(c *Config) bool { return c.Defaults.ConnectTimeout == 250*time.Millisecond }, "abc"},
		"MESHD_REQUEST_TIMEOUT":              {"0", func(c *Config) bool { return c.Defaults.RequestTimeout == 0 }, "15"},
		"MESHD_STREAM_IDLE_TIMEOUT":          {"1m", func(c *Config) bool { return c.Defaults.StreamIdleTimeout == time.Minute }, "1 minute"},
		"MESHD_PER_TRY_TIMEOUT":              {"2s", func(c *Config) bool { return c.Defaults.PerTryTimeout == 2*time.Second }, "-2s"},
		"MESHD_TCP_IDLE_TIMEOUT":             {"0", func(c *Config) bool { return c.Defaults.TCPIdleTimeout == 0 }, "forever"},
		"MESHD_RETRY_MAX":                    {"0", func(c *Config) bool { return c.Defaults.RetryMax == 0 }, "101"},
		"MESHD_RETRY_ON":                     {"5xx,409, reset", func(c *Config) bool { return c.Defaults.RetryOn.String() == "reset,5xx,409" }, "5xx,teapot"},
		"MESHD_RETRY_BACKOFF_BASE":           {"10ms", func(c *Config) bool { return c.Defaults.RetryBackoffBase == 10*time.Millisecond }, "0"},
		"MESHD_RETRY_BACKOFF_MAX":            {"1s", func(c *Config) bool { return c.Defaults.RetryBackoffMax == time.Second }, "fast"},
		"MESHD_RETRY_BUDGET":                 {"0", func(c *Config) bool { return c.Defaults.RetryBudget == 0 }, "1.5"},
		"MESHD_RETRY_BUDGET_MIN_PER_SEC":     {"3", func(c *Config) bool { return c.Defaults.RetryBudgetMinPerSec == 3 }, "0.5"},
		"MESHD_RETRY_BODY_MAX":               {"1MiB", func(c *Config) bool { return c.Defaults.RetryBodyMax == 1<<20 }, "1 megabyte"},
		"MESHD_BREAKER_CONSECUTIVE_FAILURES": {"0", func(c *Config) bool { return c.Defaults.BreakerConsecutiveFailures == 0 }, "-5"},
		"MESHD_BREAKER_FAILURE_RATIO":        {"1", func(c *Config) bool { return c.Defaults.BreakerFailureRatio == 1 }, "0"},
		"MESHD_BREAKER_MIN_REQUESTS":         {"1", func(c *Config) bool { return c.Defaults.BreakerMinRequests == 1 }, "0"},
		"MESHD_BREAKER_INTERVAL":             {"1m", func(c *Config) bool { return c.Defaults.BreakerInterval == time.Minute }, "0s"},
		"MESHD_BREAKER_OPEN_TIMEOUT":         {"500ms", func(c *Config) bool { return c.Defaults.BreakerOpenTimeout == 500*time.Millisecond }, "never"},
		"MESHD_BREAKER_HALF_OPEN_MAX":        {"3", func(c *Config) bool { return c.Defaults.BreakerHalfOpenMax == 3 }, "0"},
		"MESHD_EJECT_CONSECUTIVE_FAILURES":   {"3", func(c *Config) bool { return c.Defaults.EjectConsecutiveFailures == 3 }, "three"},
		"MESHD_EJECT_BASE_TIME":              {"10s", func(c *Config) bool { return c.Defaults.EjectBaseTime == 10*time.Second }, "0"},
		"MESHD_EJECT_MAX_PERCENT":            {"100", func(c *Config) bool { return c.Defaults.EjectMaxPercent == 100 }, "150"},
		"MESHD_MAX_REQUESTS_PER_UPSTREAM":    {"10", func(c *Config) bool { return c.Defaults.MaxRequestsPerUpstream == 10 }, "0"},
		"MESHD_DRAIN_TIMEOUT":                {"0", func(c *Config) bool { return c.DrainTimeout == 0 }, "5"},
		"MESHD_LOG_LEVEL":                    {"DEBUG", func(c *Config) bool { return c.LogLevel == "debug" }, "trace"},
		"MESHD_ACCESS_LOG":                   {"true", func(c *Config) bool { return c.AccessLog }, "on"},
		"MESHD_INBOUND_PORTS":                {"8080,9090", func(c *Config) bool { return !c.InboundPorts.All && c.InboundPorts.Ports.String() == "8080,9090" }, ""},
		"MESHD_EXCLUDE_INBOUND_PORTS":        {"22", func(c *Config) bool { return c.ExcludeInboundPorts.String() == "22" }, "22-25"},
		"MESHD_EXCLUDE_OUTBOUND_PORTS":       {"5432", func(c *Config) bool { return c.ExcludeOutboundPorts.Contains(5432) }, "0"},
		"MESHD_EXCLUDE_OUTBOUND_CIDRS": {"10.1.2.3/8, 169.254.169.254, fd00::/8", func(c *Config) bool {
			return c.ExcludeOutboundCIDRs.String() == "10.0.0.0/8,169.254.169.254/32,fd00::/8"
		}, "10.0.0.0/33"},
		"MESHD_IPV6":                         {"false", func(c *Config) bool { return c.IPv6 == "false" }, "maybe"},
		"MESHD_MAX_HEADER_BYTES":             {"8KiB", func(c *Config) bool { return c.MaxHeaderBytes == 8<<10 }, "100"},
		"MESHD_MAX_HEADER_COUNT":             {"50", func(c *Config) bool { return c.MaxHeaderCount == 50 }, "0"},
		"MESHD_READ_HEADER_TIMEOUT":          {"3s", func(c *Config) bool { return c.ReadHeaderTimeout == 3*time.Second }, "0"},
		"MESHD_IDLE_TIMEOUT":                 {"1m", func(c *Config) bool { return c.IdleTimeout == time.Minute }, "never"},
		"MESHD_MAX_CONNECTIONS":              {"10", func(c *Config) bool { return c.MaxConnections == 10 }, "-1"},
		"MESHD_MAX_CONNECTIONS_PER_ENDPOINT": {"0", func(c *Config) bool { return c.MaxConnsPerEndpoint == 0 }, "lots"},
	}
	for _, s := range Settings() {
		tc, ok := cases[s.Name]
		if !ok {
			t.Errorf("setting %s has no test case", s.Name)
			continue
		}
		t.Run(s.Name, func(t *testing.T) {
			c, err := load(t, []string{s.Name + "=" + tc.good})
			if err != nil {
				t.Fatalf("good value %q: %v", tc.good, err)
			}
			if !tc.check(c) {
				t.Fatalf("good value %q was not applied", tc.good)
			}
			c, err = load(t, nil, "--"+s.Flag()+"="+tc.good)
			if err != nil || !tc.check(c) {
				t.Fatalf("flag --%s=%q: applied=%v err=%v", s.Flag(), tc.good, c != nil && tc.check(c), err)
			}
			if tc.bad == "" && (s.Type == "string" || s.Type == "host:port or URL") {
				return // free-form: nothing is bad
			}
			_, err = load(t, []string{s.Name + "=" + tc.bad})
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("bad value %q: got %v, want *Error", tc.bad, err)
			}
			msg := err.Error()
			if ce.Name != s.Name || !strings.Contains(msg, s.Name) || !strings.Contains(msg, `"`+tc.bad+`"`) || !strings.Contains(msg, "expected ") || strings.Contains(msg, "\n") {
				t.Fatalf("error %q must be one line naming %s, the value and what was expected", msg, s.Name)
			}
			_, err = load(t, nil, "--"+s.Flag()+"="+tc.bad)
			if !errors.As(err, &ce) || ce.Flag != s.Flag() || !strings.Contains(err.Error(), "--"+s.Flag()) {
				t.Fatalf("bad flag value: got %v", err)
			}
		})
	}
}

func TestFlagWinsOverEnvironment(t *testing.T) {
	c, err := load(t, []string{"MESHD_ADMIN_ADDR=127.0.0.1:1", "MESHD_CONNECT_TIMEOUT=abc"},
		"--admin-addr", "127.0.0.1:2", "--connect-timeout=2s", "--access-log")
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminAddr != "127.0.0.1:2" || c.Defaults.ConnectTimeout != 2*time.Second || !c.AccessLog {
		t.Fatalf("flags did not win: %+v", c.Values())
	}
}

func TestCommandLineErrors(t *testing.T) {
	_, _, err := Load(nil, []string{"--no-such-flag=1"})
	if !errors.Is(err, ErrUsage) {
		t.Fatalf("unknown flag: got %v, want ErrUsage", err)
	}
	_, _, err = Load(nil, []string{"-h"})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: got %v", err)
	}
	_, rest, err := Load(nil, []string{"--log-level=warn", "apply", "x"})
	if err != nil || !reflect.DeepEqual(rest, []string{"apply", "x"}) {
		t.Fatalf("positional args: %v %v", rest, err)
	}
}

func TestUpstreamOverrides(t *testing.T) {
	env := []string{
		"MESHD_REQUEST_TIMEOUT=10s",
		"MESHD_UPSTREAM_PAYMENTS_REQUEST_TIMEOUT=2s",
		"MESHD_UPSTREAM_PAYMENTS_V2_RETRY_BACKOFF_MAX=1s",
		"MESHD_UPSTREAM_PAYMENTS_V2_RETRY_MAX=0",
		"MESHD_UPSTREAM_LEDGER_SVC_RETRY_ON=5xx",
	}
	c, err := load(t, env)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		upstream string
		check    func(p Policy) bool
	}{
		{"payments", func(p Policy) bool { return p.RequestTimeout == 2*time.Second && p.RetryMax == 2 }},
		{"payments.service.consul", func(p Policy) bool { return p.RequestTimeout == 10*time.Second }}, // keys are exact names
		{"payments-v2", func(p Policy) bool {
			return p.RetryBackoffMax == time.Second && p.RetryMax == 0 && p.RequestTimeout == 10*time.Second
		}},
		{"payments.v2", func(p Policy) bool { return p.RetryMax == 0 }},
		{"ledger-svc", func(p Policy) bool { return p.RetryOn.String() == "5xx" }},
		{"unknown", func(p Policy) bool { return p.RequestTimeout == 10*time.Second && p.RetryMax == 2 }},
	}
	for _, tc := range tests {
		if !tc.check(c.Policy(tc.upstream)) {
			t.Errorf("policy of %s: %+v", tc.upstream, c.Policy(tc.upstream))
		}
	}
	if c.Defaults.RetryOn.String() != "connect-failure,gateway-error,refused-stream,unavailable" {
		t.Errorf("an override changed the defaults: %s", c.Defaults.RetryOn)
	}
	eff := c.Effective()
	if eff.Upstreams["PAYMENTS_V2"]["MESHD_RETRY_BACKOFF_MAX"] != "1s" || len(eff.Upstreams["PAYMENTS"]) != 1 {
		t.Errorf("effective overrides: %v", eff.Upstreams)
	}

	bad := []struct{ env, name string }{
		{"MESHD_UPSTREAM_PAYMENTS_REQUEST_TIMEOUT=soon", "MESHD_UPSTREAM_PAYMENTS_REQUEST_TIMEOUT"},
		{"MESHD_UPSTREAM_PAYMENTS_COLOUR=blue", "MESHD_UPSTREAM_PAYMENTS_COLOUR"},
		{"MESHD_UPSTREAM_REQUEST_TIMEOUT=1s", "MESHD_UPSTREAM_REQUEST_TIMEOUT"},
		{"MESHD_UPSTREAM_PAYMENTS_RETRY_BACKOFF_MAX=1ms", "MESHD_UPSTREAM_PAYMENTS_RETRY_BACKOFF_MAX"},
	}
	for _, tc := range bad {
		_, err := load(t, []string{tc.env})
		var ce *Error
		if !errors.As(err, &ce) || ce.Name != tc.name {
			t.Errorf("%s: got %v, want an error naming %s", tc.env, err, tc.name)
		}
	}
}

func TestCrossFieldValidation(t *testing.T) {
	cases := []struct {
		env  []string
		name string
	}{
		{[]string{"MESHD_RETRY_BACKOFF_BASE=1s", "MESHD_RETRY_BACKOFF_MAX=500ms"}, "MESHD_RETRY_BACKOFF_MAX"},
		{[]string{"MESHD_CONSUL_REGISTER=true", "MESHD_APP_PORT=8080"}, "MESHD_SERVICE_NAME"},
		{[]string{"MESHD_CONSUL_REGISTER=true", "MESHD_SERVICE_NAME=web"}, "MESHD_APP_PORT"},
	}
	for _, tc := range cases {
		_, err := load(t, tc.env)
		var ce *Error
		if !errors.As(err, &ce) || ce.Name != tc.name {
			t.Errorf("%v: got %v, want an error naming %s", tc.env, err, tc.name)
		}
	}
	if _, err := load(t, []string{"MESHD_CONSUL_REGISTER=true", "MESHD_SERVICE_NAME=web", "MESHD_APP_PORT=8080"}); err != nil {
		t.Errorf("complete registration settings: %v", err)
	}
}

func TestRetryOn(t *testing.T) {
	r, err := ParseRetryOn("gateway-error,retriable-4xx,429")
	if err != nil {
		t.Fatal(err)
	}
	for code, want := range map[int]bool{502: true, 503: true, 504: true, 500: false, 409: true, 429: true, 404: false, 200: false} {
		if got := r.RetriesStatus(code); got != want {
			t.Errorf("RetriesStatus(%d) = %v, want %v", code, got, want)
		}
	}
	if r5, _ := ParseRetryOn("5xx"); !r5.RetriesStatus(500) || r5.RetriesStatus(499) {
		t.Errorf("5xx must retry 500 and not 499")
	}
	for _, bad := range []string{"teapot", "99", "600", "5xx,,x"} {
		if _, err := ParseRetryOn(bad); err == nil {
			t.Errorf("ParseRetryOn(%q) accepted", bad)
		}
	}
	if empty, err := ParseRetryOn(""); err != nil || empty.Conditions != 0 || empty.RetriesStatus(503) {
		t.Errorf("empty list must retry nothing: %+v %v", empty, err)
	}
}

func TestStaticEndpoints(t *testing.T) {
	good := map[string]string{
		"":                                  "",
		"a=1.2.3.4:80":                      "a=1.2.3.4:80",
		" a = 1.2.3.4:80 , localhost:81 ; ": "a=1.2.3.4:80,localhost:81",
		"a=1.2.3.4:80;b.svc=[fd00::1]:443":  "a=1.2.3.4:80;b.svc=[fd00::1]:443",
		"empty=;a=1.2.3.4:80":               "empty=;a=1.2.3.4:80",
	}
	for in, want := range good {
		se, err := ParseStaticEndpoints(in)
		if err != nil || se.String() != want {
			t.Errorf("ParseStaticEndpoints(%q) = %q, %v; want %q", in, se, err, want)
		}
	}
	for _, bad := range []string{"a", "=1.2.3.4:80", "a=1.2.3.4", "a=1.2.3.4:0", "a=1.2.3.4:80;a=1.2.3.5:80", "a b=1.2.3.4:80", "a=:80", "a=fd00::1:80"} {
		if _, err := ParseStaticEndpoints(bad); err == nil {
			t.Errorf("ParseStaticEndpoints(%q) accepted", bad)
		}
	}
}

func TestValuesRedactSecretsAndRoundTrip(t *testing.T) {
	c, err := load(t, []string{"CONSUL_HTTP_TOKEN=s3cr3t", "MESHD_RETRY_BODY_MAX=1048576", "MESHD_EXCLUDE_OUTBOUND_CIDRS=10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	v := c.Values()
	if v["CONSUL_HTTP_TOKEN"] != "<redacted>" {
		t.Fatalf("token shown: %q", v["CONSUL_HTTP_TOKEN"])
	}
	if v["MESHD_RETRY_BODY_MAX"] != "1MiB" || v["MESHD_STREAM_IDLE_TIMEOUT"] != "5m" || v["MESHD_TCP_IDLE_TIMEOUT"] != "1h" {
		t.Fatalf("formatting: %v", v)
	}
	// Every effective value reads back as the same configuration.
	var env []string
	for name, val := range v {
		if name != "CONSUL_HTTP_TOKEN" {
			env = append(env, name+"="+val)
		}
	}
	env = append(env, "CONSUL_HTTP_TOKEN=s3cr3t")
	c2, err := load(t, env)
	if err != nil {
		t.Fatalf("effective values do not parse back: %v", err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip changed the configuration")
	}
	if got := c.ExcludeOutboundCIDRs; len(got) != 1 || got[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Fatalf("cidrs: %v", got)
	}
}

func TestUnknownVariables(t *testing.T) {
	got := Unknown([]string{"MESHD_CONECT_TIMEOUT=1s", "MESHD_CONNECT_TIMEOUT=1s", "MESHD_UPSTREAM_X_RETRY_MAX=1", "HOME=/root", "MESHD_E2E=require"})
	if !reflect.DeepEqual(got, []string{"MESHD_CONECT_TIMEOUT"}) {
		t.Fatalf("Unknown = %v", got)
	}
}

func TestSettingsTableIsWellFormed(t *testing.T) {
	seenFlag := map[string]bool{}
	for _, s := range Settings() {
		if s.Doc == "" || s.Type == "" || s.Section == "" {
			t.Errorf("%s: missing doc, type or section", s.Name)
		}
		if strings.Contains(s.Doc, "\n") {
			t.Errorf("%s: doc must be one line", s.Name)
		}
		if seenFlag[s.Flag()] {
			t.Errorf("%s: flag --%s is used twice", s.Name, s.Flag())
		}
		seenFlag[s.Flag()] = true
	}
}

// TestDocsPageIsCurrent fails when docs/configuration.md was not
// regenerated after a change to the settings table.
func TestDocsPageIsCurrent(t *testing.T) {
	got, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatalf("reading the docs page: %v", err)
	}
	if !bytes.Equal(got, Markdown()) {
		t.Fatalf("docs/configuration.md is stale: run `go generate ./config` (or `meshd config docs > docs/configuration.md`)")
	}
}

func TestSizeAndDurationFormats(t *testing.T) {
	sizes := map[string]Size{"0": 0, "1": 1, "64KiB": 64 << 10, "64KB": 64 << 10, "2MiB": 2 << 20, "1GiB": 1 << 30, "1536": 1536}
	for in, want := range sizes {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %v, %v", in, got, err)
		}
	}
	if Size(1536).String() != "1536" {
		t.Errorf("1536 bytes printed as %s", Size(1536))
	}
	for _, bad := range []string{"-1", "1TiB", "KiB", "9223372036854775807GiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
	durs := map[time.Duration]string{0: "0", 90 * time.Second: "1m30s", 2 * time.Hour: "2h", 5 * time.Minute: "5m", 25 * time.Millisecond: "25ms"}
	for d, want := range durs {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
