# wiremesh — the two commands are `make demo` and `make test`.
GO      ?= go
BIN     := bin/wiremesh
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build demo test unit e2e bench fuzz reliability lint clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/wiremesh

# A local mesh on this machine: a coordinator and three agents, each host a
# network namespace. Needs root. Ctrl-C removes everything.
demo: build
	./scripts/demo.sh $(BIN)

# Every test: vet, unit tests with -race, the end-to-end suite on namespace
# hosts (needs root; with CI set to anything it fails instead of skipping),
# and a short run of every fuzz target (a count of inputs, not a duration:
# see scripts/fuzz.sh).
test: lint
	$(GO) test -race -count=1 -timeout 25m ./...
	./scripts/fuzz.sh 20000x

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/)

e2e:
	$(GO) test -count=1 -timeout 20m ./test/e2e/

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 40m ./test/bench/

# Longer fuzzing: make fuzz FUZZTIME=5m
FUZZTIME ?= 30s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# The reliability suite: faults, hostile input and load, each with what it
# checked and the figure measured, written to docs/reliability.md with the
# machine and the date. Needs root for the end-to-end part.
reliability:
	$(GO) run ./test/reliability -o docs/reliability.md

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean:
	rm -rf bin
