package message

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// Handler handles one inbound message. from is the authenticated remote
// peer of the stream. A nil response means no reply; an error is replied
// to the peer as an "error" message (a *RemoteError chooses its code).
type Handler func(ctx context.Context, from peer.ID, req *Envelope) (resp *Envelope, err error)

// Middleware wraps a Handler; the service applies its metrics middleware to
// every inbound message, so handlers contain no metrics code.
type Middleware func(Handler) Handler

// MetricsMiddleware returns the middleware that records every message it
// sees: messages_received_total before handling, the processing duration
// after, and message_processing_errors_total by reason when the wrapped
// handler fails. The processing duration runs from the moment the message's
// frame began to arrive to the moment its reply was ready, read from the
// clock readings the stream takes for its own deadlines (a message that
// did not come from a stream is timed around the handler). Labels are
// resolved by metrics.Messages.For, so types outside the closed set are
// recorded as "unknown" and recording does not allocate. A nil m returns
// the handler unchanged.
func MetricsMiddleware(m *metrics.Messages) Middleware { return ObserveMiddleware(m, nil) }

// ObserveMiddleware is MetricsMiddleware that also traces: a message that
// carries a sampled traceparent is handled under a server span "msg"
// (attribute message.type), child of the sender's span, and its duration is
// observed with the trace id as an exemplar; a peer's trace contexts are
// honoured only within tracing.Config.RemoteRate. A message without one
// costs one string comparison more. A nil tr traces nothing.
func ObserveMiddleware(m *metrics.Messages, tr *tracing.Tracing) Middleware {
	return func(next Handler) Handler {
		if m == nil {
			return next
		}
		return func(ctx context.Context, from peer.ID, req *Envelope) (*Envelope, error) {
			tm := m.For(req.Type)
			tm.Received.Inc()
			start := req.received
			if start == 0 {
				start = metrics.Now()
			}
			var span tracing.Span
			if req.Trace != "" {
				ctx, span = tr.Start(tr.FromPeer(ctx, from.String(), req.Trace), "msg", trace.SpanKindServer)
			}
			resp, err := next(ctx, from, req)
			end := req.answered
			if end == 0 {
				end = metrics.Now()
			}
			d := metrics.Elapsed(start, end)
			if span.Recording() {
				tracing.Observe(ctx, tm.Duration, d)
				span.SetAttributes(attribute.String("message.type", req.Type))
				span.End(err)
			} else {
				tm.Duration.Observe(d)
			}
			if err != nil {
				tm.Error(errorReason(err)).Inc()
			}
			return resp, err
		}
	}
}

// errorReason maps a handler error to its ErrorReasons() value
// without allocating; an error of no known class is "handler".
func errorReason(err error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if me, ok := e.(*messageError); ok {
			return me.reason
		}
	}
	return classifyReason(err, ReasonHandler)
}

// streamErrorReason classifies a read failure inside a frame; an error of
// no known class is "stream".
func streamErrorReason(err error) string { return classifyReason(err, ReasonStream) }

// classifyReason returns the reason of the error classes shared by handlers
// and streams, or fallback.
func classifyReason(err error, fallback string) string {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	case isTimeout(err):
		return ReasonTimeout
	}
	return fallback
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// recorder records the transport-level events that happen outside any
// handler: frames that never decoded into a message, responses read by the
// requesting side, and every frame written. A nil *metrics.Messages makes
// every method a no-op (the "raw" configuration of the benchmarks).
type recorder struct{ m *metrics.Messages }

// sent counts a frame of type typ written to a peer.
func (r recorder) sent(typ string) {
	if r.m != nil {
		r.m.For(typ).Sent.Inc()
	}
}

// received counts a decoded frame that is not dispatched to a handler
// (a response on the requesting side).
func (r recorder) received(typ string) {
	if r.m != nil {
		r.m.For(typ).Received.Inc()
	}
}

// failed counts a frame that could not be decoded or was refused before
// reaching a handler: it is received (as typ, usually "unknown") and an
// error with the given reason.
func (r recorder) failed(typ, reason string) {
	if r.m != nil {
		tm := r.m.For(typ)
		tm.Received.Inc()
		tm.Error(reason).Inc()
	}
}

// recoverMiddleware turns a handler panic into an error counted as
// reason "panic" and replied as an internal error.
func recoverMiddleware(next Handler) Handler {
	return func(ctx context.Context, from peer.ID, req *Envelope) (resp *Envelope, err error) {
		defer func() {
			if v := recover(); v != nil {
				resp = nil
				err = &messageError{reason: ReasonPanic, code: CodeInternal, msg: "handler panicked", err: fmt.Errorf("panic: %v", v), stack: debug.Stack()}
			}
		}()
		return next(ctx, from, req)
	}
}
