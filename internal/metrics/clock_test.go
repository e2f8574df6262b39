package metrics

import (
	"math"
	"testing"
	"time"
)

// newTestTicks returns a counter clock regardless of the machine's clock
// source, anchoring every 20 ms, or skips where there is no counter.
func newTestTicks(t *testing.T) *tickClock {
	t.Helper()
	if !haveTicks {
		t.Skip("no time-stamp counter on this architecture")
	}
	c := newTickClock(true)
	c.every = 20 * time.Millisecond
	return c
}

// calibrate reads c until it has calibrated: after calibrateAfter, at the
// first pair of readings not interrupted.
func calibrate(t *testing.T, c *tickClock) {
	t.Helper()
	time.Sleep(calibrateAfter)
	for range 1000 {
		if c.now(); c.cal.Load() != nil {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
	t.Fatal("the counter clock did not calibrate in 1000 readings")
}

// TestTickClockTracksMonotonic: for 300 ms, with re-anchoring every 20 ms,
// every reading of the counter clock lies within 2 µs of the monotonic
// clock read between two of them (the bracket absorbs a preemption
// between the reads), and readings never go back by more than that.
func TestTickClockTracksMonotonic(t *testing.T) {
	c := newTestTicks(t)
	const tolerance = 2 * time.Microsecond
	var last time.Duration
	anchors := 0
	var lastCal *tickScale
	end := time.Now().Add(300 * time.Millisecond)
	for n := 0; time.Now().Before(end); n++ {
		a := c.now()
		mono := time.Since(clockBase)
		b := c.now()
		if mono < a-tolerance || mono > b+tolerance {
			t.Fatalf("reading %d: monotonic %v outside the counter's [%v, %v] ± %v", n, mono, a, b, tolerance)
		}
		if a < last-tolerance {
			t.Fatalf("reading %d went back %v", n, last-a)
		}
		last = b
		if sc := c.cal.Load(); sc != lastCal {
			anchors++
			lastCal = sc
		}
		time.Sleep(100 * time.Microsecond)
	}
	// 300 ms in 20 ms anchors, less the 10 ms of calibration.
	if anchors < 10 {
		t.Fatalf("%d anchors in 300 ms, want about 15", anchors)
	}
	if c.cal.Load() == nil {
		t.Fatal("the counter clock never calibrated")
	}
}

// TestTickClockMeasuresSleep: a 50 ms sleep measured with the counter
// clock (after calibration) is 50 ms, within the monotonic clock's own
// measurement of it.
func TestTickClockMeasuresSleep(t *testing.T) {
	c := newTestTicks(t)
	c.every = time.Second
	calibrate(t, c)
	for range 3 {
		m0 := time.Since(clockBase)
		a := c.now()
		time.Sleep(50 * time.Millisecond)
		b := c.now()
		m1 := time.Since(clockBase)
		got, outer := b-a, m1-m0
		if got < 50*time.Millisecond || got > outer+time.Microsecond {
			t.Fatalf("counter clock measured %v for a 50 ms sleep the monotonic clock put within %v", got, outer)
		}
	}
}

// TestTickClockJump: a counter reading that implies another scale (the
// counter jumped, a virtual machine moved) drops the calibration, and the
// clock reads the monotonic clock until it has measured the counter again.
func TestTickClockJump(t *testing.T) {
	c := newTestTicks(t)
	calibrate(t, c)
	sc := c.cal.Load()
	time.Sleep(calibrateAfter) // a scale can be measured from the last anchor
	// 10 s of ticks ahead of now.
	jumped := tickPair{ticks: readTicks() + int64(10*float64(time.Second)/sc.nsPerTick), ns: time.Since(clockBase)}
	c.anchorAt(jumped)
	if c.cal.Load() != nil {
		t.Fatal("a jump of 10 s kept the calibration")
	}
	if f := c.first.Load(); *f != jumped {
		t.Fatalf("measuring restarted from %+v, want the jumped reading %+v", *f, jumped)
	}
	// Until calibrateAfter has passed again, it reads the monotonic clock.
	a := time.Since(clockBase)
	got := c.now()
	if b := time.Since(clockBase); got < a || got > b {
		t.Fatalf("after a jump the clock read %v, monotonic [%v, %v]", got, a, b)
	}
}

// TestSinceNeverNegative: a start later than now (readings across a
// re-anchoring) observes 0, not a negative duration.
func TestSinceNeverNegative(t *testing.T) {
	if d := Since(Now() + time.Hour); d != 0 {
		t.Fatalf("Since a future reading = %v, want 0", d)
	}
}

// TestNowAgreesWithOf: Now and Of(time.Now()) read the same timeline.
func TestNowAgreesWithOf(t *testing.T) {
	t.Logf("clock source: %s", ClockSource())
	time.Sleep(2 * calibrateAfter)
	for range 100 {
		a := Now()
		m := Of(time.Now())
		b := Now()
		if m < a-2*time.Microsecond || m > b+2*time.Microsecond {
			t.Fatalf("Of(time.Now()) = %v outside Now's [%v, %v]", m, a, b)
		}
	}
}

// TestTickClockFollowsRate: the scale is measured between consecutive
// anchors, so when the monotonic clock's rate changes (NTP slewing it by
// 500 parts per million) the next anchor's scale is the new rate, not an
// average since the start; and an anchor's span is at most twice the
// time its scale was measured over.
func TestTickClockFollowsRate(t *testing.T) {
	c := newTestTicks(t)
	c.every = time.Second
	c.cal.Store(nil)
	c.first.Store(&tickPair{ticks: 1_000, ns: 0})

	c.anchorAt(tickPair{ticks: 1_000 + 2_000_000_000, ns: time.Second}) // 0.5 ns a tick
	sc := c.cal.Load()
	if sc == nil || sc.nsPerTick != 0.5 || sc.span != 2_000_000_000 {
		t.Fatalf("first anchor: %+v, want 0.5 ns a tick over a span of 2e9 ticks (1 s)", sc)
	}
	c.anchorAt(tickPair{ticks: 1_000 + 4_000_000_000, ns: 2*time.Second + 500*time.Microsecond})
	sc = c.cal.Load()
	if want := 0.50025; sc == nil || math.Abs(sc.nsPerTick-want) > 1e-12 {
		t.Fatalf("after a 500 ppm change of rate: %+v, want %v ns a tick", sc, want)
	}
	// An anchor 20 ms after the last spans at most 40 ms.
	c.anchorAt(tickPair{ticks: 1_000 + 4_040_000_000, ns: 2*time.Second + 20500*time.Microsecond})
	sc = c.cal.Load()
	if got := float64(sc.span) * sc.nsPerTick; got > float64(40*time.Millisecond)+1 {
		t.Fatalf("an anchor measured over 20 ms spans %v ns, want at most 40 ms", got)
	}
}
