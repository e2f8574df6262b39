package metrics

import (
	"math"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// clockBase anchors Now. time.Since(clockBase) reads only the monotonic
// clock, where time.Now also reads the wall clock: on a virtual machine each
// clock read costs tens of nanoseconds, and the two reads around an operation
// are most of the cost of recording it.
var clockBase = time.Now()

// Now returns a monotonic timestamp for measuring durations: pair it with
// Since. The value itself means nothing outside this process.
//
// Where the kernel itself keeps time with the CPU's time-stamp counter
// (see ticks), Now reads that counter directly and scales it, a third of
// the cost of the runtime's clock read on the virtual machines measured;
// it is kept within about a microsecond of the monotonic clock by
// re-anchoring at least every second, so its values mix freely with Of and
// Time.
func Now() time.Duration {
	if ticks.ok {
		return ticks.now()
	}
	return time.Since(clockBase)
}

// Since returns the seconds elapsed since start (a value of Now), at
// nanosecond precision, never rounded: what duration histograms observe.
// It is never negative (two readings across a re-anchoring of Now may be
// out of order by some nanoseconds).
func Since(start time.Duration) float64 { return Seconds(max(Now()-start, 0)) }

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

// ClockSource names what Now reads: "tsc" (the time-stamp counter, scaled)
// or "monotonic" (the runtime's monotonic clock).
func ClockSource() string {
	if ticks.ok {
		return "tsc"
	}
	return "monotonic"
}

// tickClock turns time-stamp counter readings into Now values. Each anchor
// pairs a counter reading with the monotonic clock; the scale is measured
// between the previous anchor and this one, so it follows the monotonic
// clock's own rate (which NTP may slew by up to 500 parts per million), and
// Now re-anchors whenever a reading is past the current anchor's span: at
// most anchorEvery, and at most twice the time the scale was measured over,
// so that between anchors the clocks part by at most about twice the error
// of one pair of readings (tens of nanoseconds) plus what a change in the
// monotonic clock's rate makes of one span.
type tickClock struct {
	ok    bool          // the counter is usable; set once, before any Now
	every time.Duration // anchorEvery, shorter in tests

	// first pairs a counter reading with the monotonic clock: the last
	// anchor, or the start (of the process, or after the counter jumped).
	first atomic.Pointer[tickPair]
	cal   atomic.Pointer[tickScale] // nil until calibrateAfter has passed
}

// tickPair is a counter reading and the monotonic clock read beside it.
type tickPair struct {
	ticks int64
	ns    time.Duration
}

// tickScale is one anchor: Now = ns0 + (ticks - ticks0) * nsPerTick for
// ticks in [ticks0, ticks0+span).
type tickScale struct {
	ticks0    int64
	ns0       time.Duration
	nsPerTick float64
	span      int64
}

const (
	// calibrateAfter is how long Now reads the monotonic clock before it
	// first trusts a scale measured over that time.
	calibrateAfter = 10 * time.Millisecond
	// anchorEvery is how often, at most, Now reads the monotonic clock
	// again to re-anchor.
	anchorEvery = time.Second
	// maxScaleChange is how far a new scale may differ from the last one
	// before the counter is taken to have jumped (a virtual machine moved
	// to another host, say) and is measured again from scratch.
	maxScaleChange = 1e-3
	// maxBracket is the most counter ticks a monotonic clock read may
	// take for the pair to be used (1 to 5 µs at the counter rates of
	// 1 to 5 GHz, where a read takes 20 to 50 ns): a wider one was
	// interrupted.
	maxBracket = 5000
)

var ticks = newTickClock(ticksUsable())

func newTickClock(ok bool) *tickClock {
	c := &tickClock{ok: ok, every: anchorEvery}
	if ok {
		for range 10 {
			if p, tight := readPair(); tight {
				c.first.Store(&p)
				return c
			}
		}
		c.ok = false // never a tight pair: keep to the monotonic clock
	}
	return c
}

// readPair reads the monotonic clock between two counter readings, three
// times, and pairs the reading with the narrowest bracket with its
// midpoint (an interrupt or a virtual machine's exit inside one bracket
// would put the pair off by microseconds); tight reports that the two
// counter readings were close.
func readPair() (p tickPair, tight bool) {
	best := int64(math.MaxInt64)
	for range 3 {
		t1 := readTicks()
		ns := time.Since(clockBase)
		t2 := readTicks()
		if w := t2 - t1; w >= 0 && w < best {
			best, p = w, tickPair{ticks: t1 + w/2, ns: ns}
		}
	}
	return p, best <= maxBracket
}

// now is Now from the counter.
func (c *tickClock) now() time.Duration {
	t := readTicks()
	if sc := c.cal.Load(); sc != nil {
		if d := t - sc.ticks0; d >= 0 && d < sc.span {
			return sc.ns0 + time.Duration(float64(d)*sc.nsPerTick)
		}
	}
	return c.anchor()
}

// anchor reads the monotonic clock, for a counter reading outside the
// current anchor's span (or before there is one), and publishes a new
// anchor once the scale can be trusted.
func (c *tickClock) anchor() time.Duration {
	p, tight := readPair()
	if tight {
		c.anchorAt(p)
	}
	return p.ns
}

// anchorAt publishes the anchor p, when the time since the last one is
// long enough to measure the scale; or starts measuring again when the
// counter went back or jumped.
func (c *tickClock) anchorAt(p tickPair) {
	first := c.first.Load()
	elapsed, dt := p.ns-first.ns, p.ticks-first.ticks
	if elapsed < calibrateAfter {
		return
	}
	nsPerTick := float64(elapsed) / float64(dt)
	prev := c.cal.Load()
	if dt <= 0 || prev != nil && math.Abs(nsPerTick/prev.nsPerTick-1) > maxScaleChange {
		c.cal.Store(nil)
		c.first.Store(&p)
		return
	}
	c.cal.Store(&tickScale{
		ticks0:    p.ticks,
		ns0:       p.ns,
		nsPerTick: nsPerTick,
		span:      int64(float64(min(c.every, 2*elapsed)) / nsPerTick),
	})
	c.first.Store(&p)
}

// ticksUsable reports whether this machine's time-stamp counter can stand
// in for the monotonic clock: the architecture has one, and the kernel
// keeps time with it (it moves to another clock source when it finds the
// counter unstable or unsynchronised across CPUs, and then so does the
// node, at its next start).
func ticksUsable() bool {
	if !haveTicks {
		return false
	}
	b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	return err == nil && strings.TrimSpace(string(b)) == "tsc"
}
