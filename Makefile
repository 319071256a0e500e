# Pulltrace. Two commands matter: `make demo` (see it work) and `make test` (prove it works).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin
# Real-component tests start containerd, registries and apiservers; two packages at a time
# is what 2 cores take without timing out.
GOTEST_P ?= 2

.PHONY: all build web web-deps components components-matrix test test-matrix test-unit test-go test-fuzz test-web test-ui test-chart test-tools chart-docs chart-push lint bench demo cluster-up cluster-down clean help

all: build

help:
	@echo "make demo        run the real local cluster, server, agents and moving pulls (Ctrl-C stops it)"
	@echo "make test        every test, real components included (builds them once into ~/.cache/pulltrace)"
	@echo "make test-unit   fast tests only: no containerd, apiserver or browser"
	@echo "make test-matrix the agent's real containerd tests over every containerd version and pull path"
	@echo "make build       web UI + bin/pulltrace-server, bin/pulltrace-agent, bin/kubectl-pulltrace"
	@echo "make images      agent and server OCI images without Docker (REGISTRY=... to push)"
	@echo "make dist        kubectl-pulltrace archives for krew, sha256s into plugins/krew.yaml"
	@echo "make chart-push REGISTRY=ghcr.io/d44b/charts   package the chart and push it (OCI, Helm SDK)"
	@echo "make chart-docs  regenerate charts/pulltrace/README.md with helm-docs"
	@echo "make lint        gofmt, go vet and golangci-lint (pinned in hack/tools/golangci-lint)"
	@echo "make bench       benchmarks, printed as figures"
	@echo "make cluster-up / cluster-down   the real local cluster on its own"

web-deps:
	@if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules ]; then cd web && npm ci --no-audit --no-fund; fi

# The Go build never needs Node (web/ embeds a placeholder page without dist); this builds
# the real UI first so binaries carry it.
web: web-deps
	cd web && npm run build

build: web
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/pulltrace-server ./cmd/server
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/pulltrace-agent ./cmd/agent
	@if [ -d cmd/kubectl-pulltrace ]; then $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/kubectl-pulltrace ./cmd/kubectl-pulltrace; fi

# containerd, crictl, registry, etcd, kube-apiserver, kubectl, helm, krew, promtool, helm-docs: built once per
# machine into ~/.cache/pulltrace (minutes when cold, nothing when warm).
components:
	hack/components.sh all containerd-v2.0.14

components-matrix:
	hack/components.sh all matrix

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './web/node_modules/*')); \
	  if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	hack/components.sh golangci-lint
	"$$(hack/components.sh path golangci-lint)/golangci-lint" run ./...

test-unit: web-deps
	$(GO) test -short -count=1 ./...
	cd web && npm test

# The agent's real containerd tests run over the cells PULLTRACE_CONTAINERD_CELLS names
# (internal/harness/cluster/cells.go): `test` is 2.4.2 transfer, 2.4.2 local and 2.0.14;
# `matrix` adds 2.2.9 in both paths. Cells beyond the default run the representative cases.
CONTAINERD_CELLS ?= test

test-go:
	PULLTRACE_CONTAINERD_CELLS=$(CONTAINERD_CELLS) $(GO) test -count=1 -p $(GOTEST_P) -timeout 20m ./...

# Every containerd cell, every case, in each cell; prints each cell's time.
test-matrix: components-matrix
	PULLTRACE_CONTAINERD_CELLS=matrix PULLTRACE_CONTAINERD_ALL_CASES=1 $(GO) test -count=1 -v -timeout 30m \
	  -run 'TestRealContainerd' ./internal/agent | grep -E '^\s*(--- |ok|FAIL|panic)|cell .* took'

# A short run of the report intake fuzzer (decode, validate, apply) over its seed corpus.
test-fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzIntake$$' -fuzztime=10s ./internal/httpapi

test-web: web-deps
	cd web && npm test

# helm lint/template with the real helm.
test-chart:
	hack/chart-lint.sh

# Tests of the tool modules (hack/tools/*): their dependencies stay out of the product's go.mod.
test-tools:
	cd hack/tools/promtool && GOFLAGS="-trimpath -buildvcs=false" $(GO) test -count=1 ./...

chart-docs:
	hack/helm-docs.sh

test: components lint web test-web test-chart test-tools test-go test-fuzz

bench:
	hack/bench.sh

demo: components web
	$(GO) run ./hack/demo

cluster-up: components
	$(GO) run ./hack/cluster up

cluster-down:
	$(GO) run ./hack/cluster down

clean:
	rm -rf $(BIN) web/dist

# Container images, without Docker (hack/images): pulltrace-agent and pulltrace-server for
# linux/amd64 and linux/arm64. Plain `make images` pushes NOTHING: it writes the OCI layout
# dist/images. `make images REGISTRY=127.0.0.1:5000/pulltrace` pushes there (plain http for a
# loopback registry); `make images PUSH=1` pushes to the default ghcr.io/d44b (release only).
# The tag defaults to the chart's appVersion, not the git-describe VERSION above, so that the
# chart's default image tags are what this builds; VERSION=... on the command line or in the
# environment overrides it. Depends on web so the server binary embeds the real UI.
IMAGES_FLAGS = -go '$(GO)' \
  $(if $(filter command line environment environment override,$(origin VERSION)),-version '$(VERSION)') \
  $(if $(REGISTRY),-registry '$(REGISTRY)') $(if $(filter 1 true yes,$(PUSH)),-push)
.PHONY: images
images: web
	$(GO) run ./hack/images $(strip $(IMAGES_FLAGS))

# kubectl-pulltrace for krew: six archives in dist/, their sha256s written into
# plugins/krew.yaml (hack/krew-test.sh validates and installs the result offline).
.PHONY: dist
dist:
	hack/dist.sh

# The chart as an OCI artifact, packaged and pushed with the Helm SDK (hack/chartpush):
# `make chart-push REGISTRY=ghcr.io/d44b/charts` publishes oci://ghcr.io/d44b/charts/pulltrace
# (credentials from `helm registry login`); a loopback registry is spoken to over plain HTTP.
# CHART_VERSION=... overrides Chart.yaml's version.
.PHONY: chart-push
chart-push:
	@if [ -z "$(REGISTRY)" ]; then echo "usage: make chart-push REGISTRY=ghcr.io/d44b/charts [CHART_VERSION=x.y.z]" >&2; exit 2; fi
	$(GO) run ./hack/chartpush -registry '$(REGISTRY)' $(if $(CHART_VERSION),-version '$(CHART_VERSION)')
