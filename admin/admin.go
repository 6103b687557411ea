// Package admin serves meshd's operator endpoints: the admin API on the
// loopback admin address and the health server (/healthz and /ready only)
// on the address kubelet probes.
package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy"
)

// State is meshd's lifecycle as the probes see it. Its zero value is alive
// and not ready.
type State struct {
	ready    atomic.Bool
	draining atomic.Bool
}

// SetReady marks meshd ready (every listener bound, discovery usable).
func (s *State) SetReady() { s.ready.Store(true) }

// Drain marks meshd as shutting down: /ready answers 503 from now on.
func (s *State) Drain() { s.draining.Store(true) }

// Draining reports whether Drain was called.
func (s *State) Draining() bool { return s.draining.Load() }

// Ready reports whether /ready answers 200.
func (s *State) Ready() bool { return s.ready.Load() && !s.draining.Load() }

func (s *State) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *State) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch {
	case s.draining.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
	case !s.ready.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("starting\n"))
	default:
		_, _ = w.Write([]byte("ready\n"))
	}
}

// HealthHandler serves GET /healthz and GET /ready and nothing else.
func HealthHandler(s *State) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.serveHealthz)
	mux.HandleFunc("GET /ready", s.serveReady)
	return mux
}

// Options are what the admin API shows and does.
type Options struct {
	State  *State
	Config *config.Config
	// Shutdown starts a graceful drain, as SIGTERM does.
	Shutdown func()
	// Metrics is served on /metrics when set.
	Metrics *prometheus.Registry
	// Proxy answers /breakers and /endpoints when set.
	Proxy Views
}

// Views are the documents the proxy serves through the admin API.
type Views interface {
	Breakers() proxy.BreakersView
	Endpoints() proxy.EndpointsView
}

// Handler serves the admin API.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", o.State.serveHealthz)
	mux.HandleFunc("GET /ready", o.State.serveReady)
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, o.Config.Effective())
	})
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("draining\n"))
		o.Shutdown()
	})
	if o.Proxy != nil {
		mux.HandleFunc("GET /breakers", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, o.Proxy.Breakers()) })
		mux.HandleFunc("GET /endpoints", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, o.Proxy.Endpoints()) })
	}
	if o.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
