package tracing

import (
	"context"
	"encoding/hex"
	"net/http"

	"go.opentelemetry.io/otel/trace"
)

// The W3C Trace Context traceparent header: version "00", a 16-byte trace
// id, an 8-byte parent span id and 1 byte of flags, hex, dash-separated
// (https://www.w3.org/TR/trace-context/#traceparent-header). It is written
// and read here directly rather than through the propagator's map carrier,
// which costs several allocations per message.
const traceparentLen = 2 + 1 + 32 + 1 + 16 + 1 + 2

// Traceparent returns the W3C traceparent of the sampled span in ctx, for
// the envelope's "trace" field, or "" when ctx is not sampled: unsampled
// requests carry nothing.
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return ""
	}
	var b [traceparentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// WithTraceparent returns ctx with the remote span context of traceparent
// (as received in an envelope) as the parent of the spans started from it.
// An empty, malformed or unsampled traceparent leaves ctx as it is: a peer
// that sends garbage gets no trace, and never an error.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	sc, ok := parseTraceparent(traceparent)
	if !ok || !sc.IsSampled() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// parseTraceparent accepts version 00 exactly, and a later version when it
// starts with the version 00 fields (the specification's forward
// compatibility rule); never version ff, all-zero ids or upper-case hex.
func parseTraceparent(s string) (trace.SpanContext, bool) {
	if len(s) < traceparentLen || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return trace.SpanContext{}, false
	}
	if s[:2] == "ff" || (s[:2] == "00" && len(s) != traceparentLen) || (len(s) > traceparentLen && s[traceparentLen] != '-') {
		return trace.SpanContext{}, false
	}
	var ver [1]byte
	var tid trace.TraceID
	var sid trace.SpanID
	var flags [1]byte
	if !lowerHex(s[:2]) || !lowerHex(s[3:35]) || !lowerHex(s[36:52]) || !lowerHex(s[53:55]) {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(ver[:], []byte(s[:2])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(tid[:], []byte(s[3:35])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(sid[:], []byte(s[36:52])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(flags[:], []byte(s[53:55])); err != nil {
		return trace.SpanContext{}, false
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled, Remote: true,
	})
	return sc, sc.IsValid()
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// FromHTTP returns ctx with the trace context of an API request's
// traceparent header, when it is valid and sampled.
func FromHTTP(ctx context.Context, h http.Header) context.Context {
	return WithTraceparent(ctx, h.Get("traceparent"))
}
