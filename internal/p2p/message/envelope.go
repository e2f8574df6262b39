package message

import (
	"encoding/json"
	"time"
)

// ProtocolID is the libp2p protocol of the message service (DESIGN.md section 7).
const ProtocolID = "/p2p-ai-agents/msg/1.0.0"

// EnvelopeVersion is the only envelope version this node speaks.
const EnvelopeVersion = 1

// Message types of the wire protocol: the closed set used as metric labels.
const (
	TypePing        = "ping"
	TypePong        = "pong"
	TypeTaskRequest = "task.request"
	TypeTaskResult  = "task.result"
	TypeError       = "error"
)

// Envelope is one framed message. A response carries the ID of its request.
// The sender is never a field: it is the authenticated remote peer of the stream.
type Envelope struct {
	V      int       `json:"v"`
	ID     string    `json:"id"`
	Type   string    `json:"type"`
	SentAt time.Time `json:"sent_at"`
	// Trace is the W3C traceparent of the sender's span when the message
	// belongs to a sampled trace (DESIGN.md section 10); optional, so peers
	// that neither send nor read it interoperate.
	Trace   string          `json:"trace,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`

	// received and answered are clock readings (metrics.Now) of an inbound
	// message, taken by its stream for its own deadlines: when its frame
	// began to arrive and when its reply was ready. The metrics middleware
	// times the message with them instead of reading the clock twice more;
	// zero when the message did not come from a stream.
	received, answered time.Duration
	pooled             bool // from envelopePool (see pool.go)
}

// ErrorPayload is the payload of an "error" message.
type ErrorPayload struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
