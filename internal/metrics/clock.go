package metrics

import "time"

// clockBase anchors Now. time.Since(clockBase) reads only the monotonic
// clock, where time.Now also reads the wall clock: on a virtual machine each
// clock read costs tens of nanoseconds, and the two reads around an operation
// are most of the cost of recording it.
var clockBase = time.Now()

// Now returns a monotonic timestamp for measuring durations: pair it with
// Since. The value itself means nothing outside this process.
func Now() time.Duration { return time.Since(clockBase) }

// Since returns the seconds elapsed since start (a value of Now), at
// nanosecond precision, never rounded: what duration histograms observe.
func Since(start time.Duration) float64 { return (Now() - start).Seconds() }
