package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Count returns the number of observations so far: the count Write
// exposes (with native buckets the total of the native buckets and the NaN
// observations, else of the classic buckets). Like Write, it leaves out the
// native array while nothing in it can have finished (see arrayEmptyLocked).
func (h *Histogram) Count() uint64 {
	var n uint64
	if !h.l.native {
		for i := range h.classic {
			n += atomic.LoadUint64(&h.classic[i])
		}
		return n
	}
	h.mu.Lock()
	for _, c := range h.pos {
		n += c
	}
	for _, c := range h.neg {
		n += c
	}
	skipArray := h.arrayEmptyLocked()
	h.mu.Unlock()
	n += h.nan.Load() + h.zero.Load()
	if skipArray {
		return n
	}
	var inArray uint64
	for i := range h.counts {
		inArray += atomic.LoadUint64(&h.counts[i])
	}
	h.shownFromArray(inArray > 0)
	return n + inArray
}

// CountVec is a counter family whose every counter is the observation
// count of one child of a HistogramVec, with the same labels: when every
// operation is observed exactly once, its count is the number of
// operations, and a separate counter would cost every operation one more
// atomic increment (storage_operations_total, read from
// storage_operation_duration_seconds).
type CountVec struct {
	desc *prometheus.Desc
	h    *HistogramVec
}

// NewCountVec returns the counter family of opts counting the observations
// of h, whose label names it takes.
func NewCountVec(opts prometheus.CounterOpts, h *HistogramVec) *CountVec {
	return &CountVec{
		desc: prometheus.NewDesc(prometheus.BuildFQName(opts.Namespace, opts.Subsystem, opts.Name), opts.Help, h.labelNames, opts.ConstLabels),
		h:    h,
	}
}

// Describe implements prometheus.Collector.
func (c *CountVec) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector: one counter per child of the
// histogram, with its creation time.
func (c *CountVec) Collect(ch chan<- prometheus.Metric) {
	c.h.mu.Lock()
	children := c.h.children
	c.h.mu.Unlock()
	for _, h := range children {
		ch <- c.metric(h)
	}
}

func (c *CountVec) metric(h *Histogram) prometheus.Metric {
	return prometheus.MustNewConstMetricWithCreatedTimestamp(c.desc, prometheus.CounterValue, float64(h.Count()), h.created, h.labelValues...)
}

// WithLabelValues returns the counter of one child (created if need be),
// as a collector of that one counter.
func (c *CountVec) WithLabelValues(lvs ...string) prometheus.Collector {
	return countOf{c, c.h.WithLabelValues(lvs...)}
}

type countOf struct {
	c *CountVec
	h *Histogram
}

func (o countOf) Describe(ch chan<- *prometheus.Desc) { ch <- o.c.desc }
func (o countOf) Collect(ch chan<- prometheus.Metric) { ch <- o.c.metric(o.h) }
