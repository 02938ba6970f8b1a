# criseq — see README.md. All targets work on a fresh Debian machine with Go.
GO ?= go
OUT ?= out

.PHONY: all build demo docs test test-deps e2e race bench bench-go lab fmt vet clean generate

all: build

build:
	$(GO) build -o bin/ ./cmd/criseq ./cmd/criseq-graphviz

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
# Tests whose peer is missing skip with the reason.
test: test-deps
	$(GO) vet ./...
	$(GO) test ./...

test-deps:
	@./lab/test-deps.sh

# Real-peer end-to-end tests (root): containerd + crictl through criseq record.
e2e: test-deps
	CRISEQ_E2E=1 $(GO) test -count=1 -v -timeout 40m -run 'E2E' ./lab/

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
	rm -rf bin $(OUT)
