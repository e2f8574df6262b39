package metrics

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// gather registers c alone on a pedantic registry (which checks the
// exposition's consistency) and gathers it.
func gather(t testing.TB, c prometheus.Collector) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func text(t testing.TB, mfs []*dto.MetricFamily) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// compareHistograms fails unless the two gatherings hold the same
// histograms, field by field (creation timestamps and exemplar timestamps
// aside), and the same text exposition byte for byte.
func compareHistograms(t *testing.T, ours, theirs []*dto.MetricFamily) {
	t.Helper()
	if a, b := text(t, ours), text(t, theirs); !bytes.Equal(a, b) {
		t.Fatalf("text expositions differ:\nours:\n%s\nclient_golang:\n%s", a, b)
	}
	if len(ours) != len(theirs) {
		t.Fatalf("%d families, client_golang %d", len(ours), len(theirs))
	}
	for i := range ours {
		if len(ours[i].Metric) != len(theirs[i].Metric) {
			t.Fatalf("%s: %d metrics, client_golang %d", ours[i].GetName(), len(ours[i].Metric), len(theirs[i].Metric))
		}
		for j := range ours[i].Metric {
			a, b := comparable(ours[i].Metric[j]), comparable(theirs[i].Metric[j])
			if !proto.Equal(a, b) {
				t.Fatalf("%s %v differs from client_golang's: %s", ours[i].GetName(), a.GetLabel(), histDiff(a.GetHistogram(), b.GetHistogram()))
			}
		}
	}
}

// comparable returns a copy of m without what legitimately differs: the
// creation timestamp, exemplar timestamps, client_golang's separate list of
// native exemplars; a NaN sum becomes a marker (proto.Equal holds NaN unequal).
func comparable(m *dto.Metric) *dto.Metric {
	m = proto.Clone(m).(*dto.Metric)
	h := m.GetHistogram()
	h.CreatedTimestamp = nil
	h.Exemplars = nil
	for _, b := range h.Bucket {
		if b.Exemplar != nil {
			b.Exemplar.Timestamp = nil
		}
	}
	if math.IsNaN(h.GetSampleSum()) {
		h.SampleSum = proto.Float64(-12345)
	}
	for _, b := range h.Bucket {
		if b.Exemplar != nil { // client_golang's label order is a map's
			slices.SortFunc(b.Exemplar.Label, func(x, y *dto.LabelPair) int { return strings.Compare(x.GetName(), y.GetName()) })
		}
	}
	return m
}

// histDiff describes the first difference between two histograms.
func histDiff(a, b *dto.Histogram) string {
	switch {
	case a.GetSampleCount() != b.GetSampleCount():
		return fmt.Sprintf("count %d, want %d", a.GetSampleCount(), b.GetSampleCount())
	case math.Float64bits(a.GetSampleSum()) != math.Float64bits(b.GetSampleSum()):
		return fmt.Sprintf("sum %v, want %v", a.GetSampleSum(), b.GetSampleSum())
	case !proto.Equal(&dto.Histogram{Bucket: a.Bucket}, &dto.Histogram{Bucket: b.Bucket}):
		return fmt.Sprintf("classic buckets %v, want %v", a.Bucket, b.Bucket)
	case a.Schema == nil != (b.Schema == nil) || a.GetSchema() != b.GetSchema():
		return fmt.Sprintf("schema %v, want %v", a.Schema, b.Schema)
	case a.GetZeroThreshold() != b.GetZeroThreshold() || a.GetZeroCount() != b.GetZeroCount():
		return fmt.Sprintf("zero bucket %v: %d, want %v: %d", a.GetZeroThreshold(), a.GetZeroCount(), b.GetZeroThreshold(), b.GetZeroCount())
	}
	for _, side := range []struct {
		name   string
		as, bs []*dto.BucketSpan
		ad, bd []int64
	}{
		{"positive", a.PositiveSpan, b.PositiveSpan, a.PositiveDelta, b.PositiveDelta},
		{"negative", a.NegativeSpan, b.NegativeSpan, a.NegativeDelta, b.NegativeDelta},
	} {
		am, bm := nativeOf(side.as, side.ad), nativeOf(side.bs, side.bd)
		for k := range union(am, bm) {
			if am[k] != bm[k] {
				return fmt.Sprintf("%s bucket %d: %d, want %d", side.name, k, am[k], bm[k])
			}
		}
		if !proto.Equal(&dto.Histogram{PositiveSpan: side.as, PositiveDelta: side.ad}, &dto.Histogram{PositiveSpan: side.bs, PositiveDelta: side.bd}) {
			return fmt.Sprintf("same %s buckets, encoded differently:\n%v %v\nwant\n%v %v", side.name, side.as, side.ad, side.bs, side.bd)
		}
	}
	return "elsewhere"
}

func union(a, b map[int]int64) map[int]bool {
	u := map[int]bool{}
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return u
}

func nextUp(v float64) float64   { return math.Nextafter(v, math.Inf(+1)) }
func nextDown(v float64) float64 { return math.Nextafter(v, math.Inf(-1)) }

// withNeighbours returns vs, each followed by the floats just below and
// above it.
func withNeighbours(vs ...float64) []float64 {
	var out []float64
	for _, v := range vs {
		out = append(out, v, nextDown(v), nextUp(v))
	}
	return out
}

// durations returns the observations of the equivalence tests for schema
// s and classic bounds upper: zero, tiny values, values on (and next to)
// the classic bounds, the native bounds of s in a few powers of two and the
// edges of the native array, microseconds to seconds, large values, and
// random durations (fixed seed).
func durations(s int32, upper []float64, exps []int) []float64 {
	vs := []float64{0, 1e-300, 1e-20, 1e-12, 1e-9}
	vs = append(vs, withNeighbours(math.Ldexp(1, -128), math.Ldexp(1, nativeMinExp), math.Ldexp(1, nativeMaxExp))...)
	return append(vs, realistic(s, upper, exps, 2)...)
}

// realistic returns the observations of durations without the extremes:
// classic and native bounds, microseconds to seconds, random durations
// whose logarithm has standard deviation sigma.
func realistic(s int32, upper []float64, exps []int, sigma float64) []float64 {
	vs := []float64{0}
	vs = append(vs, withNeighbours(upper...)...)
	for _, e := range exps {
		for _, b := range fracBounds(s) {
			// Beside each native bound, not on it: client_golang's table
			// of bounds differs from ours by a few ulp (see nativeBounds8).
			v := math.Ldexp(b, e)
			vs = append(vs, v*(1-1e-12), v*(1+1e-12))
		}
	}
	for d := 1e-6; d <= 10; d *= 1.7 {
		vs = append(vs, d)
	}
	if sigma > 1 {
		vs = append(vs, 1e6, 1e9, 1e15, 1e300, math.MaxFloat64)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		vs = append(vs, math.Exp(r.NormFloat64()*sigma-9)) // median 123 µs
	}
	return vs
}

// odd are the observations that only the slow path takes.
var odd = []float64{math.Copysign(0, -1), -1e-300, -1e-6, -0.003, -2.5, -1e9, math.Inf(+1), math.Inf(-1), -math.MaxFloat64, math.NaN(), 0.5}

// TestHistogramMatchesClientGolang feeds the same observations into
// client_golang's HistogramVec and ours, built from the same options, and
// requires the same text exposition byte for byte and the same protobuf
// histograms: count, sum, classic buckets, schema, zero threshold and count,
// spans and deltas.
func TestHistogramMatchesClientGolang(t *testing.T) {
	storage := durationOpts("storage_operation_duration_seconds", "Storage.", StorageBuckets)
	cases := []struct {
		name string
		opts prometheus.HistogramOpts
		exps []int // powers of two whose native bounds are observed
	}{
		// Within its limit of 160 buckets (checked below).
		{"production storage options", storage, []int{-12}},
		{"classic only", prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: MessageBuckets}, []int{-3}},
		{"classic only, default buckets", prometheus.HistogramOpts{Name: "h", Help: "h"}, []int{-3}},
		{"native only", prometheus.HistogramOpts{Name: "h", Help: "h", NativeHistogramBucketFactor: 1.1}, []int{-10, 0}},
		{"name parts, const labels, +Inf bound", prometheus.HistogramOpts{
			Namespace: "ns", Subsystem: "sub", Name: "h", Help: "h",
			ConstLabels: prometheus.Labels{"node": "a"}, Buckets: []float64{0.001, 0.1, math.Inf(+1)},
			NativeHistogramBucketFactor: 1.1,
		}, []int{-10}},
		{"zero threshold 1e-6", prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: TaskBuckets,
			NativeHistogramBucketFactor: 1.1, NativeHistogramZeroThreshold: 1e-6}, []int{-20, -19, -5}},
		{"zero threshold zero", prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: TaskBuckets,
			NativeHistogramBucketFactor: 1.1, NativeHistogramZeroThreshold: prometheus.NativeHistogramZeroThresholdZero}, []int{-5}},
	}
	for s := int32(nativeSchemaMin); s <= nativeSchemaMax; s++ {
		factor := math.Exp2(math.Exp2(-float64(s)))
		exps := []int{-39, -20, -9, 0, 1, 23, 24}
		if s >= 6 {
			exps = []int{-20, -9, 0}
		}
		cases = append(cases,
			struct {
				name string
				opts prometheus.HistogramOpts
				exps []int
			}{fmt.Sprintf("factor %g (schema %d)", factor, pickSchema(factor)), prometheus.HistogramOpts{
				Name: "h", Help: "h", Buckets: StorageBuckets, NativeHistogramBucketFactor: factor,
			}, exps},
			struct {
				name string
				opts prometheus.HistogramOpts
				exps []int
			}{fmt.Sprintf("factor %g (schema %d)", factor*1.0001, s), prometheus.HistogramOpts{
				Name: "h", Help: "h", Buckets: StorageBuckets, NativeHistogramBucketFactor: factor * 1.0001,
			}, exps[:1]})
	}
	cases = append(cases, struct {
		name string
		opts prometheus.HistogramOpts
		exps []int
	}{"factor below schema 8's", prometheus.HistogramOpts{Name: "h", Help: "h", NativeHistogramBucketFactor: 1.0001}, []int{-9}})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ours := NewHistogramVec(c.opts, []string{"op"})
			theirs := prometheus.NewHistogramVec(c.opts, []string{"op"})
			schema := int32(0)
			if c.opts.NativeHistogramBucketFactor > 1 {
				schema = pickSchema(c.opts.NativeHistogramBucketFactor)
			}
			// An empty child, one with every kind of duration, one with
			// values only the slow path takes.
			ours.WithLabelValues("empty")
			theirs.WithLabelValues("empty")
			vs := durations(schema, c.opts.Buckets, c.exps)
			if c.opts.NativeHistogramMaxBucketNumber > 0 {
				vs = realistic(schema, c.opts.Buckets, c.exps, 0.5)
			}
			for _, v := range vs {
				ours.WithLabelValues("durations").Observe(v)
				theirs.WithLabelValues("durations").Observe(v)
			}
			for _, v := range odd {
				ours.WithLabelValues("odd").Observe(v)
				theirs.WithLabelValues("odd").Observe(v)
			}
			mine, cg := gather(t, ours), gather(t, theirs)
			compareHistograms(t, mine, cg)
			if c.opts.NativeHistogramMaxBucketNumber > 0 {
				// The equality above must not come from two reductions.
				for _, m := range mine[0].Metric {
					if got := m.GetHistogram().GetSchema(); got != schema {
						t.Fatalf("%v: schema %d exposed, want %d: the case exceeds the bucket limit", m.GetLabel(), got, schema)
					}
				}
			}
			// And again after more observations: a second scrape.
			for _, v := range vs[:100] {
				ours.WithLabelValues("durations").Observe(v * 3)
				theirs.WithLabelValues("durations").Observe(v * 3)
			}
			compareHistograms(t, gather(t, ours), gather(t, theirs))
		})
	}
}

// TestNativeKeyFastPath: the key Observe computes from the bits of a value
// is the key of the reference computation, itself checked against
// client_golang above, for every bound of every schema in several powers of
// two, their neighbours and random values.
func TestNativeKeyFastPath(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for s := int32(nativeSchemaMin); s <= nativeSchemaMax; s++ {
		// Exactly 2^(2^-s) may round below it, and pick s+1.
		l := newHistLayout(nil, prometheus.HistogramOpts{NativeHistogramBucketFactor: math.Exp2(math.Exp2(-float64(s))) * 1.000001})
		if l.schema != s {
			t.Fatalf("factor for schema %d picked schema %d", s, l.schema)
		}
		var vs []float64
		for e := nativeMinExp - 1; e <= nativeMaxExp+1; e++ {
			for _, b := range fracBounds(8) {
				vs = append(vs, withNeighbours(math.Ldexp(b, e))...)
			}
			vs = append(vs, withNeighbours(math.Ldexp(1, e))...)
		}
		for range 100000 {
			vs = append(vs, math.Ldexp(r.Float64(), r.IntN(nativeMaxExp-nativeMinExp+4)+nativeMinExp-2))
		}
		for _, v := range vs {
			if v <= 0 {
				continue
			}
			if got, want := l.fast.key(v), nativeKey(v, s, l.bounds); got != want {
				t.Fatalf("schema %d, %v (%x): fast key %d, want %d", s, v, math.Float64bits(v), got, want)
			}
		}
		// The reference itself: a bucket's upper bound is in it, the next
		// float is in the next bucket (at schema s >= 0, where every bound
		// of l.bounds is a bucket's).
		for e := -30; e <= 10 && s >= 0; e++ {
			for _, b := range l.bounds {
				v := math.Ldexp(b, e)
				if k, next := nativeKey(v, s, l.bounds), nativeKey(nextUp(v), s, l.bounds); next != k+1 {
					t.Fatalf("schema %d: bound %v in bucket %d, the next float in %d", s, v, k, next)
				}
			}
		}
	}
}

// TestPickSchema: the schema of a factor, as client_golang documents it.
func TestPickSchema(t *testing.T) {
	for _, c := range []struct {
		factor float64
		want   int32
	}{
		{1.0001, 8}, {1.00271, 8}, {1.0028, 8}, {1.006, 7}, {1.1, 3}, {math.Exp2(1.0 / 8), 3}, {nextDown(math.Exp2(1.0 / 8)), 4},
		{2, 0}, {3.99, 0}, {4, -1}, {65536, -4}, {1e9, -4},
	} {
		if got := pickSchema(c.factor); got != c.want {
			t.Errorf("pickSchema(%v) = %d, want %d", c.factor, got, c.want)
		}
	}
}

// nativeOf returns the populated native buckets of h (one side), keyed.
func nativeOf(spans []*dto.BucketSpan, deltas []int64) map[int]int64 {
	m := map[int]int64{}
	key, i, count := 0, 0, int64(0)
	for n, s := range spans {
		if n == 0 {
			key = int(s.GetOffset())
		} else {
			key += int(s.GetOffset())
		}
		for range s.GetLength() {
			count += deltas[i]
			i++
			if count != 0 {
				m[key] = count
			}
			key++
		}
	}
	return m
}

func nativeTotal(h *dto.Histogram) uint64 {
	total := h.GetZeroCount()
	for _, c := range nativeOf(h.GetPositiveSpan(), h.GetPositiveDelta()) {
		total += uint64(c)
	}
	for _, c := range nativeOf(h.GetNegativeSpan(), h.GetNegativeDelta()) {
		total += uint64(c)
	}
	return total
}

func writeHist(t testing.TB, h *Histogram) *dto.Histogram {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram()
}

// TestSchemaReduction: observations spread over more native buckets than
// NativeHistogramMaxBucketNumber are exposed at a lower schema, with at most
// that many buckets, the count unchanged and every exposed bucket holding
// exactly the buckets of the full resolution it covers (bucket k of schema
// s-1 covers buckets 2k-1 and 2k of schema s).
func TestSchemaReduction(t *testing.T) {
	const max = 20
	opts := prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: StorageBuckets, NativeHistogramBucketFactor: 1.1}
	full := NewHistogram(opts) // no limit
	opts.NativeHistogramMaxBucketNumber = max
	limited := NewHistogram(opts)
	theirs := prometheus.NewHistogram(opts)
	// Ascending durations from 1 µs to 1 s, 3 per native bucket of schema 3
	// (about 160 buckets), and a few negative ones: each adds at most one
	// bucket, so client_golang, which halves its resolution when an
	// observation exceeds the limit, ends at the same schema.
	var vs []float64
	for v := 1e-6; v < 1; v *= math.Exp2(1.0 / 24) {
		vs = append(vs, v)
	}
	vs = append(vs, -1e-3, -2e-3, -1)
	for _, v := range vs {
		full.Observe(v)
		limited.Observe(v)
		theirs.Observe(v)
	}
	f, l := writeHist(t, full), writeHist(t, limited)
	if f.GetSchema() != 3 {
		t.Fatalf("unlimited: schema %d, want 3", f.GetSchema())
	}
	fullPos := nativeOf(f.GetPositiveSpan(), f.GetPositiveDelta())
	fullNeg := nativeOf(f.GetNegativeSpan(), f.GetNegativeDelta())
	if len(fullPos)+len(fullNeg) <= max*4 {
		t.Fatalf("only %d buckets at full resolution: not enough to need two halvings", len(fullPos)+len(fullNeg))
	}
	pos := nativeOf(l.GetPositiveSpan(), l.GetPositiveDelta())
	neg := nativeOf(l.GetNegativeSpan(), l.GetNegativeDelta())
	if n := len(pos) + len(neg); n > max {
		t.Fatalf("%d buckets exposed, limit %d", n, max)
	}
	if l.GetSchema() > 1 {
		t.Fatalf("schema %d exposed: expected at least two halvings from 3", l.GetSchema())
	}
	if l.GetSampleCount() != uint64(len(vs)) || f.GetSampleCount() != uint64(len(vs)) || nativeTotal(l) != uint64(len(vs)) {
		t.Fatalf("count %d (native total %d), unlimited %d, want %d", l.GetSampleCount(), nativeTotal(l), f.GetSampleCount(), len(vs))
	}
	// Merge the full resolution down to the exposed schema by hand.
	for side, pair := range map[string][2]map[int]int64{"positive": {fullPos, pos}, "negative": {fullNeg, neg}} {
		want := map[int]int64{}
		for k, c := range pair[0] {
			for range 3 - l.GetSchema() {
				k = int(math.Ceil(float64(k) / 2))
			}
			want[k] += c
		}
		if len(want) != len(pair[1]) {
			t.Fatalf("%s: %d buckets, want %d", side, len(pair[1]), len(want))
		}
		for k, c := range want {
			if pair[1][k] != c {
				t.Fatalf("%s bucket %d at schema %d: %d, want %d (the sum of the buckets it covers)", side, k, l.GetSchema(), pair[1][k], c)
			}
		}
	}
	// The classic buckets do not change.
	if !proto.Equal(&dto.Histogram{Bucket: f.Bucket}, &dto.Histogram{Bucket: l.Bucket}) {
		t.Fatal("classic buckets differ between the limited and the unlimited histogram")
	}
	compareHistograms(t, gather(t, limited), gather(t, theirs))
}

// TestConcurrentScrapes: goroutines observe while another scrapes without
// pause. Every scrape must be a histogram Prometheus accepts: the count
// equal to the total of the native buckets (the sum is never NaN here), the
// classic cumulative counts non-decreasing and at most the count; counts
// never decrease from a scrape to the next. At the end every count is exact.
func TestConcurrentScrapes(t *testing.T) {
	const (
		goroutines = 4
		each       = 10000 // observations a round
		minScrapes = 200
	)
	opts := durationOpts("storage_operation_duration_seconds", "Storage.", StorageBuckets)
	vec := NewHistogramVec(opts, []string{"op"})
	h := vec.WithLabelValues("get")
	ref := NewHistogram(opts) // the same observations, one goroutine
	// Durations, zeros and the slow path (tiny, large, negative).
	value := func(g, i int) float64 {
		switch i % 97 {
		case 0:
			return 0
		case 1:
			return -math.Ldexp(float64(i%5+1), -20)
		case 2:
			return 1e-15 // below the array, above the zero threshold
		case 3:
			return math.Ldexp(1, 25) // above the array
		}
		return math.Ldexp(float64((g*each+i)%(1<<20)+1), -30)
	}
	reg := registryOf(vec)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var scrapes atomic.Int64
	var scrapeErr error
	wg.Go(func() {
		var last uint64
		for !stop.Load() {
			mfs, err := reg.Gather()
			if err != nil {
				scrapeErr = err
				return
			}
			hist := mfs[0].Metric[0].GetHistogram()
			if err := validHistogram(hist); err != nil {
				scrapeErr = fmt.Errorf("scrape %d: %v", scrapes.Load(), err)
				return
			}
			if hist.GetSampleCount() < last {
				scrapeErr = fmt.Errorf("scrape %d: count went down from %d to %d", scrapes.Load(), last, hist.GetSampleCount())
				return
			}
			last = hist.GetSampleCount()
			scrapes.Add(1)
		}
	})
	// Rounds of observations until enough scrapes ran meanwhile.
	var observers sync.WaitGroup
	var rounds [goroutines]int
	for g := range goroutines {
		observers.Go(func() {
			for rounds[g] < 1000 && (rounds[g] < 2 || scrapes.Load() < minScrapes) {
				for i := range each {
					h.Observe(value(g, i))
				}
				rounds[g]++
			}
		})
	}
	observers.Wait()
	stop.Store(true)
	wg.Wait()
	if scrapeErr != nil {
		t.Fatal(scrapeErr)
	}
	total := 0
	for g := range goroutines {
		for range rounds[g] {
			for i := range each {
				ref.Observe(value(g, i))
			}
		}
		total += rounds[g] * each
	}
	got, want := writeHist(t, h), writeHist(t, ref)
	// The sum is added in another order: equal but for rounding.
	if a, b := got.GetSampleSum(), want.GetSampleSum(); math.Abs(a-b) > 1e-9*math.Abs(b) {
		t.Fatalf("sum %v, want %v", a, b)
	}
	got.CreatedTimestamp, want.CreatedTimestamp = nil, nil
	got.SampleSum, want.SampleSum = nil, nil
	if !proto.Equal(got, want) {
		t.Fatalf("after concurrent observations:\n%v\nwant (sequential):\n%v", got, want)
	}
	if got.GetSampleCount() != uint64(total) {
		t.Fatalf("count %d, want %d", got.GetSampleCount(), total)
	}
	t.Logf("%d scrapes during %d observations", scrapes.Load(), total)
	if scrapes.Load() < minScrapes {
		t.Fatalf("only %d scrapes ran during the observations", scrapes.Load())
	}
}

func registryOf(c prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return reg
}

// validHistogram applies Prometheus's checks of an ingested native
// histogram (count equal to the buckets' total unless the sum is NaN, at
// least it if so) and the classic buckets' consistency.
func validHistogram(h *dto.Histogram) error {
	count, native := h.GetSampleCount(), nativeTotal(h)
	if math.IsNaN(h.GetSampleSum()) {
		if native > count {
			return fmt.Errorf("native buckets hold %d, count %d", native, count)
		}
	} else if native != count {
		return fmt.Errorf("native buckets hold %d, count %d", native, count)
	}
	var prev uint64
	for _, b := range h.GetBucket() {
		if c := b.GetCumulativeCount(); c < prev || c > count {
			return fmt.Errorf("classic bucket le=%g holds %d (previous %d, count %d)", b.GetUpperBound(), c, prev, count)
		}
		prev = b.GetCumulativeCount()
	}
	return nil
}

// TestExemplars: an exemplar lands on the classic bucket of its value,
// the last one wins, the +Inf bucket is exposed when it holds one, as in
// client_golang; labels client_golang rejects record the value without an
// exemplar.
func TestExemplars(t *testing.T) {
	opts := durationOpts("storage_operation_duration_seconds", "Storage.", StorageBuckets)
	ours := NewHistogramVec(opts, []string{"op"})
	theirs := prometheus.NewHistogramVec(opts, []string{"op"})
	type ex struct {
		v float64
		l prometheus.Labels
	}
	for _, e := range []ex{
		{3e-6, prometheus.Labels{"trace_id": "aaaa"}},
		{4e-6, prometheus.Labels{"trace_id": "bbbb"}}, // same bucket: replaces aaaa
		{1e-3, prometheus.Labels{"trace_id": "cccc", "span_id": "dddd"}},
		{2.5, prometheus.Labels{}}, // on a bound, no labels
		{100, prometheus.Labels{"trace_id": "eeee"}},
		{1e-3, nil},
	} {
		ours.WithLabelValues("get").ObserveWithExemplar(e.v, e.l)
		theirs.WithLabelValues("get").(prometheus.ExemplarObserver).ObserveWithExemplar(e.v, e.l)
	}
	compareHistograms(t, gather(t, ours), gather(t, theirs))

	h := ours.WithLabelValues("put")
	before := time.Now()
	h.ObserveWithExemplar(2e-5, prometheus.Labels{"trace_id": string(bytes.Repeat([]byte("x"), 120))}) // 128 runes: kept
	h.ObserveWithExemplar(2e-4, prometheus.Labels{"trace_id": string(bytes.Repeat([]byte("x"), 121))}) // 129: dropped
	h.ObserveWithExemplar(2e-3, prometheus.Labels{"__reserved": "x"})
	h.ObserveWithExemplar(2e-2, prometheus.Labels{"trace_id": "\xff"})
	w := writeHist(t, h)
	if w.GetSampleCount() != 4 {
		t.Fatalf("count %d, want 4: an invalid exemplar must not lose the observation", w.GetSampleCount())
	}
	var n int
	for _, b := range w.GetBucket() {
		if e := b.GetExemplar(); e != nil {
			n++
			if b.GetUpperBound() != 2.5e-5 || e.GetValue() != 2e-5 || e.GetTimestamp().AsTime().Before(before.Truncate(time.Second)) {
				t.Fatalf("exemplar %v on bucket le=%g", e, b.GetUpperBound())
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d exemplars, want the one valid", n)
	}
}

// TestWithLabelValues: children are created once, collected in creation
// order; a wrong number of label values panics, as in client_golang.
func TestWithLabelValues(t *testing.T) {
	v := NewHistogramVec(prometheus.HistogramOpts{Name: "h", Help: "h"}, []string{"a", "b"})
	x, y := v.WithLabelValues("2", "x"), v.WithLabelValues("1", "y")
	if v.WithLabelValues("2", "x") != x {
		t.Fatal("second WithLabelValues returned another child")
	}
	ch := make(chan prometheus.Metric, 3)
	v.Collect(ch)
	close(ch)
	var got []prometheus.Metric
	for m := range ch {
		got = append(got, m)
	}
	if !slices.Equal(got, []prometheus.Metric{x, y}) {
		t.Fatalf("collected %v, want the children in creation order", got)
	}
	for _, lvs := range [][]string{{"1"}, {"1", "2", "3"}, {"1", "\xff"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("WithLabelValues(%q) did not panic", lvs)
				}
			}()
			v.WithLabelValues(lvs...)
		}()
	}
	for _, f := range []func(){
		func() { NewHistogramVec(prometheus.HistogramOpts{Name: "h", Help: "h"}, []string{"le"}) },
		func() { NewHistogramVec(prometheus.HistogramOpts{Name: "h", Help: "h", Buckets: []float64{1, 1}}, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("invalid options did not panic")
				}
			}()
			f()
		}()
	}
}

// TestObserveDoesNotAllocate, on the fast path and the slow path.
func TestObserveDoesNotAllocate(t *testing.T) {
	h := NewHistogramVec(durationOpts("d", "d", StorageBuckets), []string{"op"}).WithLabelValues("get")
	h.Observe(-1) // the slow path's map exists
	h.Observe(1e9)
	for _, v := range []float64{3e-6, 0.0123, 0, -1, 1e9, math.NaN()} {
		if n := testing.AllocsPerRun(1000, func() { h.Observe(v) }); n != 0 {
			t.Errorf("Observe(%v): %v allocations", v, n)
		}
	}
}

// benchDurations are realistic storage durations, 1 µs to 100 ms.
func benchDurations() []float64 {
	r := rand.New(rand.NewPCG(5, 6))
	vs := make([]float64, 1024)
	for i := range vs {
		vs[i] = math.Exp(r.NormFloat64()*1.5 - 10) // median 45 µs
	}
	return vs
}

// BenchmarkObserve compares one observation of a storage duration into
// ours and into client_golang's Histogram, classic buckets only and with
// the native buckets of the same options, alone and from parallel
// goroutines.
func BenchmarkObserve(b *testing.B) {
	opts := durationOpts("storage_operation_duration_seconds", "Storage.", StorageBuckets)
	classic := opts
	classic.NativeHistogramBucketFactor = 0
	vs := benchDurations()
	for _, c := range []struct {
		name string
		o    prometheus.Observer
	}{
		{"ours", NewHistogramVec(opts, []string{"op"}).WithLabelValues("get")},
		{"client_golang-classic", prometheus.NewHistogramVec(classic, []string{"op"}).WithLabelValues("get")},
		{"client_golang-native", prometheus.NewHistogramVec(opts, []string{"op"}).WithLabelValues("get")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.o.Observe(vs[i&1023])
				i++
			}
		})
		b.Run(c.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					c.o.Observe(vs[i&1023])
					i++
				}
			})
		})
	}
}

// BenchmarkObserveManySeries observes into 4096 series in turn, so that
// each observation finds its histogram out of the caches, as a message's
// does after the kernel's network path ran: what counts then is the cache
// lines an observation touches.
func BenchmarkObserveManySeries(b *testing.B) {
	const series = 4096
	opts := durationOpts("storage_operation_duration_seconds", "Storage.", StorageBuckets)
	classic := opts
	classic.NativeHistogramBucketFactor = 0
	vs := benchDurations()
	ours := NewHistogramVec(opts, []string{"n"})
	cgClassic := prometheus.NewHistogramVec(classic, []string{"n"})
	cgNative := prometheus.NewHistogramVec(opts, []string{"n"})
	for _, c := range []struct {
		name string
		with func(string) prometheus.Observer
	}{
		{"ours", func(n string) prometheus.Observer { return ours.WithLabelValues(n) }},
		{"client_golang-classic", func(n string) prometheus.Observer { return cgClassic.WithLabelValues(n) }},
		{"client_golang-native", func(n string) prometheus.Observer { return cgNative.WithLabelValues(n) }},
	} {
		obs := make([]prometheus.Observer, series)
		for i := range obs {
			obs[i] = c.with(fmt.Sprint(i))
			for _, v := range vs { // populate the native buckets
				obs[i].Observe(v)
			}
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				obs[(i*2654435761)%series].Observe(vs[i&1023])
				i++
			}
		})
	}
}

// BenchmarkHistogramWrite measures what a scrape pays per histogram series:
// Write of one storage-duration histogram into a dto.Metric, populated and
// empty (as most series of an idle node are), ours against client_golang's
// with the same options and observations.
func BenchmarkHistogramWrite(b *testing.B) {
	opts := durationOpts("storage_operation_duration_seconds", "Storage.", StorageBuckets)
	vs := benchDurations()
	for _, c := range []struct {
		name string
		o    prometheus.Observer
	}{
		{"ours", NewHistogramVec(opts, []string{"op"}).WithLabelValues("get")},
		{"client_golang", prometheus.NewHistogramVec(opts, []string{"op"}).WithLabelValues("get")},
		{"ours-empty", NewHistogramVec(opts, []string{"op"}).WithLabelValues("get")},
		{"client_golang-empty", prometheus.NewHistogramVec(opts, []string{"op"}).WithLabelValues("get")},
	} {
		if !strings.HasSuffix(c.name, "-empty") {
			for _, v := range vs {
				c.o.Observe(v)
			}
		}
		m := c.o.(prometheus.Metric)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var out dto.Metric
				if err := m.Write(&out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestWriteSkipsOnlyAnEmptyArray: Write and Count leave out the scan of
// the native array only when nothing in it can have finished. A negative observation
// that cancels the sum to zero, or the zero bucket alone, must not hide
// what the array holds.
func TestWriteSkipsOnlyAnEmptyArray(t *testing.T) {
	opts := durationOpts("d_seconds", "D.", StorageBuckets)
	vec := NewHistogramVec(opts, []string{"c"})
	// count is what a scrape shows: Write's count, which Count (the
	// storage_operations_total of the series) must equal.
	count := func(h *Histogram) uint64 {
		t.Helper()
		c := h.Count()
		var m dto.Metric
		if err := h.Write(&m); err != nil {
			t.Fatal(err)
		}
		if w := m.GetHistogram().GetSampleCount(); w != c {
			t.Fatalf("Write's count %d, Count %d", w, c)
		}
		return c
	}

	empty := vec.WithLabelValues("empty")
	if n := count(empty); n != 0 {
		t.Fatalf("empty histogram: count %d, want 0", n)
	}

	cancel := vec.WithLabelValues("cancel")
	cancel.Observe(-0.001)
	cancel.Observe(0.001) // in the array; the sum is back to exactly 0
	if s := math.Float64frombits(cancel.sumBits.Load()); s != 0 {
		t.Fatalf("sum %v, want 0 for the test to mean anything", s)
	}
	if n := count(cancel); n != 2 {
		t.Fatalf("sum cancelled by a negative observation: count %d, want 2", n)
	}

	zero := vec.WithLabelValues("zero")
	zero.Observe(0)
	if n := count(zero); n != 1 {
		t.Fatalf("zero bucket only: count %d, want 1", n)
	}
	zero.Observe(0.003)
	if n := count(zero); n != 2 {
		t.Fatalf("zero bucket and the array: count %d, want 2", n)
	}

	// An observation caught between its count and its sum is left for the
	// next scrape while the array looks empty, and shown with it after.
	pending := vec.WithLabelValues("pending")
	atomic.AddUint64(&pending.counts[0], 1)
	if n := count(pending); n != 0 {
		t.Fatalf("one observation in progress, none finished: count %d, want 0", n)
	}
	pending.Observe(0.002)
	if n := count(pending); n != 2 {
		t.Fatalf("after one finished: count %d, want 2", n)
	}
}
