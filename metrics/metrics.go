// Package metrics holds meshd's Prometheus metrics on a registry of its
// own (with the Go runtime and process collectors). The names and labels
// are those of the contract. It imports no other meshd package.
//
// Label values stay bounded: upstream is a mesh service name, or
// Passthrough for every destination discovery does not know.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Passthrough is the upstream label of traffic to destinations that are
// not mesh services, so that their number cannot grow the label set.
const Passthrough = "passthrough"

// Metrics are every metric meshd exports.
type Metrics struct {
	Registry *prometheus.Registry

	Requests         *prometheus.CounterVec   // meshd_requests_total{direction,upstream,code}
	RequestDuration  *prometheus.HistogramVec // meshd_request_duration_seconds{direction,upstream}
	Retries          *prometheus.CounterVec   // meshd_retries_total{upstream,reason}
	BreakerState     *prometheus.GaugeVec     // meshd_breaker_state{upstream}
	Ejections        *prometheus.CounterVec   // meshd_endpoint_ejections_total{upstream}
	LocalReplies     *prometheus.CounterVec   // meshd_local_replies_total{upstream,reason}
	TCPConnections   *prometheus.CounterVec   // meshd_tcp_connections_total{direction,upstream}
	TCPBytes         *prometheus.CounterVec   // meshd_tcp_bytes_total{direction,upstream,way}
	DiscoveryUpdates *prometheus.CounterVec   // meshd_discovery_updates_total{upstream}
	DiscoveryErrors  prometheus.Counter       // meshd_discovery_errors_total
	LimitRejections  *prometheus.CounterVec   // meshd_limit_rejections_total{limit}
}

// New creates the metrics and registers them.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_requests_total",
			Help: "HTTP requests answered, by direction, upstream and status code.",
		}, []string{"direction", "upstream", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshd_request_duration_seconds",
			Help:    "Time from a request's arrival to its response headers, retries included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"direction", "upstream"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_retries_total",
			Help: "Retries sent, by upstream and the condition that caused them.",
		}, []string{"upstream", "reason"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshd_breaker_state",
			Help: "Service circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}, []string{"upstream"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_endpoint_ejections_total",
			Help: "Endpoints ejected by outlier detection.",
		}, []string{"upstream"}),
		LocalReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_local_replies_total",
			Help: "Answers meshd gave by itself, by the x-meshd-error reason.",
		}, []string{"upstream", "reason"}),
		TCPConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_tcp_connections_total",
			Help: "Opaque TCP connections proxied.",
		}, []string{"direction", "upstream"}),
		TCPBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_tcp_bytes_total",
			Help: "Opaque TCP bytes proxied; way is sent (client to upstream) or received.",
		}, []string{"direction", "upstream", "way"}),
		DiscoveryUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_discovery_updates_total",
			Help: "Endpoint set changes received from discovery, per upstream.",
		}, []string{"upstream"}),
		DiscoveryErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshd_discovery_errors_total",
			Help: "Failed discovery queries (Consul unreachable or answering errors).",
		}),
		LimitRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_limit_rejections_total",
			Help: "Requests or connections refused because a limit was reached (connections, header-count).",
		}, []string{"limit"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.RequestDuration, m.Retries, m.BreakerState, m.Ejections,
		m.LocalReplies, m.TCPConnections, m.TCPBytes, m.DiscoveryUpdates, m.DiscoveryErrors, m.LimitRejections,
	)
	return m
}
