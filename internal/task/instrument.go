package task

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// instrumented measures every execution of the Executor it wraps.
type instrumented struct {
	next                         Executor
	succeeded, failed, cancelled prometheus.Counter
	duration                     *metrics.Histogram
	busy, tooLarge               prometheus.Counter
	tr                           *tracing.Tracing
	typ                          attribute.KeyValue
}

// Instrument returns x measured in m under its type label (m.Type
// of x.Type(): a type outside the closed set is recorded as "unknown"):
// every Execute increments tasks_total by outcome and observes
// task_duration_seconds (metrics.Since, in seconds, unrounded). The outcome
// is succeeded without an error; cancelled when the error comes from ctx
// ending because the submitter gave up or the node is stopping; failed
// otherwise (a timeout, a panic, bad input, any other error). A result over
// the limit of its destination also increments tasks_refused_total{reason
// too_large}. The label children are resolved here, once. The engine
// measures every executor it registers this way. With a tracer, an
// execution under a sampled span also gets a span task.execute (attribute
// task.type) and its duration an exemplar; tr may be nil.
func Instrument(x Executor, m *metrics.Tasks, tr *tracing.Tracing) Executor {
	return instrument(x, m, tr)
}

func instrument(x Executor, m *metrics.Tasks, tr *tracing.Tracing) *instrumented {
	t := m.Type(x.Type())
	return &instrumented{
		tr:        tr,
		typ:       attribute.String("task.type", x.Type()),
		next:      x,
		succeeded: m.Total.WithLabelValues(t, outcomeSucceeded),
		failed:    m.Total.WithLabelValues(t, outcomeFailed),
		cancelled: m.Total.WithLabelValues(t, outcomeCancelled),
		duration:  m.Duration.WithLabelValues(t),
		busy:      m.Refused.WithLabelValues(t, reasonBusy),
		tooLarge:  m.Refused.WithLabelValues(t, reasonTooLarge),
	}
}

// Type returns the wrapped executor's type.
func (in *instrumented) Type() string { return in.next.Type() }

// Execute runs the wrapped executor and records its outcome and duration. A
// panic passing through is recorded as failed.
func (in *instrumented) Execute(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	start := metrics.Now()
	ctx, span := in.tr.Start(ctx, "task.execute", trace.SpanKindInternal)
	returned := false
	defer func() {
		if !returned {
			in.failed.Inc()
			in.duration.Observe(metrics.Since(start))
			span.End(errPanicked)
		}
	}()
	res, err := in.next.Execute(ctx, input)
	returned = true
	code := failureCode(ctx, err)
	switch {
	case err == nil:
		in.succeeded.Inc()
	case code == CodeCancelled || code == CodeClosed:
		in.cancelled.Inc()
	default:
		if code == CodeTooLarge {
			in.tooLarge.Inc()
		}
		in.failed.Inc()
	}
	if !span.Recording() {
		in.duration.Observe(metrics.Since(start))
		return res, err
	}
	tracing.Observe(ctx, in.duration, metrics.Since(start))
	span.SetAttributes(in.typ)
	span.End(err)
	return res, err
}

// errPanicked marks the span of an execution that panicked.
var errPanicked = errors.New("executor panicked")

// refuse records a task of this type refused before execution, for reason
// reasonBusy or reasonTooLarge.
func (in *instrumented) refuse(reason string) {
	if reason == reasonBusy {
		in.busy.Inc()
		return
	}
	in.tooLarge.Inc()
}

// Unwrap returns the wrapped executor.
func (in *instrumented) Unwrap() Executor { return in.next }
