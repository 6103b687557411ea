package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Cores: the proxies on one, the load generator, echo server and sink on
// the other.
const (
	proxyCore = 0
	loadCore  = 1
)

// rowDef is one row of the table: how to start what it measures.
type rowDef struct {
	name string
	desc string
	// peer is the installed program the row needs ("haproxy", "nginx"),
	// if any: without it the row is skipped.
	peer string
	// setup starts the row's proxies (none for direct) and says where the
	// load and the stream go.
	setup func(ctx context.Context, e *benchEnv) (*rowInstance, error)
}

// rowInstance is one started row.
type rowInstance struct {
	url        string // fortio's target; the request carries Host: echo
	streamAddr string // where the stream client connects ("" = no opaque figure)
	streamHops int    // CONNECT handshakes before the stream
	proxies    []*proc
	adminAddr  string // meshd's admin listener, for pprof
}

func (ri *rowInstance) stop() {
	for i := len(ri.proxies) - 1; i >= 0; i-- {
		ri.proxies[i].stop()
	}
}

var allRows = []rowDef{
	{
		name: "direct",
		desc: "fortio → echo server, no proxy (the baseline every ratio divides by)",
		setup: func(_ context.Context, e *benchEnv) (*rowInstance, error) {
			return &rowInstance{url: e.echoURL(e.echoAddr), streamAddr: e.sinkAddr}, nil
		},
	},
	{
		name: "meshd",
		desc: "one hop: fortio → meshd outbound listener (explicit mode, routed by Host: echo to a static endpoint) → echo server; opaque: one CONNECT tunnel",
		setup: func(ctx context.Context, e *benchEnv) (*rowInstance, error) {
			m, err := e.startMeshd(ctx, "meshd", "echo="+e.echoAddr+";sink="+e.sinkAddr)
			if err != nil {
				return nil, err
			}
			return &rowInstance{url: e.echoURL(m.outbound), streamAddr: m.outbound, streamHops: 1,
				proxies: []*proc{m.p}, adminAddr: m.admin}, nil
		},
	},
	{
		name: "meshd-2hop",
		desc: "two hops: fortio → client meshd (Host: echo → static endpoint " + inboundVIP + ":<echo port>) → iptables REDIRECT → server meshd's inbound listener (original destination looked up; delivered to 127.0.0.1:<echo port>, MESHD_INBOUND_TARGET=localhost) → echo server; both meshd on the proxy core; opaque: one CONNECT tunnel through the client meshd, then the server meshd's inbound opaque TCP",
		setup: func(ctx context.Context, e *benchEnv) (*rowInstance, error) {
			if e.netns == "" {
				return e.startTwoHopOutbound(ctx)
			}
			// The redirect to this inbound address is in place from the
			// start of the run (netns.go).
			srv, err := e.startMeshd(ctx, "meshd-server", "", "MESHD_INBOUND_TARGET=localhost", "MESHD_INBOUND_ADDR="+e.inboundAddr)
			if err != nil {
				return nil, err
			}
			cli, err := e.startMeshd(ctx, "meshd-client", "echo="+vip(e.echoAddr)+";sink="+vip(e.sinkAddr))
			if err != nil {
				srv.p.stop()
				return nil, err
			}
			return &rowInstance{url: e.echoURL(cli.outbound), streamAddr: cli.outbound, streamHops: 1,
				proxies: []*proc{srv.p, cli.p}, adminAddr: cli.admin}, nil
		},
	},
	{
		name:  "haproxy",
		desc:  "fortio → HAProxy (mode http, nbthread 1, keep-alive and connection reuse to the upstream) → echo server; opaque: a mode tcp listener",
		peer:  "haproxy",
		setup: func(ctx context.Context, e *benchEnv) (*rowInstance, error) { return e.startHAProxy(ctx, "http") },
	},
	{
		// The least a hop adds on the machine: bytes forwarded, no HTTP
		// read or written. A proxy's added latency above this row's is
		// its own work.
		name:  "haproxy-tcp",
		desc:  "fortio → HAProxy mode tcp (nbthread 1; each client connection passed on as bytes to an upstream connection of its own, no HTTP processing: the floor of what a hop adds) → echo server; no opaque figure (the haproxy row's is the same listener)",
		peer:  "haproxy",
		setup: func(ctx context.Context, e *benchEnv) (*rowInstance, error) { return e.startHAProxy(ctx, "tcp") },
	},
	{
		name:  "nginx",
		desc:  "fortio → nginx (one process, upstream keepalive pool, HTTP/1.1 to the upstream) → echo server; opaque: a stream{} listener",
		peer:  "nginx",
		setup: func(ctx context.Context, e *benchEnv) (*rowInstance, error) { return e.startNginx(ctx) },
	},
}

// benchEnv is what every row shares.
type benchEnv struct {
	opts       options
	ps         *procs
	tmp        string
	seq        int
	baseEnv    []string
	meshdBin   string
	fortioBin  string
	self       string
	echoAddr   string
	sinkAddr   string
	haproxyBin string
	nginxBin   string
	// netns is the namespace the harness runs in, its own (netns.go), or
	// "" on the host's loopback; inboundAddr is where its iptables rule
	// sends connections for inboundVIP (the server meshd's inbound
	// listener).
	netns, inboundAddr string
	// nginxStream is "static", a load_module path, or "" (no opaque row).
	nginxStream string
}

func (e *benchEnv) next(prefix string) string {
	e.seq++
	return filepath.Join(e.tmp, fmt.Sprintf("%03d-%s", e.seq, prefix))
}

func (e *benchEnv) echoURL(addr string) string {
	return fmt.Sprintf("http://%s/echo?size=%d", addr, e.opts.size)
}

// cleanEnv is the harness's environment without anything that would change
// how meshd or a Go program runs: no MESHD_ or CONSUL_ variable, no
// GOMAXPROCS, GOGC, GOMEMLIMIT or GODEBUG.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "MESHD_"), strings.HasPrefix(k, "CONSUL_"),
			k == "GOMAXPROCS", k == "GOGC", k == "GOMEMLIMIT", k == "GODEBUG":
			continue
		}
		out = append(out, kv)
	}
	return out
}

type meshdInstance struct {
	p        *proc
	outbound string
	admin    string
}

// twoHopOutboundDesc is the two-hop row without a namespace of the
// harness's own (see netns.go).
const twoHopOutboundDesc = "two hops, without iptables (the harness is not root, or has no ip or iptables): fortio → client meshd (Host: echo → static endpoint = the server meshd's outbound listener) → server meshd (Host: echo → echo server); both on the proxy core; opaque: two nested CONNECT tunnels"

// startTwoHopOutbound is the two-hop row without iptables: the server
// sidecar takes the call on its outbound listener, routed by Host.
func (e *benchEnv) startTwoHopOutbound(ctx context.Context) (*rowInstance, error) {
	srv, err := e.startMeshd(ctx, "meshd-server", "echo="+e.echoAddr+";sink="+e.sinkAddr)
	if err != nil {
		return nil, err
	}
	cli, err := e.startMeshd(ctx, "meshd-client", "echo="+srv.outbound+";sink="+srv.outbound)
	if err != nil {
		srv.p.stop()
		return nil, err
	}
	return &rowInstance{url: e.echoURL(cli.outbound), streamAddr: cli.outbound, streamHops: 2,
		proxies: []*proc{srv.p, cli.p}, adminAddr: cli.admin}, nil
}

// vip is addr (a loopback host:port) on inboundVIP: the address a client
// sidecar calls for the server sidecar's app.
func vip(addr string) string {
	_, port, _ := strings.Cut(addr, ":")
	return inboundVIP + ":" + port
}

// startMeshd runs bin/meshd with every listener on loopback, the given
// static endpoints (none when empty) and extra settings (a
// MESHD_INBOUND_ADDR among them in place of a free port), and waits for
// /ready.
func (e *benchEnv) startMeshd(ctx context.Context, name, endpoints string, extra ...string) (*meshdInstance, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	out, in, admin, health := loopback(ports[0]), loopback(ports[1]), loopback(ports[2]), loopback(ports[3])
	env := append(append([]string(nil), e.baseEnv...),
		"MESHD_OUTBOUND_ADDR="+out,
		"MESHD_ADMIN_ADDR="+admin,
		"MESHD_HEALTH_ADDR="+health,
		"MESHD_LOG_LEVEL=warn",
		"MESHD_DRAIN_TIMEOUT=0",
	)
	if endpoints != "" {
		env = append(env, "MESHD_STATIC_ENDPOINTS="+endpoints)
	}
	if !slices.ContainsFunc(extra, func(kv string) bool { return strings.HasPrefix(kv, "MESHD_INBOUND_ADDR=") }) {
		env = append(env, "MESHD_INBOUND_ADDR="+in)
	}
	env = append(append(env, extra...), e.opts.meshdEnv...)
	p, err := e.ps.start(name, proxyCore, env, e.tmp, e.next(name+".log"), e.meshdBin, "run")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP200(ctx, p, "http://"+health+"/ready", 15*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	if err := waitTCP(ctx, p, out, 5*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return &meshdInstance{p: p, outbound: out, admin: admin}, nil
}

// startHAProxy starts HAProxy with its HTTP listener in mode (http, or
// tcp for the haproxy-tcp row, which has no opaque figure of its own).
func (e *benchEnv) startHAProxy(ctx context.Context, mode string) (*rowInstance, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	httpAddr, tcpAddr := loopback(ports[0]), loopback(ports[1])
	frontend := fmt.Sprintf(`frontend http_in
    mode http
    bind %s
    option http-keep-alive
    default_backend echo

backend echo
    mode http
    http-reuse always
    server echo %s`, httpAddr, e.echoAddr)
	if mode == "tcp" {
		frontend = fmt.Sprintf(`listen http_in
    mode tcp
    bind %s
    server echo %s`, httpAddr, e.echoAddr)
	}
	cfg := fmt.Sprintf(`# generated by meshd's bench harness
global
    nbthread 1
    maxconn 4096

defaults
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    maxconn 4096

%s

listen tcp_in
    mode tcp
    bind %s
    server sink %s
`, frontend, tcpAddr, e.sinkAddr)
	path := e.next("haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := e.ps.start("haproxy", proxyCore, e.baseEnv, e.tmp, e.next("haproxy.log"), e.haproxyBin, "-f", path, "-db")
	if err != nil {
		return nil, err
	}
	for _, a := range []string{httpAddr, tcpAddr} {
		if err := waitTCP(ctx, p, a, 10*time.Second); err != nil {
			p.stop()
			return nil, err
		}
	}
	ri := &rowInstance{url: e.echoURL(httpAddr), streamAddr: tcpAddr, proxies: []*proc{p}}
	if mode == "tcp" {
		ri.streamAddr = ""
	}
	return ri, nil
}

func (e *benchEnv) startNginx(ctx context.Context) (*rowInstance, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	httpAddr, tcpAddr := loopback(ports[0]), loopback(ports[1])
	prefix := e.next("nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		return nil, err
	}
	var load, stream string
	if e.nginxStream != "" {
		if e.nginxStream != "static" {
			load = "load_module " + e.nginxStream + ";\n"
		}
		stream = fmt.Sprintf(`
stream {
    upstream sink { server %s; }
    server {
        listen %s;
        proxy_pass sink;
    }
}
`, e.sinkAddr, tcpAddr)
	}
	// One process serving (master_process off): its CPU and memory are the
	// whole of nginx, as they are for HAProxy with nbthread 1 and meshd on
	// one core.
	cfg := fmt.Sprintf(`# generated by meshd's bench harness
%sdaemon off;
master_process off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log warn;

events {
    worker_connections 10000;
}

http {
    access_log off;
    client_body_temp_path %s/tmp/body;
    proxy_temp_path %s/tmp/proxy;
    fastcgi_temp_path %s/tmp/fastcgi;
    uwsgi_temp_path %s/tmp/uwsgi;
    scgi_temp_path %s/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;

    upstream echo {
        server %s;
        keepalive 256;
        keepalive_requests 1000000;
    }

    server {
        listen %s;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
}
%s`, load, prefix, prefix, prefix, prefix, prefix, prefix, prefix, e.echoAddr, httpAddr, stream)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := e.ps.start("nginx", proxyCore, e.baseEnv, prefix, prefix+".log", e.nginxBin,
		"-p", prefix, "-c", path, "-e", filepath.Join(prefix, "error.log"))
	if err != nil {
		return nil, err
	}
	addrs := []string{httpAddr}
	ri := &rowInstance{url: e.echoURL(httpAddr), proxies: []*proc{p}}
	if stream != "" {
		addrs = append(addrs, tcpAddr)
		ri.streamAddr = tcpAddr
	}
	for _, a := range addrs {
		if err := waitTCP(ctx, p, a, 10*time.Second); err != nil {
			p.stop()
			return nil, err
		}
	}
	return ri, nil
}

// ---- peers: find, and install when root ----

func findBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// nginxStreamSupport says how this nginx gets its stream module: "static",
// the module's path, or "" when it has none.
func nginxStreamSupport(bin string) string {
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	for _, f := range strings.Fields(string(out)) {
		switch f {
		case "--with-stream":
			return "static"
		case "--with-stream=dynamic":
			if _, err := os.Stat(nginxStreamModule); err == nil {
				return nginxStreamModule
			}
			return ""
		}
	}
	return ""
}

// ensurePeers finds haproxy and nginx, installing what is missing from
// Debian's packages when running as root with -install (the default). A
// policy-rc.d that refuses service starts is put in place for the install
// when there is none, so the packages' own services (nginx on port 80 of
// every address) are not started; it is removed afterwards.
func ensurePeers(ctx context.Context, e *benchEnv, want map[string]bool, install bool) []string {
	var notes []string
	e.haproxyBin, e.nginxBin = findBin("haproxy"), findBin("nginx")
	if e.nginxBin != "" {
		e.nginxStream = nginxStreamSupport(e.nginxBin)
	}
	var pkgs []string
	if want["haproxy"] && e.haproxyBin == "" {
		pkgs = append(pkgs, "haproxy")
	}
	if want["nginx"] && e.nginxBin == "" {
		pkgs = append(pkgs, "nginx", "libnginx-mod-stream")
	} else if want["nginx"] && e.nginxStream == "" {
		pkgs = append(pkgs, "libnginx-mod-stream")
	}
	if len(pkgs) > 0 {
		switch {
		case !install:
			notes = append(notes, "not installed (and -install=false): "+strings.Join(pkgs, " "))
		case os.Geteuid() != 0:
			notes = append(notes, "not installed (not root): "+strings.Join(pkgs, " "))
		case findBin("apt-get") == "":
			notes = append(notes, "not installed (no apt-get): "+strings.Join(pkgs, " "))
		default:
			if err := aptInstall(ctx, pkgs); err != nil {
				notes = append(notes, "apt-get install "+strings.Join(pkgs, " ")+" failed: "+err.Error())
			} else {
				notes = append(notes, "installed with apt-get: "+strings.Join(pkgs, " "))
			}
			e.haproxyBin, e.nginxBin = findBin("haproxy"), findBin("nginx")
			if e.nginxBin != "" {
				e.nginxStream = nginxStreamSupport(e.nginxBin)
			}
		}
	}
	if want["nginx"] && e.nginxBin != "" && e.nginxStream == "" {
		notes = append(notes, "nginx has no stream module: no opaque TCP figure for nginx")
	}
	return notes
}

func aptInstall(ctx context.Context, pkgs []string) error {
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# written by meshd's bench harness for the length of an install\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	run := func(args ...string) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.SysProcAttr = childAttr()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", args[0], err, lastLines(string(out), 4))
		}
		return nil
	}
	fmt.Fprintln(os.Stderr, "bench: apt-get install -y", strings.Join(pkgs, " "))
	install := append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)
	if err := run(install...); err == nil {
		return nil
	}
	if err := run("update"); err != nil {
		return err
	}
	return run(install...)
}
