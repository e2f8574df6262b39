# p2p-agent: build, run and test.
GO      ?= go
BIN     := bin/p2p-agent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# A number of executions, not a duration: with a duration, Go 1.26's fuzz
# coordinator can report a bare "context deadline exceeded" failure as the time
# runs out (golang/go#75804, fixed in Go 1.27). 100000x takes 12-27 s a target.
FUZZTIME ?= 100000x

.PHONY: all build run test test-deps lint fuzz bench clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/p2p-agent

## run: start a node on its embedded defaults (Pebble store in ~/.p2p-agent, metrics on :8080, API on 127.0.0.1:7070)
run: build
	./$(BIN) start

## test-deps: install what the tests need (redis-server, prometheus, promtool, chromium, tmux, jaeger) when missing
test-deps:
	./scripts/test-deps.sh

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

## lint: gofmt, go vet and staticcheck
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## test: the whole suite: dependencies, lint, race tests against real redis/prometheus, short fuzzing
test: test-deps lint
	$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) fuzz

## fuzz: every decoder of what a peer sends, FUZZTIME each
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZTIME) ./internal/p2p/message
	$(GO) test -run '^$$' -fuzz '^FuzzParseUTC$$' -fuzztime $(FUZZTIME) ./internal/p2p/message
	$(GO) test -run '^$$' -fuzz '^FuzzOutputBound$$' -fuzztime $(FUZZTIME) ./internal/task
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAnswer$$' -fuzztime $(FUZZTIME) ./internal/fleet
	$(GO) test -run '^$$' -fuzz '^FuzzParseTraceparent$$' -fuzztime $(FUZZTIME) ./internal/tracing

## bench: every benchmark of docs/performance.md (takes several minutes)
bench:
	./scripts/bench.sh

clean:
	rm -rf bin
