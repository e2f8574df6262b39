// Package metrics holds the node's metric catalogue (names, types, labels,
// buckets and help texts of DESIGN.md section 5), the process sampler and the
// HTTP server that exposes a node's registry. Nothing here registers on the
// default registry: every constructor takes the registerer of its node.
package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Unknown is the label value recorded for anything outside a closed set.
const Unknown = "unknown"

// StorageBuckets resolve 10 microseconds at the low end: local Pebble reads
// and Eventual writes complete in single-digit microseconds.
var StorageBuckets = []float64{
	5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5,
}

// MessageBuckets span 100 microseconds to 10 seconds.
var MessageBuckets = []float64{
	1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Native histogram settings shared by every duration histogram. A factor of
// 1.1 gives buckets about 10 % wide (schema 3) at every scale, so microsecond
// handler and storage latencies are resolved as well as seconds-long tasks.
// At most NativeMaxBuckets buckets are exposed per series: beyond, the
// exposition halves the resolution (see NewHistogramVec) until they fit;
// the counts are kept at full resolution and never reset.
const (
	NativeBucketFactor = 1.1
	NativeMaxBuckets   = 160
)

// durationOpts returns the options of a duration histogram: the classic
// buckets, which the text exposition shows unchanged, and a native histogram
// beside them, which only a scraper that asks for the protobuf exposition
// (Prometheus with --enable-feature=native-histograms) receives.
func durationOpts(name, help string, buckets []float64) prometheus.HistogramOpts {
	return prometheus.HistogramOpts{
		Name:                           name,
		Help:                           help,
		Buckets:                        buckets,
		NativeHistogramBucketFactor:    NativeBucketFactor,
		NativeHistogramMaxBucketNumber: NativeMaxBuckets,
	}
}

// TaskBuckets span 100 microseconds (a small chunk task) to 2 minutes.
var TaskBuckets = []float64{
	1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1, 5, 10, 30, 60, 120,
}

// The closed label sets (message types, error reasons, task types, ...) are
// not declared here: each belongs to the package that owns the vocabulary
// (internal/p2p/message, internal/task, internal/config) and is passed to the
// constructor of its family, so adding a value touches one package. A value
// outside the set given is recorded as Unknown.

// closedSet is a closed set of label values.
type closedSet []string

// label returns v if it is in the set, else Unknown.
func (c closedSet) label(v string) string {
	for _, k := range c {
		if k == v {
			return k
		}
	}
	return Unknown
}

// withUnknown returns the set followed by Unknown, in a new slice.
func (c closedSet) withUnknown() []string {
	return append(append([]string(nil), c...), Unknown)
}

// Storage is the storage family set: operations, durations and errors by
// operation and backend.
type Storage struct {
	// Operations is the observation count of Duration: every operation
	// is observed exactly once, so it needs no increment of its own.
	Operations *CountVec
	Duration   *HistogramVec
	Errors     *prometheus.CounterVec

	backends closedSet
}

// NewStorage creates and registers the storage families on reg. backends is
// the closed set of the backend label (config.Backends()).
func NewStorage(reg prometheus.Registerer, backends []string) *Storage {
	s := &Storage{
		backends: closedSet(slices.Clone(backends)),
		Duration: NewHistogramVec(durationOpts("storage_operation_duration_seconds",
			"Wall-clock duration of storage operations in seconds, including retries, by operation and backend. Buckets start at 5 microseconds.",
			StorageBuckets), []string{"operation", "backend"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storage_operation_errors_total",
			Help: "Storage operations that failed (backend unavailable, invalid key, value too large, ...), by operation and backend. A missing key on get is not an error.",
		}, []string{"operation", "backend"}),
	}
	s.Operations = NewCountVec(prometheus.CounterOpts{
		Name: "storage_operations_total",
		Help: "Storage operations attempted by the node, by operation (get, put, delete, list) and backend (local, redis). Moves on every operation, successful or not.",
	}, s.Duration)
	reg.MustRegister(s.Operations, s.Duration, s.Errors)
	return s
}

// Backend returns name if it is in the closed set of backends, else Unknown.
func (s *Storage) Backend(name string) string { return s.backends.label(name) }

// MessageLabels are the closed label sets of the message families, owned by
// internal/p2p/message (message.MetricLabels()).
type MessageLabels struct {
	// Types is the type label: the wire message types (DESIGN.md section 7).
	Types []string
	// Reasons is the reason label of message_processing_errors_total.
	Reasons []string
}

// Messages is the message family set recorded by the message middleware.
type Messages struct {
	Received *CounterFamily
	Duration *HistogramVec
	Errors   *prometheus.CounterVec
	Sent     *CounterFamily

	// types and byType are parallel: a linear scan of five short strings
	// (length first, then bytes) is cheaper than hashing for a map lookup.
	types   []string
	byType  []*TypeMetrics
	unknown *TypeMetrics
	reasons closedSet
}

// TypeMetrics are the label children of one message type, resolved
// once so that recording does no label lookup. The received and sent
// counts are kept in it, and the TypeMetrics of all types side by side:
// a round trip's four counts (a ping sent and received, its pong sent and
// received) then touch one or two cache lines, which the round trip's
// system calls have usually evicted, instead of four counters of their
// own and the pointers to them.
type TypeMetrics struct {
	Received Counter
	Sent     Counter
	Duration *Histogram
	errors   map[string]prometheus.Counter
	errUnk   prometheus.Counter
}

// Error returns the error counter for reason (Unknown when outside the closed set).
func (m *TypeMetrics) Error(reason string) prometheus.Counter {
	if c, ok := m.errors[reason]; ok {
		return c
	}
	return m.errUnk
}

// NewMessages creates and registers the message families on reg, with every
// type of l (and every type x reason) pre-initialised to zero.
func NewMessages(reg prometheus.Registerer, l MessageLabels) *Messages {
	m := &Messages{
		Duration: NewHistogramVec(durationOpts("message_processing_duration_seconds",
			"Time to handle one inbound message in seconds, from the arrival of its frame to its reply being ready, by message type.",
			MessageBuckets), []string{"type"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "message_processing_errors_total",
			Help: "Inbound messages that failed to decode or to be handled, by message type and reason (malformed, too_large, unknown_type, handler, panic, timeout, stream).",
		}, []string{"type", "reason"}),
		reasons: closedSet(slices.Clone(l.Reasons)),
	}
	types := closedSet(l.Types).withUnknown()
	all := make([]TypeMetrics, len(types))
	received, sent := make([]*Counter, len(types)), make([]*Counter, len(types))
	for i, t := range types {
		mt := &all[i]
		mt.Duration = m.Duration.WithLabelValues(t)
		mt.errors = make(map[string]prometheus.Counter, len(l.Reasons))
		for _, r := range l.Reasons {
			mt.errors[r] = m.Errors.WithLabelValues(t, r)
		}
		mt.errUnk = m.Errors.WithLabelValues(t, Unknown)
		received[i], sent[i] = &mt.Received, &mt.Sent
		if t == Unknown {
			m.unknown = mt
			continue
		}
		m.types = append(m.types, t)
		m.byType = append(m.byType, mt)
	}
	m.Received = NewCounterFamily(prometheus.CounterOpts{
		Name: "messages_received_total",
		Help: "Messages received from peers, by message type, counted before handling (so malformed and rejected messages are included). Unrecognised types are counted as \"unknown\".",
	}, "type", types, received)
	m.Sent = NewCounterFamily(prometheus.CounterOpts{
		Name: "messages_sent_total",
		Help: "Messages written to peers (requests and responses), by message type.",
	}, "type", types, sent)
	reg.MustRegister(m.Received, m.Duration, m.Errors, m.Sent)
	return m
}

// For returns the pre-resolved children of message type t; a type outside the
// closed set gets the "unknown" children. It does not allocate.
func (m *Messages) For(t string) *TypeMetrics {
	for i, k := range m.types {
		if k == t {
			return m.byType[i]
		}
	}
	return m.unknown
}

// Type returns t if it is in the closed set of message types, else Unknown.
func (m *Messages) Type(t string) string { return closedSet(m.types).label(t) }

// Reason returns r if it is in the closed set of error reasons, else Unknown.
func (m *Messages) Reason(r string) string { return m.reasons.label(r) }

// TaskLabels are the closed label sets of the task families, owned by
// internal/task (task.MetricLabels()).
type TaskLabels struct {
	// Types is the type label: the task types (DESIGN.md section 9).
	Types []string
	// Outcomes is the outcome label of tasks_total.
	Outcomes []string
	// RefusalReasons is the reason label of tasks_refused_total.
	RefusalReasons []string
	// RemovalReasons is the reason label of tasks_records_removed_total.
	RemovalReasons []string
}

// Tasks is the task family set recorded by the task engine on the executing node.
type Tasks struct {
	Total    *prometheus.CounterVec
	Duration *HistogramVec
	// Running and Queued are the tasks executing and waiting for a slot.
	Running prometheus.Gauge
	Queued  prometheus.Gauge
	// Refused counts tasks refused before execution, by type and reason.
	Refused *prometheus.CounterVec
	// RecordsRemoved counts task records deleted by retention, by reason.
	RecordsRemoved *prometheus.CounterVec

	types, outcomes closedSet
}

// NewTasks creates and registers the task families on reg, pre-initialised
// for every type, outcome and reason of l.
func NewTasks(reg prometheus.Registerer, l TaskLabels) *Tasks {
	t := &Tasks{
		types:    closedSet(slices.Clone(l.Types)),
		outcomes: closedSet(slices.Clone(l.Outcomes)),
		Total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_total",
			Help: "Tasks executed on this node, by task type and outcome (succeeded, failed, cancelled).",
		}, []string{"type", "outcome"}),
		Duration: NewHistogramVec(durationOpts("task_duration_seconds",
			"Execution time of tasks on this node in seconds, by task type.",
			TaskBuckets), []string{"type"}),
		Running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tasks_running",
			Help: "Tasks executing on this node now.",
		}),
		Queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tasks_queued",
			Help: "Tasks admitted on this node and waiting for an execution slot.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_refused_total",
			Help: "Tasks refused before execution, by task type and reason (busy, too_large).",
		}, []string{"type", "reason"}),
		RecordsRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_records_removed_total",
			Help: "Task records deleted by retention, by reason (expired, over_limit).",
		}, []string{"reason"}),
	}
	reg.MustRegister(t.Total, t.Duration, t.Running, t.Queued, t.Refused, t.RecordsRemoved)
	for _, r := range l.RemovalReasons {
		t.RecordsRemoved.WithLabelValues(r)
	}
	for _, ty := range t.types.withUnknown() {
		for _, r := range l.RefusalReasons {
			t.Refused.WithLabelValues(ty, r)
		}
		t.Duration.WithLabelValues(ty)
		for _, o := range l.Outcomes {
			t.Total.WithLabelValues(ty, o)
		}
	}
	return t
}

// Type returns ty if it is in the closed set of task types, else Unknown.
func (t *Tasks) Type(ty string) string { return t.types.label(ty) }

// Outcome returns o if it is in the closed set of outcomes, else Unknown.
func (t *Tasks) Outcome(o string) string { return t.outcomes.label(o) }
