package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter is a monotonically increasing count kept inside the structure
// that records it, rather than in an object of its own: the counters a
// path updates together then share a cache line with what that path
// already reads (see TypeMetrics). A CounterFamily exposes it. The zero
// value counts from 0; it must not be copied once used.
type Counter struct{ v atomic.Uint64 }

// Inc adds 1.
func (c *Counter) Inc() { c.v.Add(1) }

// Value returns the count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// CounterFamily exposes, as one counter family over one label, Counters
// that live elsewhere, one per value of a closed set of label values
// (fixed at construction, so the family's cardinality is too). Each series
// carries the family's creation time as its created timestamp, as
// client_golang's counters do.
type CounterFamily struct {
	desc     *prometheus.Desc
	created  time.Time
	values   []string
	counters []*Counter
}

// NewCounterFamily returns the family of opts over label, whose series are
// values[i] = counters[i]; the two slices must have the same length.
func NewCounterFamily(opts prometheus.CounterOpts, label string, values []string, counters []*Counter) *CounterFamily {
	if len(values) != len(counters) {
		panic("metrics: NewCounterFamily: values and counters differ in length")
	}
	return &CounterFamily{
		desc:     prometheus.NewDesc(prometheus.BuildFQName(opts.Namespace, opts.Subsystem, opts.Name), opts.Help, []string{label}, opts.ConstLabels),
		created:  time.Now(),
		values:   values,
		counters: counters,
	}
}

// Describe implements prometheus.Collector.
func (f *CounterFamily) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect implements prometheus.Collector.
func (f *CounterFamily) Collect(ch chan<- prometheus.Metric) {
	for i := range f.values {
		ch <- f.metric(i)
	}
}

func (f *CounterFamily) metric(i int) prometheus.Metric {
	return prometheus.MustNewConstMetricWithCreatedTimestamp(f.desc, prometheus.CounterValue, float64(f.counters[i].Value()), f.created, f.values[i])
}

// WithLabelValues returns the series of label value v as a collector of
// that one counter (for testutil.ToFloat64 and the like); a value outside
// the family's set returns the series of Unknown when the set has it, else
// nil.
func (f *CounterFamily) WithLabelValues(v string) prometheus.Collector {
	i := f.index(v)
	if i < 0 {
		if i = f.index(Unknown); i < 0 {
			return nil
		}
	}
	return seriesOf{f, i}
}

func (f *CounterFamily) index(v string) int {
	for i, k := range f.values {
		if k == v {
			return i
		}
	}
	return -1
}

type seriesOf struct {
	f *CounterFamily
	i int
}

func (s seriesOf) Describe(ch chan<- *prometheus.Desc) { ch <- s.f.desc }
func (s seriesOf) Collect(ch chan<- prometheus.Metric) { ch <- s.f.metric(s.i) }
