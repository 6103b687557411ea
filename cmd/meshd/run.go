package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/admin"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/metrics"
	"github.com/meshd/meshd/proxy"
)

// idleBeforeExit is how long meshd waits with no active connection before
// it exits during a drain (the contract's "idle for 1 s").
const idleBeforeExit = time.Second

func cmdRun(e env) int {
	cfg, _, code, ok := loadConfig(e, 0)
	if !ok {
		return code
	}
	log := newLogger(cfg.LogLevel, e.stderr)
	defer func() { _ = log.Sync() }()
	for _, name := range config.Unknown(e.environ) {
		log.Warn("unknown variable ignored", zap.String("variable", name))
	}
	ver, rev, goVersion := buildVersion()
	log.Info("starting", zap.String("version", ver), zap.String("commit", rev), zap.String("go", goVersion),
		zap.Any("config", cfg.Effective()))

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	if err := serve(cfg, log, sigs); err != nil {
		log.Error("meshd failed", zap.Error(err))
		return exitFailure
	}
	log.Info("stopped")
	return exitOK
}

// serve binds every listener, serves until a signal or POST /shutdown,
// drains, and returns nil on a clean stop.
func serve(cfg *config.Config, log *zap.Logger, sigs <-chan os.Signal) error {
	var lc net.ListenConfig
	ctx := context.Background()
	bind := func(name, addr string) (net.Listener, error) {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, &listenError{name: name, err: err}
		}
		log.Info("listening", zap.String("listener", name), zap.Stringer("addr", ln.Addr()))
		return ln, nil
	}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	defer closeAll()
	names := []string{"outbound", "inbound", "admin", "health"}
	addrs := []string{cfg.OutboundAddr, cfg.InboundAddr, cfg.AdminAddr, cfg.HealthAddr}
	for i, name := range names {
		ln, err := bind(name, addrs[i])
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	outLn, inLn, adminLn, healthLn := lns[0], lns[1], lns[2], lns[3]
	// REDIRECT sends redirected IPv6 connections to [::1]; an outbound
	// listener on 127.0.0.1 gets its IPv6 twin when the host has IPv6.
	var out6Ln net.Listener
	if twin := ipv6Twin(cfg.OutboundAddr); twin != "" {
		if ln, err := lc.Listen(ctx, "tcp6", twin); err == nil {
			log.Info("listening", zap.String("listener", "outbound"), zap.Stringer("addr", ln.Addr()))
			out6Ln = ln
			lns = append(lns, ln)
		} else {
			log.Debug("no IPv6 outbound listener", zap.String("addr", twin), zap.Error(err))
		}
	}

	state := &admin.State{}
	m := metrics.New()
	shutdown := make(chan struct{})
	var once sync.Once
	requestShutdown := func() { once.Do(func() { close(shutdown) }) }

	mesh, err := newMesh(cfg, log, m)
	if err != nil {
		return err
	}
	defer mesh.close()
	px := proxy.New(proxy.Options{Config: cfg, Resolver: mesh.resolver, Log: log, OwnPorts: ownPorts(cfg), Metrics: m})
	defer px.Close()
	adminSrv := &http.Server{Handler: admin.Handler(admin.Options{State: state, Config: cfg, Shutdown: requestShutdown, Metrics: m.Registry, Proxy: px}),
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(log.Named("admin"))}
	healthSrv := &http.Server{Handler: admin.HealthHandler(state),
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(log.Named("health"))}

	errc := make(chan error, 8)
	var wg sync.WaitGroup
	goServe := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- &listenError{name: name, err: err}
			}
		}()
	}
	goServe("outbound", func() error { return px.ServeOutbound(outLn) })
	if out6Ln != nil {
		goServe("outbound", func() error { return px.ServeOutbound(out6Ln) })
	}
	goServe("inbound", func() error { return px.ServeInbound(inLn) })
	goServe("admin", func() error { return adminSrv.Serve(adminLn) })
	goServe("health", func() error { return healthSrv.Serve(healthLn) })
	readyCtx, stopReady := context.WithCancel(context.Background())
	defer stopReady()
	go mesh.becomeReady(readyCtx, func() {
		state.SetReady()
		log.Info("ready")
	})

	var serveErr error
	select {
	case sig := <-sigs:
		log.Info("draining", zap.Stringer("signal", sig), zap.Duration("drain_timeout", cfg.DrainTimeout))
	case <-shutdown:
		log.Info("draining", zap.String("signal", "POST /shutdown"), zap.Duration("drain_timeout", cfg.DrainTimeout))
	case serveErr = <-errc:
	}
	stopReady()
	if serveErr == nil {
		drain(cfg, log, state, mesh, px, inLn, sigs)
	}
	closeAll()
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = adminSrv.Shutdown(sctx)
	_ = healthSrv.Shutdown(sctx)
	wg.Wait()
	return serveErr
}

// drain runs the contract's shutdown: /ready turns 503, the inbound
// listener stops accepting, HTTP connections close after their current
// request, the outbound listener keeps serving the app's last calls; it
// returns once no connection has been open for idleBeforeExit, at the
// drain timeout, or at a second signal.
func drain(cfg *config.Config, log *zap.Logger, state *admin.State, mesh *mesh, px *proxy.Proxy, inLn net.Listener, sigs <-chan os.Signal) {
	state.Drain()
	mesh.deregister()
	_ = inLn.Close()
	px.Drain()
	deadline := time.NewTimer(cfg.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if px.IdleFor() >= idleBeforeExit {
			log.Info("drained: no open connection")
			return
		}
		select {
		case sig := <-sigs:
			log.Info("second signal: exiting now", zap.Stringer("signal", sig), zap.Int("open_connections", px.Open()))
			return
		case <-deadline.C:
			log.Info("drain timeout: closing open connections", zap.Int("open_connections", px.Open()))
			return
		case <-tick.C:
		}
	}
}

// ipv6Twin returns [::1]:port for an outbound address on 127.0.0.1, and
// "" otherwise.
func ipv6Twin(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		return ""
	}
	return net.JoinHostPort("::1", port)
}

// ownPorts are the ports of meshd's own listeners.
func ownPorts(cfg *config.Config) []uint16 {
	var out []uint16
	for _, a := range []string{cfg.OutboundAddr, cfg.InboundAddr, cfg.AdminAddr, cfg.HealthAddr} {
		if p, err := portOf(a); err == nil {
			out = append(out, p)
		}
	}
	return out
}

type listenError struct {
	name string
	err  error
}

func (e *listenError) Error() string { return e.name + " listener: " + e.err.Error() }
func (e *listenError) Unwrap() error { return e.err }
