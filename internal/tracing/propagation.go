package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceContext is the W3C Trace Context propagator (traceparent and
// tracestate).
var traceContext propagation.TraceContext

// Traceparent returns the W3C traceparent of the sampled span in ctx, for
// the envelope's "trace" field, or "" when ctx is not sampled: unsampled
// requests carry nothing.
func Traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsSampled() {
		return ""
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceparent returns ctx with the remote span context of traceparent
// (as received in an envelope) as the parent of the spans started from it.
// An empty, malformed or unsampled traceparent leaves ctx as it is: a peer
// that sends garbage gets no trace, and never an error.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" || len(traceparent) > 128 {
		return ctx
	}
	out := traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
	if !trace.SpanContextFromContext(out).IsSampled() {
		return ctx
	}
	return out
}

// FromHTTP returns ctx with the trace context of an API request's
// traceparent header, when it is valid and sampled.
func FromHTTP(ctx context.Context, h http.Header) context.Context {
	return WithTraceparent(ctx, h.Get("traceparent"))
}
