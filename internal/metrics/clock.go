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
func Since(start time.Duration) float64 { return Seconds(Now() - start) }

// Seconds returns d in seconds: the float nearest to d/1e9 (one correctly
// rounded division, exact in its input below 2^53 ns, 104 days), where
// time.Duration.Seconds adds whole seconds and the nanoseconds' fraction,
// two roundings and 9 ns more on this machine's recording path.
func Seconds(d time.Duration) float64 { return float64(d) / 1e9 }

// Time returns the time.Time of a Now reading. It carries the monotonic
// clock, so deadlines and durations computed from it are exact; its wall
// clock is the process start's plus the monotonic time since.
func Time(now time.Duration) time.Time { return clockBase.Add(now) }

// Of returns the Now reading of t, which must carry the monotonic clock
// (a time.Now value not stripped by UTC, Round or similar), without reading
// the clock again.
func Of(t time.Time) time.Duration { return t.Sub(clockBase) }
