package consul

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/consultest"
)

func newResolver(t *testing.T, a *consultest.Agent, mod func(*Options)) *Resolver {
	t.Helper()
	o := Options{Client: a.Client(), Idle: time.Minute, UnknownTTL: 300 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	r := New(o)
	t.Cleanup(func() { r.Close() })
	return r
}

func addrs(s *discovery.Snapshot) []string {
	var out []string
	for _, e := range s.Endpoints {
		out = append(out, e.Address)
	}
	return out
}

// eventually polls Resolve until check passes or d elapses, and returns how
// long it took.
func eventually(t *testing.T, r *Resolver, name string, d time.Duration, what string, check func([]string) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last []string
	for time.Since(start) < d {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := r.Resolve(ctx, name)
		cancel()
		if err == nil {
			last = addrs(s)
			if check(last) {
				return time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v; last endpoints %v", what, d, last)
	return 0
}

func TestFollowsChangesWithinASecond(t *testing.T) {
	a := consultest.Start(t, consultest.Options{})
	r := newResolver(t, a, nil)
	a.Register("payments", "10.0.0.1", 8080)
	id2 := a.Register("payments", "10.0.0.2", 8080)
	a.Register("payments", "fd00::3", 8080)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.Resolve(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:8080", "10.0.0.2:8080", "[fd00::3]:8080"}
	if !slices.Equal(addrs(s), want) || s.Source != discovery.SourceConsul {
		t.Fatalf("first answer %v (%s), want %v", addrs(s), s.Source, want)
	}

	id4 := a.Register("payments", "10.0.0.4", 8080)
	d := eventually(t, r, "payments", 2*time.Second, "a new instance appears", func(e []string) bool { return slices.Contains(e, "10.0.0.4:8080") })
	t.Logf("registration seen after %v", d)
	if d > time.Second {
		t.Errorf("registration took %v, want within 1 s", d)
	}
	select {
	case <-s.Changed:
	default:
		t.Errorf("the superseded snapshot's Changed channel is still open")
	}

	a.SetHealth(id2, false)
	d = eventually(t, r, "payments", 2*time.Second, "a failing instance disappears", func(e []string) bool { return !slices.Contains(e, "10.0.0.2:8080") })
	if d > time.Second {
		t.Errorf("failing check took %v to remove, want within 1 s", d)
	}
	a.Deregister(id4)
	d = eventually(t, r, "payments", 2*time.Second, "a deregistered instance disappears", func(e []string) bool { return !slices.Contains(e, "10.0.0.4:8080") })
	if d > time.Second {
		t.Errorf("deregistration took %v, want within 1 s", d)
	}
	if name, ok := r.ServiceOf("10.0.0.1:8080"); !ok || name != "payments" {
		t.Errorf("ServiceOf(10.0.0.1:8080) = %q, %v", name, ok)
	}
	if _, ok := r.ServiceOf("10.0.0.9:8080"); ok {
		t.Errorf("ServiceOf knows an address no service has")
	}
}

func TestNodeAddressWhenServiceHasNone(t *testing.T) {
	a := consultest.Start(t, consultest.Options{})
	r := newResolver(t, a, nil)
	a.Register("ledger", "", 9000)
	s, err := r.Resolve(context.Background(), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	if got := addrs(s); len(got) != 1 || got[0] != "127.0.0.1:9000" {
		t.Fatalf("endpoints %v, want the node address 127.0.0.1:9000", got)
	}
}

func TestUnknownAndUnhealthyNames(t *testing.T) {
	a := consultest.Start(t, consultest.Options{})
	r := newResolver(t, a, nil)
	ctx := context.Background()

	if _, err := r.Resolve(ctx, "nowhere"); !errors.Is(err, discovery.ErrUnknownService) {
		t.Fatalf("unknown name: %v", err)
	}
	// Remembered: answered from memory, no watch left open for it.
	start := time.Now()
	for i := 0; i < 100; i++ {
		if _, err := r.Resolve(ctx, "nowhere"); !errors.Is(err, discovery.ErrUnknownService) {
			t.Fatalf("unknown name, call %d: %v", i, err)
		}
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("100 answers for a remembered unknown name took %v", d)
	}
	if n := r.Watching(); n != 0 {
		t.Errorf("%d watches open for an unknown name", n)
	}
	// Once registered, the name is found after the memory expires.
	a.Register("nowhere", "10.0.0.7", 80)
	eventually(t, r, "nowhere", 3*time.Second, "a name registered later", func(e []string) bool { return len(e) == 1 })

	// Known, but no instance passes: zero endpoints, not unknown.
	id := a.Register("sick", "10.0.0.8", 80)
	a.SetHealth(id, false)
	s, err := r.Resolve(ctx, "sick")
	if err != nil || len(s.Endpoints) != 0 {
		t.Fatalf("service with no passing instance: %v, %v", s, err)
	}
}

// TestStaticStability stops the agent: the last endpoints stay for 30 s,
// errors are counted, the outage is logged once; after a restart, changes
// flow again.
func TestStaticStability(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: runs 30 s")
	}
	a := consultest.Start(t, consultest.Options{})
	core, logs := observer.New(zap.InfoLevel)
	var errs, updates atomic.Int64
	r := newResolver(t, a, func(o *Options) {
		o.Log = zap.New(core)
		o.OnError = func() { errs.Add(1) }
		o.OnUpdate = func(string) { updates.Add(1) }
	})
	a.Register("payments", "10.0.0.1", 8080)
	if _, err := r.Resolve(context.Background(), "payments"); err != nil {
		t.Fatal(err)
	}
	a.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		s, err := r.Resolve(context.Background(), "payments")
		if err != nil || !slices.Equal(addrs(s), []string{"10.0.0.1:8080"}) {
			t.Fatalf("during the outage: %v, %v", s, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	warns := logs.FilterMessage("consul unreachable: keeping the last known endpoints").Len()
	if warns != 1 {
		t.Errorf("outage logged %d times, want once", warns)
	}
	if errs.Load() < 5 {
		t.Errorf("only %d errors counted in 30 s of outage", errs.Load())
	}
	t.Logf("errors counted during a 30 s outage: %d (backoff capped at 500ms)", errs.Load())
	before := updates.Load()

	a.Restart()
	a.Register("payments", "10.0.0.2", 8080)
	eventually(t, r, "payments", 5*time.Second, "changes after the agent came back", func(e []string) bool {
		return slices.Equal(e, []string{"10.0.0.2:8080"})
	})
	if logs.FilterMessage("consul reachable again").Len() != 1 {
		t.Errorf("recovery not logged once")
	}
	if updates.Load() <= before {
		t.Errorf("no update counted after recovery")
	}
}

// TestManyServicesAndIdleWatches watches 200 services at once, reports
// memory and goroutines, and checks that unused watches stop.
func TestManyServicesAndIdleWatches(t *testing.T) {
	a := consultest.Start(t, consultest.Options{})
	const n = 200
	for i := 0; i < n; i++ {
		a.Register(fmt.Sprintf("svc-%03d", i), fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), 80)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	r := newResolver(t, a, func(o *Options) { o.Idle = 2 * time.Second })
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if _, err := r.Resolve(ctx, fmt.Sprintf("svc-%03d", i)); err != nil {
			t.Fatalf("svc-%03d: %v", i, err)
		}
	}
	if got := r.Watching(); got != n {
		t.Fatalf("watching %d names, want %d", got, n)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()
	heap := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d services watched: +%d goroutines, +%.1f MiB heap in use", n, g1-g0, float64(heap)/(1<<20))
	if g1-g0 > 6*n {
		t.Errorf("%d goroutines for %d watches", g1-g0, n)
	}
	if heap > 64<<20 {
		t.Errorf("heap grew by %d bytes for %d watches", heap, n)
	}

	// Keep one name in use; the others stop after the idle time.
	stop := time.Now().Add(5 * time.Second)
	for time.Now().Before(stop) && r.Watching() > 1 {
		r.Resolve(ctx, "svc-000")
		time.Sleep(100 * time.Millisecond)
	}
	if got := r.Watching(); got != 1 {
		t.Fatalf("after the idle time %d watches remain, want 1", got)
	}
	r.Close()
	if g := runtime.NumGoroutine(); g > g0+10 {
		t.Logf("goroutines after close: %d (before: %d)", g, g0)
	}
}

func TestRegistration(t *testing.T) {
	a := consultest.Start(t, consultest.Options{})
	c := a.Client()
	ctx := context.Background()
	id, err := Register(ctx, c, Registration{Name: "web", Address: "127.0.0.1", Port: 18080, Host: "pod-1"})
	if err != nil {
		t.Fatal(err)
	}
	if id != "web-pod-1-18080" {
		t.Fatalf("service ID %q", id)
	}
	svcs, _, err := c.Catalog().Service("web", "", nil)
	if err != nil || len(svcs) != 1 || svcs[0].ServiceID != id || svcs[0].ServiceAddress != "127.0.0.1" || svcs[0].ServicePort != 18080 {
		t.Fatalf("catalog after registration: %+v, %v", svcs, err)
	}
	checks, _, err := c.Health().Checks("web", nil)
	if err != nil || len(checks) != 1 || !strings.Contains(checks[0].Name, "18080") {
		t.Fatalf("health check: %+v, %v", checks, err)
	}
	// Registering again (a restart) keeps one instance.
	if _, err := Register(ctx, c, Registration{Name: "web", Address: "127.0.0.1", Port: 18080, Host: "pod-1"}); err != nil {
		t.Fatal(err)
	}
	if svcs, _, _ := c.Catalog().Service("web", "", nil); len(svcs) != 1 {
		t.Fatalf("re-registration made %d instances", len(svcs))
	}
	if err := Deregister(ctx, c, id); err != nil {
		t.Fatal(err)
	}
	if svcs, _, _ := c.Catalog().Service("web", "", nil); len(svcs) != 0 {
		t.Fatalf("still in the catalog after deregistration: %+v", svcs)
	}
}

func TestResolveWaitsBoundedForFirstAnswer(t *testing.T) {
	a := consultest.Start(t, consultest.Options{})
	r := newResolver(t, a, nil)
	a.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Resolve(ctx, "payments")
	if !errors.Is(err, discovery.ErrUnknownService) {
		t.Fatalf("unreachable agent, first call: %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > time.Second {
		t.Fatalf("first call returned after %v, want about the 200ms bound", d)
	}
}

func TestServiceIDAndAddress(t *testing.T) {
	if got := ServiceID("payments", "pod-7", 8080); got != "payments-pod-7-8080" {
		t.Fatalf("ServiceID = %q", got)
	}
	if a, err := FirstAddress(); err == nil && (a == "127.0.0.1" || a == "::1") {
		t.Fatalf("FirstAddress returned loopback %s", a)
	}
}
