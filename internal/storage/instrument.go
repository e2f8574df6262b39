package storage

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// opMetrics are the label children of one operation, resolved at construction.
type opMetrics struct {
	duration *metrics.Histogram // its count is storage_operations_total
	errors   prometheus.Counter
	span     string // "storage get", ...
}

// instrumented measures (and, when sampled, traces) every operation of the
// Store it wraps.
type instrumented struct {
	next    Store
	ops     [NumOperations]opMetrics
	tr      *tracing.Tracing
	backend attribute.KeyValue
}

// Instrument returns s measured under the given backend label: every Get,
// Put, Delete and List observes its duration (time.Since, in seconds,
// unrounded), which also counts it in storage_operations_total (the count of
// the duration histogram), and, when it fails, increments
// storage_operation_errors_total. ErrNotFound is not a failure. The label
// children are resolved here, once, so recording does no lookups and no
// allocations. A backend name outside the closed set is recorded as "unknown".
func Instrument(s Store, m *metrics.Storage, backend string) Store {
	return InstrumentTraced(s, m, backend, nil)
}

// InstrumentTraced is Instrument that also traces: an operation whose
// context carries a sampled span gets a child span "storage <operation>"
// (attribute storage.backend; failed when the operation failed, a missing
// key excepted), and its duration is observed with the trace id as an
// exemplar. Unsampled operations cost one context lookup more than
// Instrument's and allocate nothing. A nil tr traces nothing.
func InstrumentTraced(s Store, m *metrics.Storage, backend string, tr *tracing.Tracing) Store {
	backend = m.Backend(backend)
	in := &instrumented{next: s, tr: tr, backend: attribute.String("storage.backend", backend)}
	for op := Operation(0); op < NumOperations; op++ {
		name := op.String()
		in.ops[op] = opMetrics{
			duration: m.Duration.WithLabelValues(name, backend),
			errors:   m.Errors.WithLabelValues(name, backend),
			span:     "storage " + name,
		}
	}
	return in
}

func (in *instrumented) start(ctx context.Context, op Operation) (context.Context, tracing.Span) {
	return in.tr.Start(ctx, in.ops[op].span, trace.SpanKindInternal)
}

func (in *instrumented) record(ctx context.Context, span tracing.Span, op Operation, start time.Duration, err error) {
	d := metrics.Since(start)
	m := &in.ops[op]
	failed := err != nil && !errors.Is(err, ErrNotFound)
	if failed {
		m.errors.Inc()
	}
	if !span.Recording() {
		m.duration.Observe(d)
		return
	}
	tracing.Observe(ctx, m.duration, d)
	span.SetAttributes(in.backend)
	if failed {
		span.End(err)
	} else {
		span.End(nil)
	}
}

func (in *instrumented) Get(ctx context.Context, key string, c Consistency) ([]byte, error) {
	start := metrics.Now()
	ctx, span := in.start(ctx, OpGet)
	v, err := in.next.Get(ctx, key, c)
	in.record(ctx, span, OpGet, start, err)
	return v, err
}

func (in *instrumented) Put(ctx context.Context, key string, value []byte, c Consistency) error {
	start := metrics.Now()
	ctx, span := in.start(ctx, OpPut)
	err := in.next.Put(ctx, key, value, c)
	in.record(ctx, span, OpPut, start, err)
	return err
}

func (in *instrumented) Delete(ctx context.Context, key string, c Consistency) error {
	start := metrics.Now()
	ctx, span := in.start(ctx, OpDelete)
	err := in.next.Delete(ctx, key, c)
	in.record(ctx, span, OpDelete, start, err)
	return err
}

func (in *instrumented) List(ctx context.Context, prefix string, c Consistency) ([]KV, error) {
	start := metrics.Now()
	ctx, span := in.start(ctx, OpList)
	kvs, err := in.next.List(ctx, prefix, c)
	in.record(ctx, span, OpList, start, err)
	return kvs, err
}

// ListPage is recorded as a "list" operation: one per page.
func (in *instrumented) ListPage(ctx context.Context, prefix, after string, limit int, c Consistency) ([]KV, string, error) {
	start := metrics.Now()
	ctx, span := in.start(ctx, OpList)
	kvs, next, err := in.next.ListPage(ctx, prefix, after, limit, c)
	in.record(ctx, span, OpList, start, err)
	return kvs, next, err
}

func (in *instrumented) Close() error { return in.next.Close() }

// Unwrap returns the wrapped store.
func (in *instrumented) Unwrap() Store { return in.next }
