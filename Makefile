# criseq — see README.md. All targets work on a fresh Debian machine with Go.
GO ?= go
OUT ?= out

.PHONY: all build install release demo docs test test-deps e2e race bench bench-go lab fmt vet clean generate

PREFIX ?= /usr/local
# Static binaries: no cgo, so they run on any Linux of their architecture.
STATIC = CGO_ENABLED=0
LDFLAGS = -s -w -X main.version=$(VERSION)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

all: build

# bin/criseq: one static binary, every format included.
build:
	$(STATIC) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/criseq ./cmd/criseq

# Installs bin/criseq as $(PREFIX)/bin/criseq (root for /usr/local).
install: build
	install -D -m 0755 bin/criseq $(DESTDIR)$(PREFIX)/bin/criseq

# Static binaries for linux/amd64 and linux/arm64 with SHA-256 checksums, in dist/.
release:
	rm -rf dist && mkdir -p dist
	for arch in amd64 arm64; do \
		$(STATIC) GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/criseq-linux-$$arch ./cmd/criseq || exit 1; \
	done
	cd dist && sha256sum criseq-linux-* > SHA256SUMS && cat SHA256SUMS

# The main job on the bundled real capture: diagrams into ./out (no root, no node).
demo:
	$(GO) run ./cmd/criseq demo -o $(OUT)

# The README's pictures, drawn by criseq from the bundled capture.
docs:
	$(GO) run ./cmd/criseq demo -o docs --format svg

# The real-node lab (root): real kubelet + containerd through criseq record;
# captures and diagrams into lab-out/. See README.md.
lab:
	./lab/run.sh -o lab-out

# Installs what the tests use (Debian packages, as root) and runs them.
# Tests whose peer is missing skip with the reason, listed at the end (SKIP
# lines); with CI=true they fail instead.
test: test-deps
	$(GO) vet ./...
	$(GO) test -json ./... | $(GO) run ./internal/testsum

test-deps:
	@./lab/test-deps.sh

# Real-peer end-to-end tests (root): the lab through criseq record on containerd
# 1.6 (Debian) and 2.4.2 (Go module proxy), about 9 minutes warm.
e2e: test-deps
	CRISEQ_E2E=1 $(GO) test -count=1 -v -timeout 80m -run 'E2E' ./lab/
	CRISEQ_E2E=1 $(GO) test -count=1 -v -run 'E2E' ./capture/ebpf/

# The unit tests under the race detector (not in .ci/run: it would add
# minutes to a cold CI run).
race:
	$(GO) test -race -short ./...

# The table of ratios, measured in one run (several minutes): each command
# on a large capture of real kubelet traffic against tshark's decode of it,
# and the relay against socat and a direct connection. See README.md, Speed.
bench:
	$(GO) run ./internal/bench

# The Go benchmarks of each package.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./capture ./decode ./render ./cmd/criseq ./internal/crijson
	$(GO) test -run '^$$' -bench . -benchtime=1x ./capture/ebpf

# Rebuilds the committed BPF objects of capture/ebpf (Debian: clang llvm
# libbpf-dev) and the CRI JSON writers of internal/crijson.
generate:
	$(GO) generate ./capture/ebpf ./internal/crijson

fmt:
	gofmt -l -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin dist $(OUT)
