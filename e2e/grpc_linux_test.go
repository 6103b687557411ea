package e2e

//lint:file-ignore SA1019 the tests drive raw HTTP/2 with golang.org/x/net/http2, meshd's chosen implementation.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/netnstest"
)

// The tests of this file drive HTTP/2 with prior knowledge (h2c), gRPC and
// WebSocket through meshd in network namespaces: the app in pod A calls
// gRPC servers (grpc-go's interop TestService, implemented below) in pod
// B. The gRPC client dials B's address; meshd's rules redirect the
// connection to A's meshd, which routes each stream by :authority.

// grpcService is a TestService whose behaviour each test sets before it
// starts: fail the first failFirst calls (or every call) with UNAVAILABLE,
// hold unary calls for sleep, send headers before failing. It counts calls
// per method and remembers the metadata of the last unary call.
type grpcService struct {
	testgrpc.UnimplementedTestServiceServer
	name        string
	failFirst   int64
	failAll     bool
	headerFirst bool // send the response headers before failing (status in trailers only)
	sleep       time.Duration

	calls       atomic.Int64 // every call, any method
	unary       atomic.Int64
	input       atomic.Int64
	duplex      atomic.Int64
	duplexEnded chan error // each FullDuplexCall's end, when set

	mu     sync.Mutex
	lastMD metadata.MD
}

func (s *grpcService) failing() bool {
	n := s.calls.Add(1)
	return s.failAll || n <= s.failFirst
}

func (s *grpcService) unavailable(ctx context.Context) error {
	if s.headerFirst {
		_ = grpc.SendHeader(ctx, metadata.Pairs("x-server-header", s.name))
	}
	return status.Error(codes.Unavailable, s.name+": not now")
}

func (s *grpcService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.unary.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.lastMD = md.Copy()
	s.mu.Unlock()
	if s.failing() {
		return nil, s.unavailable(ctx)
	}
	if s.sleep > 0 {
		// Deaf to the call's deadline and cancellation, as a busy
		// server is: only meshd and the client bound the call.
		time.Sleep(s.sleep)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-server-header", s.name, "x-server-header-bin", string([]byte{0, 1, 2, 0xff})))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-server-trailer", "done", "x-server-trailer-bin", string([]byte{0xfe, 0, 0x7f})))
	return &testgrpc.SimpleResponse{Payload: req.GetPayload(), ServerId: s.name}, nil
}

// StreamingOutputCall sends one message per response parameter, each after
// its interval; the body says its index.
func (s *grpcService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if s.failing() {
		return s.unavailable(stream.Context())
	}
	for i, p := range req.GetResponseParameters() {
		if d := time.Duration(p.GetIntervalUs()) * time.Microsecond; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-stream.Context().Done():
				t.Stop()
				return stream.Context().Err()
			}
		}
		body := fmt.Appendf(nil, "%d:", i)
		body = append(body, bytes.Repeat([]byte{'x'}, max(int(p.GetSize())-len(body), 0))...)
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
	return nil
}

// StreamingInputCall sums the payload sizes; a failing call reads one
// message, then fails.
func (s *grpcService) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	s.input.Add(1)
	if s.failing() {
		if _, err := stream.Recv(); err != nil {
			return err
		}
		return s.unavailable(stream.Context())
	}
	var total int32
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: total})
		}
		if err != nil {
			return err
		}
		total += int32(len(m.GetPayload().GetBody()))
	}
}

// FullDuplexCall echoes each message's payload as it comes; a failing call
// reads one message, then fails.
func (s *grpcService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) (err error) {
	s.duplex.Add(1)
	if s.duplexEnded != nil {
		defer func() { s.duplexEnded <- stream.Context().Err() }()
	}
	if s.failing() {
		if _, err := stream.Recv(); err != nil {
			return err
		}
		return s.unavailable(stream.Context())
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

func (s *grpcService) metadata() metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastMD
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// serveGRPC serves svc on addr inside pod until the test ends.
func serveGRPC(t *testing.T, pod *netnstest.Pod, addr string, svc testgrpc.TestServiceServer) *countingListener {
	t.Helper()
	ln := &countingListener{Listener: listen(t, pod, addr)}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, svc)
	done := make(chan struct{})
	go func() { _ = s.Serve(ln); close(done) }()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return ln
}

// grpcClient is a gRPC client in pod whose connections go to dial (with
// meshd's rules in pod, redirected to its outbound listener) and whose
// calls carry :authority authority. The client's own retries are off, so
// every retry an upstream sees is meshd's.
func grpcClient(t *testing.T, pod *netnstest.Pod, dial, authority string) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+dial,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return podDial(ctx, pod, dial) }),
		grpc.WithAuthority(authority),
		grpc.WithDisableRetry(),
	)
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// unaryEcho makes one unary call with md and a payload of size bytes and
// checks that the payload comes back whole; it returns the server's header
// and trailer metadata.
func unaryEcho(ctx context.Context, c testgrpc.TestServiceClient, size int, md metadata.MD) (header, trailer metadata.MD, err error) {
	body := randomBytes(size)
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		return header, trailer, err
	}
	if !bytes.Equal(resp.GetPayload().GetBody(), body) {
		return header, trailer, fmt.Errorf("payload of %d bytes came back as %d bytes, first difference at %d",
			size, len(resp.GetPayload().GetBody()), firstDiff(resp.GetPayload().GetBody(), body))
	}
	return header, trailer, nil
}

func callCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestGRPCThroughMeshd: gRPC calls of every kind from pod A, through A's
// meshd (transparent redirect, h2c detection, routing by :authority), to
// TestService instances in pod B.
func TestGRPCThroughMeshd(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)

	payments := &grpcService{name: "payments"}
	flaky := &grpcService{name: "flaky", failFirst: 1}
	flakyStream := &grpcService{name: "flaky-stream", failAll: true}
	flakyDuplex := &grpcService{name: "flaky-duplex", failAll: true}
	slow := &grpcService{name: "slow", sleep: 2 * time.Second}
	mux := &grpcService{name: "mux"}
	streams := &grpcService{name: "streams", duplexEnded: make(chan error, 4)}
	services := []struct {
		svc  *grpcService
		port uint16
	}{{payments, 9001}, {flaky, 9002}, {flakyStream, 9003}, {flakyDuplex, 9004}, {slow, 9005}, {mux, 9006}, {streams, 9008}}
	var static []string
	lns := map[string]*countingListener{}
	for _, s := range services {
		ep := hostPort(b.Addr, s.port)
		lns[s.svc.name] = serveGRPC(t, b, ep, s.svc)
		static = append(static, s.svc.name+"="+ep)
	}
	resetter := startResetter(t, b, hostPort(b.Addr, 9009))
	static = append(static, "resetter="+hostPort(b.Addr, 9009))
	// Service streams has a request timeout of 2 s, shorter than its
	// client-streaming call.
	startMeshd(t, a, "MESHD_STATIC_ENDPOINTS="+strings.Join(static, ";"),
		"MESHD_REQUEST_TIMEOUT=15s", "MESHD_STREAM_IDLE_TIMEOUT=5s", "MESHD_DETECT_TIMEOUT=300ms",
		"MESHD_UPSTREAM_STREAMS_REQUEST_TIMEOUT=2s")
	// Nothing listens on B's port 80: only meshd's routing by :authority
	// gets a call anywhere.
	dial := hostPort(b.Addr, 80)

	t.Run("unary-metadata", func(t *testing.T) {
		c := grpcClient(t, a, dial, "payments")
		md := metadata.Pairs("x-app-key", "v1", "x-app-bin", string([]byte{0, 0xff, 0x10}), "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		// 200 KiB, more than MESHD_RETRY_BODY_MAX: the body is streamed, not
		// kept; then a small one.
		for _, size := range []int{200 << 10, 10} {
			header, trailer, err := unaryEcho(callCtx(t, 10*time.Second), c, size, md)
			if err != nil {
				t.Fatalf("UnaryCall with %d bytes: %v", size, err)
			}
			got := payments.metadata()
			for _, k := range []string{"x-app-key", "x-app-bin", "traceparent"} {
				if g, w := got.Get(k), md.Get(k); len(g) != 1 || g[0] != w[0] {
					t.Errorf("server got %s = %q, want %q", k, g, w)
				}
			}
			if got.Get("x-request-id") == nil || fmt.Sprint(got.Get("x-meshd-attempt")) != "[1]" {
				t.Errorf("server got x-request-id %q, x-meshd-attempt %q; want a request id and attempt 1", got.Get("x-request-id"), got.Get("x-meshd-attempt"))
			}
			if g := got.Get(":authority"); len(g) != 1 || g[0] != "payments" {
				t.Errorf("server got :authority %q, want payments", g)
			}
			wantHeader := map[string]string{"x-server-header": "payments", "x-server-header-bin": string([]byte{0, 1, 2, 0xff})}
			for k, w := range wantHeader {
				if g := header.Get(k); len(g) != 1 || g[0] != w {
					t.Errorf("client got header %s = %q, want %q (all: %v)", k, g, w, header)
				}
			}
			wantTrailer := map[string]string{"x-server-trailer": "done", "x-server-trailer-bin": string([]byte{0xfe, 0, 0x7f})}
			for k, w := range wantTrailer {
				if g := trailer.Get(k); len(g) != 1 || g[0] != w {
					t.Errorf("client got trailer %s = %q, want %q (all: %v)", k, g, w, trailer)
				}
			}
		}
	})

	t.Run("unary-retried-on-unavailable", func(t *testing.T) {
		c := grpcClient(t, a, dial, "flaky")
		if _, _, err := unaryEcho(callCtx(t, 10*time.Second), c, 100, nil); err != nil {
			t.Fatalf("UnaryCall (first attempt UNAVAILABLE): %v", err)
		}
		if n := flaky.unary.Load(); n != 2 {
			t.Errorf("server saw %d calls, want 2 (one retry by meshd)", n)
		}
		if got := flaky.metadata().Get("x-meshd-attempt"); fmt.Sprint(got) != "[2]" {
			t.Errorf("the retry carried x-meshd-attempt %q, want 2", got)
		}
	})

	t.Run("client-streaming-not-retried", func(t *testing.T) {
		c := grpcClient(t, a, dial, "flaky-stream")
		stream, err := c.StreamingInputCall(callCtx(t, 10*time.Second))
		if err != nil {
			t.Fatalf("StreamingInputCall: %v", err)
		}
		for range 3 {
			if err := stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: randomBytes(100)}}); err != nil {
				break // the server may have failed the call already
			}
		}
		_, err = stream.CloseAndRecv()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("StreamingInputCall: %v, want UNAVAILABLE from the server", err)
		}
		if n := flakyStream.input.Load(); n != 1 {
			t.Errorf("server saw %d client-streaming calls, want 1 (no retry)", n)
		}
	})

	t.Run("bidi-streaming-not-retried", func(t *testing.T) {
		// The client sends one message and waits for an answer before it
		// would send more: the server fails the call after that message.
		c := grpcClient(t, a, dial, "flaky-duplex")
		start := time.Now()
		stream, err := c.FullDuplexCall(callCtx(t, 10*time.Second))
		if err != nil {
			t.Fatalf("FullDuplexCall: %v", err)
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("one")}}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		_, err = stream.Recv()
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "flaky-duplex") {
			t.Fatalf("Recv after %v: %v, want the server's UNAVAILABLE", time.Since(start).Round(time.Millisecond), err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("the server's UNAVAILABLE took %v to reach the client", took.Round(time.Millisecond))
		}
		if n := flakyDuplex.duplex.Load(); n != 1 {
			t.Errorf("server saw %d bidi calls, want 1 (no retry)", n)
		}
	})

	t.Run("streaming-both-ways", func(t *testing.T) {
		c := grpcClient(t, a, dial, "streams")
		ctx := callCtx(t, 20*time.Second)
		// Client streaming: messages arrive and add up.
		in, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatalf("StreamingInputCall: %v", err)
		}
		for range 5 {
			if err := in.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: randomBytes(30 << 10)}}); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		resp, err := in.CloseAndRecv()
		if err != nil || resp.GetAggregatedPayloadSize() != 5*30<<10 {
			t.Fatalf("StreamingInputCall: %v, aggregated %d; want %d", err, resp.GetAggregatedPayloadSize(), 5*30<<10)
		}
		// Ping-pong: each message is answered before the next is sent,
		// so nothing may be held back in either direction.
		duplex, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatalf("FullDuplexCall: %v", err)
		}
		for i := range 20 {
			body := randomBytes(1 + i*997)
			if err := duplex.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
			m, err := duplex.Recv()
			if err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
				t.Fatalf("echo %d: %v (%d of %d bytes)", i, err, len(m.GetPayload().GetBody()), len(body))
			}
		}
		if err := duplex.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := duplex.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
		if err := <-streams.duplexEnded; err != nil {
			t.Errorf("the server's call ended with %v", err)
		}
	})

	t.Run("client-streaming-outlives-request-timeout", func(t *testing.T) {
		// grpc-go sends a client-streaming call's response headers when
		// the call ends: a stream of 4.5 s, one message every 750 ms,
		// lives on past the 2 s request timeout because bytes flow.
		c := grpcClient(t, a, dial, "streams")
		start := time.Now()
		in, err := c.StreamingInputCall(callCtx(t, 20*time.Second))
		if err != nil {
			t.Fatalf("StreamingInputCall: %v", err)
		}
		for i := range 7 {
			if i > 0 {
				time.Sleep(750 * time.Millisecond)
			}
			if err := in.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: randomBytes(100)}}); err != nil {
				break // CloseAndRecv says why
			}
		}
		resp, err := in.CloseAndRecv()
		if err != nil || resp.GetAggregatedPayloadSize() != 700 {
			t.Fatalf("StreamingInputCall of %v: %v, aggregated %d; want 700", time.Since(start).Round(time.Millisecond), err, resp.GetAggregatedPayloadSize())
		}
	})

	t.Run("rst-stream-from-client", func(t *testing.T) {
		// Two streams on the one connection to meshd; the client cancels
		// one (RST_STREAM): the server sees that call end, the other
		// goes on.
		c := grpcClient(t, a, dial, "streams")
		ctx := callCtx(t, 20*time.Second)
		cctx, cancel := context.WithCancel(ctx)
		doomed, err := c.FullDuplexCall(cctx)
		if err != nil {
			t.Fatal(err)
		}
		alive, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ping := func(s testgrpc.TestService_FullDuplexCallClient, what string) {
			t.Helper()
			if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(what)}}); err != nil {
				t.Fatalf("%s: Send: %v", what, err)
			}
			if m, err := s.Recv(); err != nil || string(m.GetPayload().GetBody()) != what {
				t.Fatalf("%s: Recv: %v", what, err)
			}
		}
		ping(doomed, "doomed")
		ping(alive, "alive-1")
		cancel()
		select {
		case err := <-streams.duplexEnded:
			if err == nil {
				t.Errorf("the cancelled call ended on the server without its context cancelled")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not see the cancelled call end within 5 s")
		}
		ping(alive, "alive-2")
		if err := alive.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := alive.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
		<-streams.duplexEnded
	})

	t.Run("rst-stream-from-server", func(t *testing.T) {
		// The upstream resets a stream after part of its body: the
		// client's stream fails, and the next request on the same
		// connection to meshd works.
		tr := &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
				return podDial(ctx, a, dial)
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var conns []net.Conn
		get := func(path string) (string, error) {
			req, _ := http.NewRequest(http.MethodGet, "http://resetter"+path, nil)
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				GotConn: func(i httptrace.GotConnInfo) { conns = append(conns, i.Conn) },
			}))
			resp, err := c.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}
		body, err := get("/abort")
		var se http2.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("GET /abort: %q, %v; want a stream reset after the first bytes", body, err)
		}
		t.Logf("GET /abort: %q, then %v", body, err)
		if body, err = get("/ok"); err != nil || body != "ok" {
			t.Fatalf("GET /ok after the reset: %q, %v", body, err)
		}
		if len(conns) != 2 || conns[0] != conns[1] {
			t.Errorf("the two requests used %d connections, want one: a reset ends only its stream", len(conns))
		}
		if n := resetter.accepted.Load(); n != 1 {
			t.Errorf("the upstream accepted %d connections, want 1: a stream reset keeps the connection", n)
		}
	})

	t.Run("grpc-timeout", func(t *testing.T) {
		c := grpcClient(t, a, dial, "slow")
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, _, err := unaryEcho(ctx, c, 10, nil)
		took := time.Since(start)
		if status.Code(err) != codes.DeadlineExceeded || took > 1500*time.Millisecond {
			t.Fatalf("UnaryCall with a 300 ms deadline to a server that takes 2 s: %v after %v; want DEADLINE_EXCEEDED in about 300 ms", err, took.Round(time.Millisecond))
		}
		t.Logf("DEADLINE_EXCEEDED after %v", took.Round(time.Millisecond))

		// meshd's own answer: a raw gRPC request whose only deadline is its
		// grpc-timeout header (the client itself waits up to 10 s).
		tr := &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
				return podDial(ctx, a, dial)
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		msg := []byte{0, 0, 0, 0, 0} // one empty SimpleRequest
		req, _ := http.NewRequestWithContext(callCtx(t, 10*time.Second), http.MethodPost, "http://slow/grpc.testing.TestService/UnaryCall", bytes.NewReader(msg))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Grpc-Timeout", "300m")
		start = time.Now()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("raw gRPC request with grpc-timeout 300m: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took = time.Since(start)
		grpcStatus := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
		if resp.StatusCode != http.StatusOK || grpcStatus != "4" || resp.Header.Get("X-Meshd-Error") != "timeout" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") || took > 1500*time.Millisecond {
			t.Fatalf("grpc-timeout 300m: %s, grpc-status %q, x-meshd-error %q, content-type %q, grpc-message %q after %v; want 200, 4 (DEADLINE_EXCEEDED), timeout, application/grpc, in about 300 ms",
				resp.Status, grpcStatus, resp.Header.Get("X-Meshd-Error"), resp.Header.Get("Content-Type"),
				resp.Trailer.Get("Grpc-Message"), took.Round(time.Millisecond))
		}
		t.Logf("meshd's answer after %v: grpc-message %q", took.Round(time.Millisecond), resp.Trailer.Get("Grpc-Message"))
	})

	t.Run("multiplexed-100-calls", func(t *testing.T) {
		c := grpcClient(t, a, dial, "mux")
		ctx := callCtx(t, 20*time.Second)
		// One call first, so that the client's connection to meshd exists.
		if _, _, err := unaryEcho(ctx, c, 10, nil); err != nil {
			t.Fatal(err)
		}
		const n = 100
		errs := make(chan error, n)
		for i := range n {
			go func() {
				_, _, err := unaryEcho(ctx, c, 1000+i, nil)
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("concurrent UnaryCall: %v", err)
			}
		}
		if got := mux.unary.Load(); got != n+1 {
			t.Errorf("server saw %d calls, want %d", got, n+1)
		}
		conns := lns["mux"].accepted.Load()
		t.Logf("%d calls over %d upstream connection(s)", n+1, conns)
		if conns > 2 {
			t.Errorf("the upstream accepted %d connections from meshd for %d concurrent calls, want at most 2", conns, n)
		}
	})

	t.Run("bad-h2-input", func(t *testing.T) {
		c := grpcClient(t, a, dial, "payments")
		ctx := callCtx(t, 20*time.Second)
		if _, _, err := unaryEcho(ctx, c, 10, nil); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name  string
			after []byte // what follows the preface
		}{
			// DATA on stream 0 is a connection error (PROTOCOL_ERROR).
			{"data-on-stream-0", append(settingsFrame(), 0, 0, 3, byte(http2.FrameData), 0, 0, 0, 0, 0, 'a', 'b', 'c')},
			// A frame longer than the server's SETTINGS_MAX_FRAME_SIZE.
			{"oversized-frame", append(settingsFrame(), 0xff, 0xff, 0xff, byte(http2.FrameHeaders), 4, 0, 0, 0, 1)},
			// A PING where the first SETTINGS must be.
			{"no-settings", []byte{0, 0, 8, byte(http2.FramePing), 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}},
			// Bytes that are not frames at all.
			{"garbage", []byte("this is not HTTP/2 at all, just junk bytes\r\n\r\n")},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				conn := mustDial(t, a, dial)
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write(append([]byte(http2.ClientPreface), tc.after...)); err != nil {
					t.Fatalf("write: %v", err)
				}
				fr := http2.NewFramer(io.Discard, conn)
				var goaway *http2.GoAwayFrame
				var err error
				for {
					var f http2.Frame
					f, err = fr.ReadFrame()
					if err != nil {
						break
					}
					if g, ok := f.(*http2.GoAwayFrame); ok {
						goaway = g
					}
				}
				if !closedConn(err) {
					t.Fatalf("after bad input the connection was not closed: %v", err)
				}
				if goaway == nil {
					t.Errorf("connection closed without a GOAWAY")
				} else {
					t.Logf("GOAWAY %v, then %v", goaway.ErrCode, err)
				}
				// The client's own connection still works, and so does a
				// new one.
				if _, _, err := unaryEcho(ctx, c, 10, nil); err != nil {
					t.Fatalf("a good call on the existing connection: %v", err)
				}
				if _, _, err := unaryEcho(ctx, grpcClient(t, a, dial, "payments"), 10, nil); err != nil {
					t.Fatalf("a good call on a new connection: %v", err)
				}
			})
		}
	})
}

// TestGRPCServerStreamOutlivesRequestTimeout is the long test: a
// server-streaming call of about 40 s, one message every 2 s, outlives the
// 15 s request timeout and is never idle for the 5 s stream idle timeout;
// every message arrives when it is sent. It has a topology of its own so
// that it runs alongside the other tests.
func TestGRPCServerStreamOutlivesRequestTimeout(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	ep := hostPort(b.Addr, 9001)
	serveGRPC(t, b, ep, &grpcService{name: "ticker"})
	startMeshd(t, a, "MESHD_STATIC_ENDPOINTS=ticker="+ep,
		"MESHD_REQUEST_TIMEOUT=15s", "MESHD_STREAM_IDLE_TIMEOUT=5s", "MESHD_DETECT_TIMEOUT=300ms")
	dial := hostPort(b.Addr, 80)
	c := grpcClient(t, a, dial, "ticker")
	const n, every = 20, 2 * time.Second
	params := make([]*testgrpc.ResponseParameters, n)
	for i := range params {
		params[i] = &testgrpc.ResponseParameters{Size: 1024, IntervalUs: int32(every / time.Microsecond)}
	}
	start := time.Now()
	stream, err := c.StreamingOutputCall(callCtx(t, 80*time.Second), &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatalf("StreamingOutputCall: %v", err)
	}
	last := start
	for i := 0; ; i++ {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if i != n {
				t.Fatalf("stream ended after %d messages, want %d", i, n)
			}
			break
		}
		if err != nil {
			t.Fatalf("message %d after %v: %v", i, time.Since(start).Round(time.Millisecond), err)
		}
		if want := fmt.Sprintf("%d:", i); !bytes.HasPrefix(m.GetPayload().GetBody(), []byte(want)) || len(m.GetPayload().GetBody()) != 1024 {
			t.Fatalf("message %d: %d bytes starting %.8q; want 1024 starting %q", i, len(m.GetPayload().GetBody()), m.GetPayload().GetBody(), want)
		}
		// Each message arrives when it is sent, not buffered.
		if gap := time.Since(last); gap > every+time.Second {
			t.Errorf("message %d came %v after the previous one, want about %v", i, gap.Round(time.Millisecond), every)
		}
		last = time.Now()
	}
	t.Logf("%d messages in %v", n, time.Since(start).Round(time.Millisecond))
}

// settingsFrame is an empty SETTINGS frame, what a client sends after the
// preface.
func settingsFrame() []byte { return []byte{0, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0} }

// closedConn reports whether a read error means the peer closed the
// connection.
func closedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// startResetter serves h2c on addr inside pod: /abort sends part of a body
// then resets the stream; anything else answers "ok".
func startResetter(t *testing.T, pod *netnstest.Pod, addr string) *countingListener {
	t.Helper()
	ln := &countingListener{Listener: listen(t, pod, addr)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			_, _ = io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			time.Sleep(50 * time.Millisecond)
			panic(http.ErrAbortHandler) // RST_STREAM
		}
		_, _ = io.WriteString(w, "ok")
	})
	srv := &http2.Server{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(c, &http2.ServeConnOpts{Handler: h})
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln
}

// TestGRPCBreakerOpenAnswer: when every instance fails UNAVAILABLE, the
// service breaker opens, and meshd's own answer is a gRPC status the
// client library understands.
func TestGRPCBreakerOpenAnswer(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	for _, tc := range []struct {
		name        string
		headerFirst bool
	}{
		{"trailers-only", false},
		// The status comes in trailers after the response headers.
		{"status-in-trailers", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tp := netnstest.NewTopology(t)
			a, b := tp.AddPod(t), tp.AddPod(t)
			svcs := make([]*grpcService, 3)
			eps := make([]string, 3)
			for i := range svcs {
				svcs[i] = &grpcService{name: fmt.Sprintf("down-%d", i+1), failAll: true, headerFirst: tc.headerFirst}
				eps[i] = hostPort(b.Addr, uint16(9001+i))
				serveGRPC(t, b, eps[i], svcs[i])
			}
			startMeshd(t, a, "MESHD_STATIC_ENDPOINTS=down="+strings.Join(eps, ","),
				"MESHD_BREAKER_CONSECUTIVE_FAILURES=3", "MESHD_RETRY_MAX=0", "MESHD_DETECT_TIMEOUT=300ms")
			c := grpcClient(t, a, hostPort(b.Addr, 80), "down")

			var opened int
			for i := 1; i <= 10 && opened == 0; i++ {
				var header metadata.MD
				_, err := c.UnaryCall(callCtx(t, 5*time.Second), &testgrpc.SimpleRequest{}, grpc.Header(&header))
				st := status.Convert(err)
				if st.Code() != codes.Unavailable {
					t.Fatalf("call %d: %v, want UNAVAILABLE", i, err)
				}
				if strings.Contains(st.Message(), "circuit-open") {
					opened = i
					if got := header.Get("x-meshd-error"); len(got) != 1 || got[0] != "circuit-open" {
						t.Errorf("call %d: x-meshd-error %q, want circuit-open", i, got)
					}
					t.Logf("call %d: %v; x-meshd-error %q", i, err, header.Get("x-meshd-error"))
				} else if !strings.Contains(st.Message(), "not now") {
					t.Errorf("call %d: %v; want the instance's own UNAVAILABLE before the breaker opens", i, err)
				}
			}
			if opened != 4 {
				t.Fatalf("the breaker answered first at call %d, want call 4 (after 3 failures)", opened)
			}
			var total int64
			for _, s := range svcs {
				total += s.unary.Load()
			}
			if total != 3 {
				t.Errorf("the instances saw %d calls, want 3 (no retries, none once open)", total)
			}
		})
	}
}

// TestGRPCInbound: pod B runs meshd; gRPC calls from A reach B's server
// through B's inbound listener (h2c detected there too), with metadata
// and trailers intact.
func TestGRPCInbound(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := netnstest.NewTopology(t)
	a, b := tp.AddPod(t), tp.AddPod(t)
	svc := &grpcService{name: "payments"}
	ep := hostPort(b.Addr, 9001)
	serveGRPC(t, b, ep, svc)
	startMeshd(t, b, "MESHD_DETECT_TIMEOUT=300ms")
	c := grpcClient(t, a, ep, "payments")
	header, trailer, err := unaryEcho(callCtx(t, 10*time.Second), c, 100<<10, metadata.Pairs("x-app-key", "v1"))
	if err != nil {
		t.Fatalf("UnaryCall through B's inbound listener: %v", err)
	}
	md := svc.metadata()
	if fmt.Sprint(md.Get("x-app-key")) != "[v1]" || md.Get("x-request-id") == nil {
		t.Errorf("server got metadata %v; want x-app-key v1 and an x-request-id added by the inbound meshd", md)
	}
	if fmt.Sprint(header.Get("x-server-header")) != "[payments]" || fmt.Sprint(trailer.Get("x-server-trailer")) != "[done]" {
		t.Errorf("client got header %v, trailer %v", header, trailer)
	}
	stream, err := c.FullDuplexCall(callCtx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		want := fmt.Sprintf("ping-%d", i)
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(want)}}); err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || string(m.GetPayload().GetBody()) != want {
			t.Fatalf("echo %d: %v", i, err)
		}
	}
	_ = stream.CloseSend()
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
}

// wsEcho is a WebSocket echo server: every message comes back as it came.
func wsEcho(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Logf("websocket accept: %v", err)
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, data); err != nil {
				return
			}
		}
	})
}

// TestWebSocketThroughMeshd: a WebSocket echo session from pod A to pod B
// through A's meshd (outbound, routed by Host) and through B's meshd
// (inbound): after 101 the connection is a tunnel both ways.
func TestWebSocketThroughMeshd(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	cases := []struct {
		name           string
		meshdA, meshdB bool
		host           string // the Host of the handshake; "" = B's address
	}{
		{"outbound", true, false, "ws-echo"},
		{"inbound", false, true, ""},
		{"both", true, true, "ws-echo"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tp := netnstest.NewTopology(t)
			a, b := tp.AddPod(t), tp.AddPod(t)
			ep := hostPort(b.Addr, 8080)
			serveHTTP(t, b, ep, wsEcho(t))
			if tc.meshdB {
				startMeshd(t, b, "MESHD_DETECT_TIMEOUT=300ms")
			}
			if tc.meshdA {
				startMeshd(t, a, "MESHD_STATIC_ENDPOINTS=ws-echo="+ep, "MESHD_DETECT_TIMEOUT=300ms")
			}
			tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return podDial(ctx, a, ep) }}
			t.Cleanup(tr.CloseIdleConnections)
			ctx := callCtx(t, 20*time.Second)
			c, resp, err := websocket.Dial(ctx, "ws://"+ep+"/echo", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, Host: tc.host})
			if err != nil {
				t.Fatalf("websocket dial from A: %v", err)
			}
			defer c.CloseNow()
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("handshake: %s", resp.Status)
			}
			c.SetReadLimit(1 << 20)
			for i := range 50 {
				typ := websocket.MessageBinary
				msg := randomBytes(1 + i*4001)
				if i%2 == 0 {
					typ, msg = websocket.MessageText, []byte(fmt.Sprintf("text message %d", i))
				}
				if err := c.Write(ctx, typ, msg); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				gotTyp, got, err := c.Read(ctx)
				if err != nil || gotTyp != typ || !bytes.Equal(got, msg) {
					t.Fatalf("echo %d: %v, type %v (want %v), %d bytes (want %d)", i, err, gotTyp, typ, len(got), len(msg))
				}
			}
			if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Fatalf("close handshake: %v", err)
			}
		})
	}
}
