package metrics

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// This file holds the node's own histogram: the duration histograms are
// observed on every storage operation, message and task, and client_golang's
// Histogram with native buckets costs 49 ns an observation on this machine
// (its sparse buckets live in a sync.Map), against 29 ns with classic buckets
// only. Ours keeps every counter in fixed arrays updated with atomics and
// exposes what client_golang exposes for the same options, values within a
// few ulp of a native bucket bound aside (the equivalence is tested
// observation by observation in histogram_test.go). histlayout.go holds the
// buckets and the lookup of Observe, histwrite.go the exposition.

// Histogram is one child of a HistogramVec: a classic histogram with, when
// its options ask for it, a native histogram beside it. It implements
// prometheus.Metric, prometheus.Observer and prometheus.ExemplarObserver, and
// prometheus.Collector, so that one made by NewHistogram can be registered
// alone.
type Histogram struct {
	fast fastPath // a copy of the layout's, saving a pointer hop in Observe

	// counts count the values in (2^nativeMinExp, 2^nativeMaxExp] by native
	// bucket at the configured schema and, within it, by classic bucket (see
	// fastPath): one counter an observation gives both buckets. classic
	// counts the other observations by classic bucket, the last being +Inf
	// (and NaN): with native buckets, those of the slow path.
	counts  []uint64
	sumBits atomic.Uint64
	l       *histLayout
	classic []uint64
	zero    atomic.Uint64 // native zero bucket: |v| <= zero threshold
	nan     atomic.Uint64 // NaN observations: in the count, in no native bucket

	mu       sync.Mutex     // guards pos and neg
	pos, neg map[int]uint64 // native buckets outside the array, by key of |v|

	// arrayShown is set by the first Write that finds a count in the
	// array; until then Write may skip scanning an array it can tell is
	// empty (see nativeBuckets).
	arrayShown atomic.Bool

	exemplars   []atomic.Pointer[dto.Exemplar] // by classic bucket, +Inf last
	labelPairs  []*dto.LabelPair
	labelValues []string
	created     time.Time
}

func newHistogramChild(l *histLayout, labelValues []string) *Histogram {
	h := &Histogram{
		fast:        l.fast,
		l:           l,
		classic:     make([]uint64, len(l.upper)+1),
		exemplars:   make([]atomic.Pointer[dto.Exemplar], len(l.upper)+1),
		labelPairs:  prometheus.MakeLabelPairs(l.desc, labelValues),
		labelValues: slices.Clone(labelValues),
		created:     time.Now(),
	}
	if l.native {
		h.counts = make([]uint64, l.counts)
	}
	return h
}

// Observe records v. It never allocates, and it takes no lock unless v is
// outside the native array (see nativeMinExp) and above the zero threshold
// or negative: a value in the array costs two atomic operations (its
// counter, which stands for its native and its classic bucket at once, and
// the sum as a compare-and-swap loop) and no search.
func (h *Histogram) Observe(v float64) {
	f := &h.fast
	if v > f.zt { // false for NaN, zero and negative values
		if slot := f.key(v) - int(f.keyLo); uint(slot) < uint(len(f.slots)) {
			s := &f.slots[slot]
			n := int(s.count)
			if v > s.bound {
				n += h.l.boundsBelow(v, int(s.classic))
			}
			atomic.AddUint64(&h.counts[n], 1)
			h.addSum(v)
			return
		}
	}
	h.observeSlow(v)
}

// observeSlow records what the array does not hold: values without native
// buckets, in the zero bucket, outside the array's range, negative, infinite
// or NaN. For a scrape running concurrently (see Write), the native bucket
// (or the zero bucket, or the NaN count) is incremented BEFORE the classic
// bucket.
func (h *Histogram) observeSlow(v float64) {
	l := h.l
	switch {
	case !l.native:
	case math.IsNaN(v):
		// The sum first: a scrape that sees this NaN counted sees a NaN sum,
		// which Prometheus requires of a count above the buckets' total.
		h.addSum(v)
		h.nan.Add(1)
		atomic.AddUint64(&h.classic[len(l.upper)], 1)
		return
	case v >= -l.zt && v <= l.zt:
		h.zero.Add(1)
	default:
		key := nativeKey(math.Abs(v), l.schema, l.bounds)
		h.mu.Lock()
		m := &h.pos
		if v < 0 {
			m = &h.neg
		}
		if *m == nil {
			*m = make(map[int]uint64)
		}
		(*m)[key]++
		h.mu.Unlock()
	}
	atomic.AddUint64(&h.classic[l.classicIndex(v)], 1)
	h.addSum(v)
}

// addSum adds v to the sum, a float64 kept as its bits: a compare-and-swap
// loop, exact as a float addition (concurrent observations are added in the
// order their swaps succeed).
func (h *Histogram) addSum(v float64) {
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// ObserveWithExemplar records v and keeps the exemplar (v, its labels, the
// current time) on the classic bucket of v, replacing the previous one, as
// client_golang does. Labels that client_golang would reject (an invalid or
// reserved name, a value that is not UTF-8, more than
// prometheus.ExemplarMaxRunes runes in names and values together) record v
// without an exemplar, where client_golang panics. nil labels record v alone.
// Unlike client_golang, no separate list of native-histogram exemplars is
// kept: Prometheus reads a native histogram's exemplars from its classic
// buckets when that list is empty.
func (h *Histogram) ObserveWithExemplar(v float64, labels prometheus.Labels) {
	h.Observe(v)
	if labels == nil {
		return
	}
	if e := newExemplar(v, time.Now(), labels); e != nil {
		h.exemplars[h.l.classicIndex(v)].Store(e)
	}
}

// newExemplar returns the exemplar, its labels sorted by name, or nil if
// the labels are invalid.
func newExemplar(v float64, ts time.Time, labels prometheus.Labels) *dto.Exemplar {
	names := make([]string, 0, len(labels))
	runes := 0
	for name, value := range labels {
		if !model.UTF8Validation.IsValidLabelName(name) || strings.HasPrefix(name, model.ReservedLabelPrefix) || !utf8.ValidString(value) {
			return nil
		}
		runes += utf8.RuneCountInString(name) + utf8.RuneCountInString(value)
		names = append(names, name)
	}
	if runes > prometheus.ExemplarMaxRunes {
		return nil
	}
	slices.Sort(names)
	e := &dto.Exemplar{Value: proto.Float64(v), Timestamp: timestamppb.New(ts)}
	for _, name := range names {
		e.Label = append(e.Label, &dto.LabelPair{Name: proto.String(name), Value: proto.String(labels[name])})
	}
	return e
}

// Desc implements prometheus.Metric.
func (h *Histogram) Desc() *prometheus.Desc { return h.l.desc }

// Describe implements prometheus.Collector.
func (h *Histogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.l.desc }

// Collect implements prometheus.Collector.
func (h *Histogram) Collect(ch chan<- prometheus.Metric) { ch <- h }

// HistogramVec is the node's replacement for prometheus.HistogramVec: the
// same options, label handling and exposition, with a cheaper Observe (see
// Histogram). Children are created by WithLabelValues and never deleted.
type HistogramVec struct {
	l          *histLayout
	labelNames []string

	mu       sync.Mutex
	byValues map[string]*Histogram
	children []*Histogram // in creation order, which Collect keeps
}

// NewHistogramVec returns a histogram family with the given variable labels.
// Of opts it honours:
//
//   - Namespace, Subsystem, Name, Help, Unit and ConstLabels, as in
//     client_golang (a label named "le" panics).
//   - Buckets, the classic upper bounds, strictly increasing (else it
//     panics), a trailing +Inf dropped. Nil or empty means
//     prometheus.DefBuckets when there are no native buckets, and no classic
//     buckets (only +Inf) when there are, as in client_golang.
//   - NativeHistogramBucketFactor: above 1 adds native buckets, at the schema
//     client_golang picks (the largest s in [-4, 8] whose factor 2^(2^-s) is
//     at most the one asked for).
//   - NativeHistogramZeroThreshold: the zero bucket holds |v| <= threshold;
//     0 means prometheus.DefNativeHistogramZeroThreshold (2^-128), a negative
//     value a threshold of 0.
//   - NativeHistogramMaxBucketNumber: enforced when exposing, not when
//     observing: while more buckets (positive and negative) are populated
//     than this, the exposed schema is lowered by one, merging each pair of
//     buckets into the one that covers both. The counts stay at full
//     resolution inside, so nothing is lost, and the exposed resolution
//     rises again never (counts only grow). 0 means no limit. client_golang
//     halves the resolution of its stored buckets at observation time instead,
//     which for the same observations yields the same exposition when each
//     observation adds at most one bucket.
//
// Ignored: NativeHistogramMinResetDuration (we never reset a histogram, which
// client_golang does when the bucket limit is hit after that duration),
// NativeHistogramMaxZeroThreshold (the zero bucket is never widened),
// NativeHistogramMaxExemplars and NativeHistogramExemplarTTL (no separate
// native exemplars, see ObserveWithExemplar).
func NewHistogramVec(opts prometheus.HistogramOpts, labelNames []string) *HistogramVec {
	return &HistogramVec{
		l:          newHistLayout(histDesc(opts, labelNames), opts),
		labelNames: slices.Clone(labelNames),
		byValues:   make(map[string]*Histogram),
	}
}

// NewHistogram returns a histogram without variable labels, which can be
// registered on its own (see NewHistogramVec for the options).
func NewHistogram(opts prometheus.HistogramOpts) *Histogram {
	return newHistogramChild(newHistLayout(histDesc(opts, nil), opts), nil)
}

func histDesc(opts prometheus.HistogramOpts, labelNames []string) *prometheus.Desc {
	for _, n := range labelNames {
		if n == model.BucketLabel {
			panic(fmt.Errorf("%q is not allowed as label name in histograms", n))
		}
	}
	if _, ok := opts.ConstLabels[model.BucketLabel]; ok {
		panic(fmt.Errorf("%q is not allowed as label name in histograms", model.BucketLabel))
	}
	return prometheus.V2.NewDesc(
		prometheus.BuildFQName(opts.Namespace, opts.Subsystem, opts.Name),
		opts.Help,
		prometheus.UnconstrainedLabels(labelNames),
		opts.ConstLabels,
		prometheus.WithUnit(opts.Unit),
	)
}

// WithLabelValues returns the child for the label values, in the order of
// the label names, creating it on first use. It panics on a wrong number of
// values or a value that is not UTF-8, as client_golang does. It takes a
// mutex: resolve children once, not on every observation.
func (v *HistogramVec) WithLabelValues(lvs ...string) *Histogram {
	if len(lvs) != len(v.labelNames) {
		panic(fmt.Errorf("inconsistent label cardinality: %q has %d variable labels named %q but %d values %q were provided",
			v.l.fqName, len(v.labelNames), v.labelNames, len(lvs), lvs))
	}
	for _, val := range lvs {
		if !utf8.ValidString(val) {
			panic(fmt.Errorf("label value %q is not valid UTF-8", val))
		}
	}
	key := strings.Join(lvs, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	if h, ok := v.byValues[key]; ok {
		return h
	}
	h := newHistogramChild(v.l, lvs)
	v.byValues[key] = h
	v.children = append(v.children, h)
	return h
}

// Describe implements prometheus.Collector.
func (v *HistogramVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.l.desc }

// Collect implements prometheus.Collector: the children in the order of
// their creation.
func (v *HistogramVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	children := slices.Clone(v.children)
	v.mu.Unlock()
	for _, h := range children {
		ch <- h
	}
}
