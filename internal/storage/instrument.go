package storage

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// opMetrics are the label children of one operation, resolved at construction.
type opMetrics struct {
	total    prometheus.Counter
	duration prometheus.Observer
	errors   prometheus.Counter
}

// instrumented measures every operation of the Store it wraps.
type instrumented struct {
	next Store
	ops  [NumOperations]opMetrics
}

// Instrument returns s measured under the given backend label: every Get,
// Put, Delete and List increments storage_operations_total, observes its
// duration (time.Since, in seconds, unrounded) and, when it fails, increments
// storage_operation_errors_total. ErrNotFound is not a failure. The label
// children are resolved here, once, so recording does no lookups and no
// allocations. A backend name outside the closed set is recorded as "unknown".
func Instrument(s Store, m *metrics.Storage, backend string) Store {
	backend = metrics.Backend(backend)
	in := &instrumented{next: s}
	for op := Operation(0); op < NumOperations; op++ {
		name := op.String()
		in.ops[op] = opMetrics{
			total:    m.Operations.WithLabelValues(name, backend),
			duration: m.Duration.WithLabelValues(name, backend),
			errors:   m.Errors.WithLabelValues(name, backend),
		}
	}
	return in
}

func (in *instrumented) record(op Operation, start time.Duration, err error) {
	m := &in.ops[op]
	m.total.Inc()
	m.duration.Observe(metrics.Since(start))
	if err != nil && !errors.Is(err, ErrNotFound) {
		m.errors.Inc()
	}
}

func (in *instrumented) Get(ctx context.Context, key string, c Consistency) ([]byte, error) {
	start := metrics.Now()
	v, err := in.next.Get(ctx, key, c)
	in.record(OpGet, start, err)
	return v, err
}

func (in *instrumented) Put(ctx context.Context, key string, value []byte, c Consistency) error {
	start := metrics.Now()
	err := in.next.Put(ctx, key, value, c)
	in.record(OpPut, start, err)
	return err
}

func (in *instrumented) Delete(ctx context.Context, key string, c Consistency) error {
	start := metrics.Now()
	err := in.next.Delete(ctx, key, c)
	in.record(OpDelete, start, err)
	return err
}

func (in *instrumented) List(ctx context.Context, prefix string, c Consistency) ([]KV, error) {
	start := metrics.Now()
	kvs, err := in.next.List(ctx, prefix, c)
	in.record(OpList, start, err)
	return kvs, err
}

// ListPage is recorded as a "list" operation: one per page.
func (in *instrumented) ListPage(ctx context.Context, prefix, after string, limit int, c Consistency) ([]KV, string, error) {
	start := metrics.Now()
	kvs, next, err := in.next.ListPage(ctx, prefix, after, limit, c)
	in.record(OpList, start, err)
	return kvs, next, err
}

func (in *instrumented) Close() error { return in.next.Close() }

// Unwrap returns the wrapped store.
func (in *instrumented) Unwrap() Store { return in.next }
