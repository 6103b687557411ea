# meshd — build, test and run targets. `make demo` and `make test` are the
# two commands the README starts with; both work on a fresh machine.

GO          ?= go
# The Go release meshd is built and tested with: the go command fetches it
# from the Go module proxy on first use. 1.26.8 and earlier carry net/http
# vulnerabilities that `make lint` (govulncheck) reports.
export GOTOOLCHAIN := go1.27.3
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# govulncheck and the Go vulnerability database, both pinned in tools/vuln
# (the database is the golang.org/x/vulndb module's OSV files, indexed here).
VULNDB      := $(CURDIR)/bin/vulndb
IMAGE       ?= meshd:$(VERSION)

# The pinned Consul agent used by the discovery tests (tools/consul/go.mod).
CONSUL_BIN  := $(CURDIR)/bin/consul
export MESHD_CONSUL_BIN := $(CONSUL_BIN)

.PHONY: all build test test-short lint vulncheck demo demo-consul bench bench-micro fuzz consul docker docs clean

# Fuzz targets, as package:Target; `make fuzz` runs each for FUZZTIME.
FUZZTIME ?= 30s
FUZZ_TARGETS := ./proxy/sniff:FuzzClassify ./proxy:FuzzServiceName ./proxy:FuzzHTTP1Path ./iptables:FuzzBuild \
	./config:FuzzParseStaticEndpoints ./config:FuzzParseRetryOn ./config:FuzzLoad \
	./proxy/h1:FuzzServerRequest ./proxy/h1:FuzzHeadParse ./proxy/h1:FuzzClientResponse ./proxy/h1:FuzzScanRequest

all: build

## build: the static meshd binary in bin/meshd
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/meshd ./cmd/meshd

## test: unit, integration and namespace tests with the race detector.
## Tests that need root or iptables skip with a reason unless MESHD_E2E=require.
test:
	$(GO) test -race -count=1 -timeout 30m ./...
	@# proxy/sockio's raw system calls are built only without the race detector.
	$(GO) test -count=1 ./proxy/sockio

## lint: gofmt, go vet, staticcheck and govulncheck
lint: vulncheck
	@out=$$(gofmt -l .); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## vulncheck: govulncheck against the pinned vulnerability database (tools/vuln);
## a known vulnerability in code meshd calls (its modules or the Go release) fails it
vulncheck: bin/govulncheck $(VULNDB)/index/db.json
	bin/govulncheck -db file://$(VULNDB) ./...

bin/govulncheck: tools/vuln/go.mod tools/vuln/go.sum
	cd tools/vuln && $(GO) build -trimpath -o $(CURDIR)/bin/govulncheck golang.org/x/vuln/cmd/govulncheck

$(VULNDB)/index/db.json: tools/vuln/go.mod tools/vuln/go.sum
	cd tools/vuln && $(GO) build -trimpath -o $(CURDIR)/bin/vulndb-index golang.org/x/vulndb/cmd/indexdb
	rm -rf $(VULNDB)
	bin/vulndb-index -out $(VULNDB) -vulns "$$(cd tools/vuln && $(GO) list -m -f '{{.Dir}}' golang.org/x/vulndb)/data/osv"

## demo: meshd on static endpoints with tiny local upstreams (no root, no Consul)
demo: build
	$(GO) run ./examples/demo -meshd bin/meshd

## demo-consul: the same demo with the instances discovered through the pinned Consul agent
demo-consul: build consul
	$(GO) run ./examples/demo -meshd bin/meshd -consul $(CONSUL_BIN)

## bench: the performance harness (bench/README.md): fortio load straight, through meshd
## (one and two hops), HAProxy and nginx, on loopback; results in bench/results/<date>/.
## BENCHFLAGS=-quick checks the harness in under a minute. Builds bin/fortio from
## tools/fortio (pinned) only when it is missing or older than tools/fortio/go.mod.
bench:
	@$(MAKE) --no-print-directory build
	@if [ ! -x bin/fortio ] || [ tools/fortio/go.mod -nt bin/fortio ] || [ tools/fortio/go.sum -nt bin/fortio ]; then \
	  mkdir -p bin && echo "building bin/fortio (tools/fortio)" && \
	  (cd tools/fortio && CGO_ENABLED=0 GOFLAGS=-buildvcs=false $(GO) build -trimpath -o $(CURDIR)/bin/fortio fortio.org/fortio) && \
	  touch bin/fortio; \
	fi
	$(GO) run ./bench $(BENCHFLAGS)

## bench-micro: the Go micro-benchmarks of the hot path (detection, parsing, balancer, resilience bookkeeping)
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./proxy/... ./resilience/...

## fuzz: run every fuzz target for FUZZTIME (crashers land in testdata/fuzz and become regression tests)
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

## consul: build the pinned Consul agent into bin/consul (only when missing)
consul: $(CONSUL_BIN)
$(CONSUL_BIN): tools/consul/go.mod tools/consul/go.sum
	@mkdir -p bin
	cd tools/consul && CGO_ENABLED=0 $(GO) build -trimpath -o $(CONSUL_BIN) github.com/hashicorp/consul
	@touch $(CONSUL_BIN)

## docker: the container image (needs a Docker engine)
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

## docs: regenerate docs/configuration.md from the settings table
docs:
	$(GO) run ./cmd/meshd config docs > docs/configuration.md

clean:
	rm -rf bin/meshd

## soak: the soak and chaos test (e2e/soak_linux_test.go) for SOAK (10m): constant load through
## meshd while instances and Consul are killed and restarted; needs root and bin/consul
SOAK ?= 10m
.PHONY: soak
soak: consul
	MESHD_SOAK=$(SOAK) MESHD_E2E=require $(GO) test -race -count=1 -timeout 40m -run '^TestSoakChaos$$' -v ./e2e/
