#!/usr/bin/env bash
# Runs every benchmark quoted in docs/performance.md and writes raw results to
# bench-results/ (one file per group). Medians: benchstat bench-results/*.txt
# (go run golang.org/x/perf/cmd/benchstat@latest). COUNT and BENCHTIME may be
# overridden; the defaults take roughly 20-30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${COUNT:-5}"
out=bench-results
mkdir -p "$out"
./scripts/test-deps.sh >/dev/null

run() { # name package pattern [benchtime]
	local name=$1 pkg=$2 pattern=$3 bt=${4:-1s}
	echo "== $name ($pkg $pattern)" >&2
	go test -run '^$' -bench "$pattern" -benchmem -count "$COUNT" -benchtime "$bt" -timeout 60m "$pkg" | tee "$out/$name.txt"
}

# The overhead benchmark interleaves raw, instrumented and raw again (an A/A
# control) in rotating order; b.N is a number of rounds. Pinned to one CPU
# when taskset exists, so that the network pairs share one core alike.
echo "== overhead (./internal/overhead, pinned, 300 rounds)" >&2
go test -c -o "$out/overhead.test" ./internal/overhead
pin=()
command -v taskset >/dev/null && pin=(taskset -c 1)
"${pin[@]}" "$out/overhead.test" -test.run '^$' -test.bench BenchmarkInstrumentationOverhead \
	-test.benchtime 300x -test.count "$COUNT" | tee "$out/overhead.txt"
# The node's own histogram against client_golang's: observing and writing.
run metrics ./internal/metrics 'Benchmark(Observe|ObserveManySeries|HistogramWrite|ProcessCollector)$'
run storage-local ./internal/storage/local 'Benchmark(Put|Get)'
run storage-redis ./internal/storage/redis 'Benchmark(Put|Get)'
# Store and raw go-redis in interleaved rounds with an A/A control.
run storage-redis-paired ./internal/storage/redis 'BenchmarkStoreVsRawPaired' 60x
# Prefix lists through the key index against a SCAN, 100 keys among 100,000,
# standalone and a 3-master cluster (each run first writes the 100,000 keys).
run storage-redis-list ./internal/storage/redis 'BenchmarkListPrefix' 100x
run p2p         ./internal/p2p/...       'Benchmark(Ping|MetricsMiddleware|Codec|FullMesh)'
# The responder of this one is a second process (the test binary re-executed);
# b.N is a number of rounds of raw A, service, raw B in rotating order.
run twoproc     ./internal/p2p           'BenchmarkServiceVsRawStream' 100x
run tasks       ./internal/task          'Benchmark'
run node        ./internal/node          'Benchmark(Scrape|RemoteSmallTasks)'
run scrape-cpu  ./internal/node          'BenchmarkScrapeNodeCPU' 500x
run startup     ./cmd/p2p-agent          'BenchmarkStartupToReady' 5x
echo "results in $out/" >&2
