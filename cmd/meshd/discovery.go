package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/consul"
	"github.com/meshd/meshd/metrics"
)

// mesh is discovery as run wires it: the static list, then Consul when
// CONSUL_HTTP_ADDR is set, and the local app's registration.
type mesh struct {
	cfg      *config.Config
	log      *zap.Logger
	resolver discovery.Chain
	static   *discovery.Static
	consul   *consul.Resolver // nil without Consul
	client   *api.Client

	mu    sync.Mutex
	regID string // set once registered
}

func newMesh(cfg *config.Config, log *zap.Logger, m *metrics.Metrics) (*mesh, error) {
	lists := make(map[string][]string, len(cfg.StaticServices))
	for _, s := range cfg.StaticServices {
		lists[s.Name] = s.Endpoints
	}
	d := &mesh{cfg: cfg, log: log, static: discovery.NewStatic(lists)}
	d.resolver = discovery.Chain{d.static}
	if cfg.ConsulHTTPAddr == "" {
		return d, nil
	}
	// Consul's own variables (TLS, namespace, ...) are read by its client;
	// the address and token may also come from flags.
	ccfg := api.DefaultConfig()
	ccfg.Address = cfg.ConsulHTTPAddr
	if cfg.ConsulHTTPToken != "" {
		ccfg.Token = cfg.ConsulHTTPToken
	}
	if cfg.ConsulDatacenter != "" {
		ccfg.Datacenter = cfg.ConsulDatacenter
	}
	// One blocking query is open per watched name; keep their connections
	// for reuse instead of the client's default handful.
	ccfg.Transport.MaxIdleConnsPerHost = 1024
	client, err := api.NewClient(ccfg)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	d.client = client
	d.consul = consul.New(consul.Options{
		Client:     client,
		Datacenter: cfg.ConsulDatacenter,
		Idle:       cfg.DiscoveryIdle,
		Log:        log.Named("consul"),
		OnUpdate:   func(s string) { m.DiscoveryUpdates.WithLabelValues(s).Inc() },
		OnError:    m.DiscoveryErrors.Inc,
	})
	d.resolver = append(d.resolver, d.consul)
	return d, nil
}

// becomeReady waits until discovery is usable (the Consul agent answered,
// and the local app is registered when asked for), then calls ready. It
// retries with capped backoff until ctx ends.
func (d *mesh) becomeReady(ctx context.Context, ready func()) {
	if d.consul == nil {
		ready()
		return
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	warned := false
	op := func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := d.consul.Ping(cctx); err != nil {
			return err
		}
		if d.cfg.ConsulRegister {
			return d.register(cctx)
		}
		return nil
	}
	notify := func(err error, next time.Duration) {
		if !warned {
			d.log.Warn("discovery not usable yet: retrying", zap.Error(err), zap.Duration("retry_in", next))
			warned = true
		}
	}
	if err := backoff.RetryNotify(op, backoff.WithContext(b, ctx), notify); err != nil {
		return // ctx ended
	}
	ready()
}

func (d *mesh) register(ctx context.Context) error {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "meshd"
	}
	id, err := consul.Register(ctx, d.client, consul.Registration{
		Name: d.cfg.ServiceName, Address: d.cfg.ServiceAddress, Port: int(d.cfg.AppPort), Host: host,
	})
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.regID = id
	d.mu.Unlock()
	d.log.Info("registered with consul", zap.String("service", d.cfg.ServiceName), zap.String("id", id))
	return nil
}

// deregister removes the local app from Consul, if it was registered.
func (d *mesh) deregister() {
	d.mu.Lock()
	id := d.regID
	d.regID = ""
	d.mu.Unlock()
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := consul.Deregister(ctx, d.client, id); err != nil {
		d.log.Warn("deregistration failed", zap.Error(err))
		return
	}
	d.log.Info("deregistered from consul", zap.String("id", id))
}

func (d *mesh) close() {
	if d.consul != nil {
		_ = d.consul.Close()
	}
}
