package tracing

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// ExemplarLabel is the exemplar label that carries the trace id.
const ExemplarLabel = "trace_id"

// Observe records v in o, with the trace id of ctx as an exemplar when ctx
// carries a sampled span. Unsampled it is o.Observe(v) plus one context
// lookup, and allocates nothing.
func Observe(ctx context.Context, o prometheus.Observer, v float64) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{ExemplarLabel: sc.TraceID().String()})
			return
		}
	}
	o.Observe(v)
}
