package message

import (
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// Reasons of message_processing_errors_total: why an inbound message failed.
const (
	ReasonMalformed   = "malformed"    // frame or envelope could not be decoded
	ReasonTooLarge    = "too_large"    // frame over p2p.max_message_bytes
	ReasonUnknownType = "unknown_type" // no handler for the type
	ReasonBusy        = "busy"         // refused: p2p.max_inflight_bytes or p2p.max_handlers_per_peer reached
	ReasonHandler     = "handler"      // the handler returned an error
	ReasonPanic       = "panic"        // the handler panicked
	ReasonTimeout     = "timeout"      // read, write or handling deadline exceeded
	ReasonStream      = "stream"       // the stream broke mid-frame or a write failed
)

// TypeInfo is the type label of the answers of the fleet info protocol
// (/p2p-ai-agents/info/1.0.0, internal/fleet), counted with the messages.
const TypeInfo = "info"

// Types returns the closed set of wire message types, the type label of the
// message metrics: this package's own, those of the services carried on it
// (tracing.TypeGet, tracing.TypeSpans), and the info protocol's.
func Types() []string {
	return []string{TypePing, TypePong, TypeTaskRequest, TypeTaskResult, TypeError, tracing.TypeGet, tracing.TypeSpans, TypeInfo}
}

// ErrorReasons returns the closed set of the reason label of
// message_processing_errors_total.
func ErrorReasons() []string {
	return []string{ReasonMalformed, ReasonTooLarge, ReasonUnknownType, ReasonBusy,
		ReasonHandler, ReasonPanic, ReasonTimeout, ReasonStream}
}

// MetricLabels returns the label sets of metrics.NewMessages.
func MetricLabels() metrics.MessageLabels {
	return metrics.MessageLabels{Types: Types(), Reasons: ErrorReasons()}
}
