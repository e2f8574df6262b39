package metrics

// haveTicks: amd64 has the time-stamp counter.
const haveTicks = true

// readTicks returns the time-stamp counter (RDTSC). It is not serialising:
// it may be read some instructions early or late, a few nanoseconds on the
// durations it measures.
//
//go:noescape
func readTicks() int64
