// Package metrics holds meshd's Prometheus metrics on a registry of its
// own (with the Go runtime and process collectors). The names and labels
// are those of the contract. It imports no other meshd package.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are every metric meshd exports.
type Metrics struct {
	Registry *prometheus.Registry

	DiscoveryUpdates *prometheus.CounterVec // meshd_discovery_updates_total{upstream}
	DiscoveryErrors  prometheus.Counter     // meshd_discovery_errors_total
}

// New creates the metrics and registers them.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		DiscoveryUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshd_discovery_updates_total",
			Help: "Endpoint set changes received from discovery, per upstream.",
		}, []string{"upstream"}),
		DiscoveryErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshd_discovery_errors_total",
			Help: "Failed discovery queries (Consul unreachable or answering errors).",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.DiscoveryUpdates,
		m.DiscoveryErrors,
	)
	return m
}
