package metrics

import (
	"math"
	"os"
	"strings"
	"sync"
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
func Since(start time.Duration) float64 { return Elapsed(start, Now()) }

// Elapsed returns the seconds from start to end (values of Now or Of), as
// Since does, and never negative: Now and Of may disagree by some
// nanoseconds where Now reads the time-stamp counter.
func Elapsed(start, end time.Duration) float64 { return Seconds(max(end-start, 0)) }

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

	// The current anchor: Now = ns0 + (ticks - ticks0) * nsPerTick for
	// ticks in [ticks0, ticks0+span). It is published under a sequence
	// lock (seq is odd while it is written, and a reader that sees it
	// change reads the monotonic clock instead), so anchoring allocates
	// nothing and recording stays free of allocations. nsPerTick is a
	// float64's bits; 0 means no anchor yet (or since the counter jumped).
	seq       atomic.Uint64
	ticks0    atomic.Int64
	ns0       atomic.Int64
	nsPerTick atomic.Uint64
	span      atomic.Int64

	mu    sync.Mutex // held while anchoring (others read the monotonic clock)
	first tickPair   // the last anchor, or the start: what the scale is measured from
}

// tickPair is a counter reading and the monotonic clock read beside it.
type tickPair struct {
	ticks int64
	ns    time.Duration
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
				c.first = p
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
	if seq := c.seq.Load(); seq&1 == 0 {
		t0, ns0, span := c.ticks0.Load(), c.ns0.Load(), c.span.Load()
		k := math.Float64frombits(c.nsPerTick.Load())
		if d := t - t0; k != 0 && d >= 0 && d < span && c.seq.Load() == seq {
			return time.Duration(ns0) + time.Duration(float64(d)*k)
		}
	}
	return c.anchor()
}

// anchor reads the monotonic clock, for a counter reading outside the
// current anchor's span (or before there is one, or while another caller
// anchors), and anchors at it unless another caller is doing so.
func (c *tickClock) anchor() time.Duration {
	p, tight := readPair()
	if tight && c.mu.TryLock() {
		c.anchorAt(p)
		c.mu.Unlock()
	}
	return p.ns
}

// anchorAt publishes the anchor p, with c.mu held, when the time since the
// last one is long enough to measure the scale; or starts measuring again
// when the counter went back or jumped.
func (c *tickClock) anchorAt(p tickPair) {
	elapsed, dt := p.ns-c.first.ns, p.ticks-c.first.ticks
	if elapsed < calibrateAfter {
		return
	}
	nsPerTick := float64(elapsed) / float64(dt)
	prev := math.Float64frombits(c.nsPerTick.Load())
	c.first = p
	if dt <= 0 || prev != 0 && math.Abs(nsPerTick/prev-1) > maxScaleChange {
		c.publish(0, 0, 0, 0)
		return
	}
	c.publish(p.ticks, p.ns, nsPerTick, int64(float64(min(c.every, 2*elapsed))/nsPerTick))
}

// publish replaces the anchor (nsPerTick 0: none), with c.mu held.
func (c *tickClock) publish(ticks0 int64, ns0 time.Duration, nsPerTick float64, span int64) {
	c.seq.Add(1)
	c.ticks0.Store(ticks0)
	c.ns0.Store(int64(ns0))
	c.nsPerTick.Store(math.Float64bits(nsPerTick))
	c.span.Store(span)
	c.seq.Add(1)
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
