package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// traceAskTimeout bounds asking one peer for its spans of a trace.
const traceAskTimeout = 5 * time.Second

// traceHandler answers trace.get with this node's own spans of the trace,
// within the message size limit. A malformed request or trace id gets the
// usual error reply (code malformed) and is counted as malformed.
func traceHandler(st *tracing.Store, maxBytes int) message.Handler {
	return func(_ context.Context, _ peer.ID, req *message.Envelope) (*message.Envelope, error) {
		var r tracing.GetRequest
		if err := req.DecodePayload(&r); err != nil {
			return nil, malformed(err)
		}
		reply, err := st.Answer(r, maxBytes-4096)
		if err != nil {
			return nil, malformed(err)
		}
		return message.Reply(req, tracing.TypeSpans, reply)
	}
}

func malformed(err error) error {
	return fmt.Errorf("%w: %w", &message.RemoteError{Code: message.CodeMalformed, Message: err.Error()}, message.ErrMalformed)
}

// Trace assembles trace id from this node's spans and those of every peer
// that took part (DESIGN.md section 10).
func (n *Node) Trace(ctx context.Context, id string) (tracing.Trace, error) {
	ask := func(ctx context.Context, p, id string) ([]tracing.SpanRecord, error) {
		pid, err := peer.Decode(p)
		if err != nil {
			return nil, fmt.Errorf("trace: peer %q: %w", p, err)
		}
		ctx, cancel := context.WithTimeout(ctx, traceAskTimeout)
		defer cancel()
		resp, err := n.service.Request(ctx, pid, tracing.TypeGet, tracing.GetRequest{TraceID: id})
		if err != nil {
			return nil, err
		}
		if resp.Type != tracing.TypeSpans {
			return nil, errors.New("trace: peer answered " + resp.Type)
		}
		var r tracing.SpansReply
		if err := resp.DecodePayload(&r); err != nil {
			return nil, err
		}
		return r.Spans, nil
	}
	return tracing.Assemble(ctx, id, n.tracing.Store(), n.peerID.String(), ask)
}
