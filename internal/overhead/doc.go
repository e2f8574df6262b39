// Package overhead holds BenchmarkInstrumentationOverhead: what the metrics
// cost on every instrumented path (the storage decorator around a do-nothing
// store, Pebble and Redis; the message middleware on a real libp2p ping),
// each measured raw and instrumented in the same run. That recording
// allocates nothing is asserted next to the code: TestInstrumentDoesNotAllocate
// (internal/storage) and TestMetricsMiddlewareDoesNotAllocate (internal/p2p).
// It has no non-test code.
package overhead
