package tracing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Message types of the trace protocol: a node asks a peer for the spans
// it keeps of one trace and gets them back.
const (
	TypeGet   = "trace.get"
	TypeSpans = "trace.spans"
)

// Bounds of trace assembly: a node asks at most MaxPeersAsked peers for one
// trace and keeps at most MaxAssembledSpans spans; a peer answers at most
// MaxSpansPerReply spans (the rest are dropped, Truncated is set).
const (
	MaxPeersAsked     = 64
	MaxAssembledSpans = 10_000
	MaxSpansPerReply  = 1_000
)

// ErrTraceNotFound reports a trace that no node keeps.
var ErrTraceNotFound = errors.New("trace not found")

// GetRequest is the payload of trace.get.
type GetRequest struct {
	TraceID string `json:"trace_id"`
}

// SpansReply is the payload of trace.spans: the spans the answering node
// keeps of the trace (only its own: a node never relays others' spans).
type SpansReply struct {
	TraceID   string       `json:"trace_id"`
	Spans     []SpanRecord `json:"spans"`
	Truncated bool         `json:"truncated,omitempty"`
}

// Answer answers a trace.get: the node's own spans of the trace, at most
// MaxSpansPerReply (and at most maxBytes of JSON, roughly, when positive).
// A malformed trace id is an error wrapping ErrBadTraceID.
func (s *Store) Answer(req GetRequest, maxBytes int) (SpansReply, error) {
	id, err := ParseTraceID(req.TraceID)
	if err != nil {
		return SpansReply{}, err
	}
	spans, _ := s.Spans(id)
	out := SpansReply{TraceID: id.String(), Spans: spans}
	if out.Spans == nil {
		out.Spans = []SpanRecord{}
	}
	if len(out.Spans) > MaxSpansPerReply {
		out.Spans, out.Truncated = out.Spans[:MaxSpansPerReply], true
	}
	if maxBytes > 0 {
		// A span is a few hundred bytes of JSON; keep well inside the
		// message limit, counting its attributes.
		size := 64
		for i, sp := range out.Spans {
			size += spanSize(sp)
			if size > maxBytes {
				out.Spans, out.Truncated = out.Spans[:i], true
				break
			}
		}
	}
	return out, nil
}

// spanSize estimates the JSON size of a span record.
func spanSize(sp SpanRecord) int {
	n := 260 + len(sp.Name) + len(sp.PeerID) + len(sp.Node) + len(sp.Error)
	for k, v := range sp.Attributes {
		n += len(k) + len(v) + 8
	}
	return n
}

// Asker fetches the spans of trace id kept by peer.
type Asker func(ctx context.Context, peer, id string) ([]SpanRecord, error)

// Assemble builds the whole trace id: this node's spans, then those of
// every peer that took part, found from the spans themselves (the peer of
// each task.dispatch and msg.send) and asked with ask, round after round,
// until no new peer appears. Peers that cannot be asked are listed in
// Incomplete: a peer gone leaves the trace incomplete, not failed. It
// returns ErrTraceNotFound when no node has a span of the trace.
func Assemble(ctx context.Context, idText string, local *Store, self string, ask Asker) (Trace, error) {
	id, err := ParseTraceID(idText)
	if err != nil {
		return Trace{}, err
	}
	out := Trace{TraceID: id.String()}
	if local != nil {
		out.Spans, _ = local.Spans(id)
	}
	asked := map[string]bool{self: true}
	for round := 0; ; round++ {
		var next []string
		for _, sp := range out.Spans {
			asked[sp.PeerID] = true // a node's spans come from that node
		}
		for _, sp := range out.Spans {
			for _, k := range []string{"peer", "net.peer"} {
				if p := sp.Attributes[k]; p != "" && !asked[p] && !slices.Contains(next, p) {
					next = append(next, p)
				}
			}
		}
		if len(next) == 0 || ask == nil {
			break
		}
		slices.Sort(next)
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		for _, p := range next {
			asked[p] = true
			if len(asked) > MaxPeersAsked+1 {
				out.Incomplete = append(out.Incomplete, p)
				continue
			}
			wg.Go(func() {
				spans, err := ask(ctx, p, out.TraceID)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					out.Incomplete = append(out.Incomplete, p)
					return
				}
				for _, sp := range spans {
					// A peer speaks only for itself.
					if sp.PeerID != p || (sp.TraceID != "" && sp.TraceID != out.TraceID) || len(out.Spans) >= MaxAssembledSpans {
						continue
					}
					sp.TraceID = out.TraceID
					out.Spans = append(out.Spans, sp)
				}
			})
		}
		wg.Wait()
	}
	slices.Sort(out.Incomplete)
	if len(out.Spans) == 0 {
		return out, fmt.Errorf("%w: %s", ErrTraceNotFound, out.TraceID)
	}
	out.Sort()
	return out, nil
}
