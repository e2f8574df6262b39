package metrics

import (
	"fmt"
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

// scale returns the current anchor's nanoseconds per tick (0: none).
func (c *tickClock) scale() float64 { return math.Float64frombits(c.nsPerTick.Load()) }

// anchorAtLocked is anchorAt with c.mu taken.
func (c *tickClock) anchorAtLocked(p tickPair) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.anchorAt(p)
}

// calibrate reads c until it has calibrated: after calibrateAfter, at the
// first pair of readings not interrupted.
func calibrate(t *testing.T, c *tickClock) {
	t.Helper()
	time.Sleep(calibrateAfter)
	for range 1000 {
		if c.now(); c.scale() != 0 {
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
	var lastAnchor int64
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
		if t0 := c.ticks0.Load(); t0 != lastAnchor {
			anchors++
			lastAnchor = t0
		}
		time.Sleep(100 * time.Microsecond)
	}
	// 300 ms in 20 ms anchors, less the 10 ms of calibration.
	if anchors < 10 {
		t.Fatalf("%d anchors in 300 ms, want about 15", anchors)
	}
	if c.scale() == 0 {
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
	k := c.scale()
	time.Sleep(calibrateAfter) // a scale can be measured from the last anchor
	// 10 s of ticks ahead of now.
	jumped := tickPair{ticks: readTicks() + int64(10*float64(time.Second)/k), ns: time.Since(clockBase)}
	c.anchorAtLocked(jumped)
	if c.scale() != 0 {
		t.Fatal("a jump of 10 s kept the calibration")
	}
	if f := c.first; f != jumped {
		t.Fatalf("measuring restarted from %+v, want the jumped reading %+v", f, jumped)
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
	if d := Elapsed(time.Second, time.Second-time.Microsecond); d != 0 {
		t.Fatalf("Elapsed with an end before its start = %v, want 0", d)
	}
	if d := Elapsed(time.Second, time.Second+1500*time.Nanosecond); d != 1.5e-6 {
		t.Fatalf("Elapsed 1.5 µs apart = %v, want 1.5e-06", d)
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
	c.publish(0, 0, 0, 0)
	c.first = tickPair{ticks: 1_000, ns: 0}

	c.anchorAtLocked(tickPair{ticks: 1_000 + 2_000_000_000, ns: time.Second}) // 0.5 ns a tick
	if k, span := c.scale(), c.span.Load(); k != 0.5 || span != 2_000_000_000 {
		t.Fatalf("first anchor: %v ns a tick over %d ticks, want 0.5 over 2e9 (1 s)", k, span)
	}
	c.anchorAtLocked(tickPair{ticks: 1_000 + 4_000_000_000, ns: 2*time.Second + 500*time.Microsecond})
	if k, want := c.scale(), 0.50025; math.Abs(k-want) > 1e-12 {
		t.Fatalf("after a 500 ppm change of rate: %v ns a tick, want %v", k, want)
	}
	// An anchor 20 ms after the last spans at most 40 ms.
	c.anchorAtLocked(tickPair{ticks: 1_000 + 4_040_000_000, ns: 2*time.Second + 20500*time.Microsecond})
	if got := float64(c.span.Load()) * c.scale(); got > float64(40*time.Millisecond)+1 {
		t.Fatalf("an anchor measured over 20 ms spans %v ns, want at most 40 ms", got)
	}
}

// TestTickClockDoesNotAllocate: reading the counter clock allocates
// nothing, anchoring included (recording must never allocate), from the
// first reading on.
func TestTickClockDoesNotAllocate(t *testing.T) {
	c := newTestTicks(t)
	if n := testing.AllocsPerRun(1000, func() { c.now() }); n != 0 {
		t.Fatalf("now before calibration: %v allocations, want 0", n)
	}
	calibrate(t, c)
	if n := testing.AllocsPerRun(1000, func() { c.anchor() }); n != 0 {
		t.Fatalf("anchoring: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { Now() }); n != 0 {
		t.Fatalf("Now: %v allocations, want 0", n)
	}
}

// TestTickClockConcurrent: four goroutines read the counter clock for
// 200 ms while it re-anchors every 20 ms (one anchors, the others read
// the monotonic clock meanwhile); every reading stays within 2 µs of the
// monotonic clock read between two of them.
func TestTickClockConcurrent(t *testing.T) {
	c := newTestTicks(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			end := time.Now().Add(200 * time.Millisecond)
			for time.Now().Before(end) {
				a := c.now()
				mono := time.Since(clockBase)
				b := c.now()
				if mono < a-2*time.Microsecond || mono > b+2*time.Microsecond {
					errs <- fmt.Errorf("monotonic %v outside the counter's [%v, %v]", mono, a, b)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
