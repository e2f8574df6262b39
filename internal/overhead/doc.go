// Package overhead holds BenchmarkInstrumentationOverhead: what the metrics
// cost on every instrumented path (the storage decorator around a do-nothing
// store, Pebble and Redis; the message middleware on a real libp2p ping),
// each measured by interleaved rounds of raw, instrumented and raw again (an
// A/A control) in one run. That recording
// allocates nothing is asserted next to the code: TestInstrumentDoesNotAllocate
// (internal/storage) and TestMetricsMiddlewareDoesNotAllocate
// (internal/p2p/message).
// It has no non-test code.
package overhead
