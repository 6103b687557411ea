package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/iptables"
)

const iptablesUsage = "meshd: usage: meshd iptables apply|clean|print [flags]\n"

func cmdIptables(e env) int {
	if len(e.args) == 0 {
		fmt.Fprint(e.stderr, iptablesUsage)
		return exitUsage
	}
	action := e.args[0]
	e.args = e.args[1:]
	if action != "apply" && action != "clean" && action != "print" {
		fmt.Fprintf(e.stderr, "meshd: unknown iptables action %q\n%s", action, iptablesUsage)
		return exitUsage
	}
	cfg, _, code, ok := loadConfig(e, 0)
	if !ok {
		return code
	}
	opts, err := iptablesOptions(cfg)
	if err != nil {
		fmt.Fprintf(e.stderr, "meshd: %v\n", err)
		return exitUsage
	}
	if action == "print" {
		v4, v6 := iptables.Build(opts)
		fmt.Fprintf(e.stdout, "# iptables-restore --noflush input (IPv4)\n%s", v4)
		if opts.IPv6 {
			fmt.Fprintf(e.stdout, "# ip6tables-restore --noflush input (IPv6)\n%s", v6)
		}
		return exitOK
	}

	log := newLogger(cfg.LogLevel, e.stderr)
	defer func() { _ = log.Sync() }()
	if err := iptables.CheckRoot(); err != nil {
		log.Error("meshd iptables "+action+" failed", zap.Error(err))
		return exitFailure
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	backend, err := iptables.DetectBackend(ctx)
	if err != nil {
		log.Error("meshd iptables "+action+" failed", zap.Error(err))
		return exitFailure
	}
	runner := iptables.NewExecRunner(backend)
	if action == "apply" {
		err = iptables.Apply(ctx, opts, runner)
	} else {
		err = iptables.Clean(ctx, runner, opts.IPv6)
	}
	if err != nil {
		log.Error("meshd iptables "+action+" failed", zap.String("backend", backend.Name), zap.Error(err))
		return exitFailure
	}
	log.Info("iptables "+action+" done", zap.String("backend", backend.Name), zap.Bool("ipv6", opts.IPv6),
		zap.Int("proxy_uid", opts.ProxyUID), zap.Uint16("outbound_port", opts.OutboundPort), zap.Uint16("inbound_port", opts.InboundPort))
	return exitOK
}

// iptablesOptions maps the configuration onto the rule builder's options.
func iptablesOptions(cfg *config.Config) (iptables.Options, error) {
	out, err := portOf(cfg.OutboundAddr)
	if err != nil {
		return iptables.Options{}, fmt.Errorf("MESHD_OUTBOUND_ADDR: %w", err)
	}
	in, err := portOf(cfg.InboundAddr)
	if err != nil {
		return iptables.Options{}, fmt.Errorf("MESHD_INBOUND_ADDR: %w", err)
	}
	o := iptables.Options{
		ProxyUID:             cfg.ProxyUID,
		OutboundPort:         out,
		InboundPort:          in,
		ExcludeInboundPorts:  cfg.ExcludeInboundPorts,
		ExcludeOutboundPorts: cfg.ExcludeOutboundPorts,
		ExcludeOutboundCIDRs: cfg.ExcludeOutboundCIDRs,
	}
	if !cfg.InboundPorts.All {
		o.InboundPorts = cfg.InboundPorts.Ports
	}
	switch cfg.IPv6 {
	case "true":
		o.IPv6 = true
	case "auto":
		o.IPv6 = iptables.HostHasIPv6()
	}
	return o, o.Validate()
}

func portOf(addr string) (uint16, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	return uint16(n), err
}
