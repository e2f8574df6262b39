// Package metrics holds the node's metric catalogue (names, types, labels,
// buckets and help texts of DESIGN.md section 5), the process sampler and the
// HTTP server that exposes a node's registry. Nothing here registers on the
// default registry: every constructor takes the registerer of its node.
package metrics

import (
	"time"

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
// handler and storage latencies are resolved as well as seconds-long tasks;
// the bucket count per series is capped, after which client_golang widens
// the buckets, and a reset at most once an hour keeps the resolution high.
const (
	NativeBucketFactor    = 1.1
	NativeMaxBuckets      = 160
	NativeMinResetSeconds = 3600
)

// durationOpts returns the options of a duration histogram: the classic
// buckets, which the text exposition shows unchanged, and a native histogram
// beside them, which only a scraper that asks for the protobuf exposition
// (Prometheus with --enable-feature=native-histograms) receives.
func durationOpts(name, help string, buckets []float64) prometheus.HistogramOpts {
	return prometheus.HistogramOpts{
		Name:                            name,
		Help:                            help,
		Buckets:                         buckets,
		NativeHistogramBucketFactor:     NativeBucketFactor,
		NativeHistogramMaxBucketNumber:  NativeMaxBuckets,
		NativeHistogramMinResetDuration: NativeMinResetSeconds * time.Second,
	}
}

// TaskBuckets span 100 microseconds (a small chunk task) to 2 minutes.
var TaskBuckets = []float64{
	1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1, 5, 10, 30, 60, 120,
}

// Storage is the storage family set: operations, durations and errors by
// operation and backend.
type Storage struct {
	Operations *prometheus.CounterVec
	Duration   *prometheus.HistogramVec
	Errors     *prometheus.CounterVec
}

// Backends is the closed set of storage backend label values.
var Backends = []string{"local", "redis"}

// NewStorage creates and registers the storage families on reg.
func NewStorage(reg prometheus.Registerer) *Storage {
	s := &Storage{
		Operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storage_operations_total",
			Help: "Storage operations attempted by the node, by operation (get, put, delete, list) and backend (local, redis). Moves on every operation, successful or not.",
		}, []string{"operation", "backend"}),
		Duration: prometheus.NewHistogramVec(durationOpts("storage_operation_duration_seconds",
			"Wall-clock duration of storage operations in seconds, including retries, by operation and backend. Buckets start at 5 microseconds.",
			StorageBuckets), []string{"operation", "backend"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storage_operation_errors_total",
			Help: "Storage operations that failed (backend unavailable, invalid key, value too large, ...), by operation and backend. A missing key on get is not an error.",
		}, []string{"operation", "backend"}),
	}
	reg.MustRegister(s.Operations, s.Duration, s.Errors)
	return s
}

// Backend returns name if it is in the closed set of backends, else Unknown.
func Backend(name string) string {
	for _, b := range Backends {
		if b == name {
			return b
		}
	}
	return Unknown
}

// MessageTypes is the closed set of wire message types (DESIGN.md section 7).
var MessageTypes = []string{"ping", "pong", "task.request", "task.result", "error", "trace.get", "trace.spans", "info"}

// ErrorReasons is the closed set of message error reasons.
var ErrorReasons = []string{
	"malformed",    // frame or envelope could not be decoded
	"too_large",    // frame over p2p.max_message_bytes
	"unknown_type", // no handler for the type
	"busy",         // refused: p2p.max_inflight_bytes or p2p.max_handlers_per_peer reached
	"handler",      // the handler returned an error
	"panic",        // the handler panicked
	"timeout",      // read, write or handling deadline exceeded
	"stream",       // the stream broke mid-frame or a write failed
}

// MessageType returns t if it is a known message type, else Unknown.
func MessageType(t string) string {
	for _, k := range MessageTypes {
		if k == t {
			return k
		}
	}
	return Unknown
}

// ErrorReason returns r if it is a known reason, else Unknown.
func ErrorReason(r string) string {
	for _, k := range ErrorReasons {
		if k == r {
			return k
		}
	}
	return Unknown
}

// Messages is the message family set recorded by the message middleware.
type Messages struct {
	Received *prometheus.CounterVec
	Duration *prometheus.HistogramVec
	Errors   *prometheus.CounterVec
	Sent     *prometheus.CounterVec

	// types and byType are parallel: a linear scan of five short strings
	// (length first, then bytes) is cheaper than hashing for a map lookup.
	types   []string
	byType  []*TypeMetrics
	unknown *TypeMetrics
}

// TypeMetrics are the label children of one message type, resolved
// once so that recording does no label lookup.
type TypeMetrics struct {
	Received prometheus.Counter
	Duration prometheus.Observer
	Sent     prometheus.Counter
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
// known type (and every type x reason) pre-initialised to zero.
func NewMessages(reg prometheus.Registerer) *Messages {
	m := &Messages{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_received_total",
			Help: "Messages received from peers, by message type, counted before handling (so malformed and rejected messages are included). Unrecognised types are counted as \"unknown\".",
		}, []string{"type"}),
		Duration: prometheus.NewHistogramVec(durationOpts("message_processing_duration_seconds",
			"Time to handle one inbound message in seconds, from decoded envelope to response written, by message type.",
			MessageBuckets), []string{"type"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "message_processing_errors_total",
			Help: "Inbound messages that failed to decode or to be handled, by message type and reason (malformed, too_large, unknown_type, handler, panic, timeout, stream).",
		}, []string{"type", "reason"}),
		Sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_sent_total",
			Help: "Messages written to peers (requests and responses), by message type.",
		}, []string{"type"}),
	}
	reg.MustRegister(m.Received, m.Duration, m.Errors, m.Sent)
	for _, t := range append(append([]string(nil), MessageTypes...), Unknown) {
		mt := &TypeMetrics{
			Received: m.Received.WithLabelValues(t),
			Duration: m.Duration.WithLabelValues(t),
			Sent:     m.Sent.WithLabelValues(t),
			errors:   make(map[string]prometheus.Counter, len(ErrorReasons)),
		}
		for _, r := range ErrorReasons {
			mt.errors[r] = m.Errors.WithLabelValues(t, r)
		}
		mt.errUnk = m.Errors.WithLabelValues(t, Unknown)
		if t == Unknown {
			m.unknown = mt
			continue
		}
		m.types = append(m.types, t)
		m.byType = append(m.byType, mt)
	}
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

// TaskTypes is the closed set of task types (DESIGN.md section 9).
var TaskTypes = []string{"text.chunk", "text.embed", "index.add", "index.search"}

// TaskOutcomes is the closed set of task outcomes.
var TaskOutcomes = []string{"succeeded", "failed", "cancelled"}

// Tasks is the task family set recorded by the task engine on the executing node.
type Tasks struct {
	Total    *prometheus.CounterVec
	Duration *prometheus.HistogramVec
	// Running and Queued are the tasks executing and waiting for a slot.
	Running prometheus.Gauge
	Queued  prometheus.Gauge
	// Refused counts tasks refused before execution, by type and reason.
	Refused *prometheus.CounterVec
	// RecordsRemoved counts task records deleted by retention, by reason.
	RecordsRemoved *prometheus.CounterVec
}

// TaskRefusalReasons is the closed set of the reason label of tasks_refused_total.
var TaskRefusalReasons = []string{"busy", "too_large"}

// TaskRemovalReasons is the closed set of the reason label of tasks_records_removed_total.
var TaskRemovalReasons = []string{"expired", "over_limit"}

// NewTasks creates and registers the task families on reg, pre-initialised
// for every type and outcome.
func NewTasks(reg prometheus.Registerer) *Tasks {
	t := &Tasks{
		Total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasks_total",
			Help: "Tasks executed on this node, by task type and outcome (succeeded, failed, cancelled).",
		}, []string{"type", "outcome"}),
		Duration: prometheus.NewHistogramVec(durationOpts("task_duration_seconds",
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
	for _, r := range TaskRemovalReasons {
		t.RecordsRemoved.WithLabelValues(r)
	}
	for _, ty := range append(append([]string(nil), TaskTypes...), Unknown) {
		for _, r := range TaskRefusalReasons {
			t.Refused.WithLabelValues(ty, r)
		}
		t.Duration.WithLabelValues(ty)
		for _, o := range TaskOutcomes {
			t.Total.WithLabelValues(ty, o)
		}
	}
	return t
}

// TaskType returns ty if it is a known task type, else Unknown.
func TaskType(ty string) string {
	for _, k := range TaskTypes {
		if k == ty {
			return k
		}
	}
	return Unknown
}

// TaskOutcome returns o if it is a known outcome, else Unknown.
func TaskOutcome(o string) string {
	for _, k := range TaskOutcomes {
		if k == o {
			return k
		}
	}
	return Unknown
}
