package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// classify maps the sentinels of the p2p and task packages onto the API's
// error classes; storage sentinels are mapped by the API itself.
func classify(err error) error {
	switch {
	case errors.Is(err, p2p.ErrBadPeer), errors.Is(err, task.ErrUnknownType), errors.Is(err, task.ErrBadInput):
		return fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	case errors.Is(err, task.ErrNotFound):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, message.ErrPeerUnreachable), errors.Is(err, task.ErrNoPeer):
		return fmt.Errorf("%w: %w", api.ErrPeerUnavailable, err)
	case errors.Is(err, task.ErrClosed), errors.Is(err, task.ErrBusy):
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	var re *message.RemoteError
	if errors.As(err, &re) {
		return fmt.Errorf("%w: %w", api.ErrPeerUnavailable, err)
	}
	return nil
}

// network adapts the p2p host and message service to the control API.
type network struct{ n *Node }

func (nw *network) Peers() []api.Peer {
	infos := nw.n.host.Peers()
	out := make([]api.Peer, 0, len(infos))
	for _, p := range infos {
		out = append(out, api.Peer{
			ID:           p.ID.String(),
			Address:      p.Addr,
			Direction:    p.Direction,
			LatencyMs:    float64(p.Latency) / float64(time.Millisecond),
			AgentVersion: p.AgentVersion,
			Capabilities: p.Capabilities,
		})
	}
	return out
}

// Ping resolves peer (an ID or a full multiaddr), connects when needed and
// pings it count times.
func (nw *network) Ping(ctx context.Context, target string, count int) (api.PingResult, error) {
	id, err := nw.n.host.Resolve(ctx, target)
	if err != nil {
		return api.PingResult{}, err
	}
	if id == nw.n.peerID {
		return api.PingResult{}, fmt.Errorf("%w: that is this node's own peer ID", p2p.ErrBadPeer)
	}
	res := api.PingResult{Peer: id.String(), MinMs: math.Inf(1)}
	var sum float64
	for i := 0; i < count; i++ {
		rtt, err := nw.n.service.Ping(ctx, id)
		if err != nil {
			return api.PingResult{}, err
		}
		ms := float64(rtt) / float64(time.Millisecond)
		res.RTTsMs = append(res.RTTsMs, ms)
		sum += ms
		res.MinMs = math.Min(res.MinMs, ms)
		res.MaxMs = math.Max(res.MaxMs, ms)
	}
	res.AvgMs = sum / float64(count)
	return res, nil
}

// taskTransport adapts the message service to the task engine's Transport.
type taskTransport struct {
	svc  *message.Service
	host *p2p.Host
}

func (t *taskTransport) Call(ctx context.Context, p peer.ID, req task.Request) (task.Record, error) {
	resp, err := t.svc.Request(ctx, p, message.TypeTaskRequest, req)
	if err != nil {
		var re *message.RemoteError
		switch {
		case errors.As(err, &re) && (re.Code == task.CodeBadInput || re.Code == task.CodeUnknownType):
			return task.Record{}, fmt.Errorf("%w: %w", task.ErrBadInput, err)
		case errors.As(err, &re) && re.Code == message.CodeBusy:
			// The peer holds too many requests: a busy refusal, which the
			// engine answers by trying another peer or running it here.
			return task.Record{ID: req.ID, Type: req.Type, State: task.StateFailed, Peer: p.String(),
				Code: task.CodeBusy, Error: err.Error()}, nil
		case errors.Is(err, message.ErrPeerUnreachable):
			return task.Record{}, fmt.Errorf("%w: %w", task.ErrNoPeer, err)
		}
		return task.Record{}, err
	}
	if resp.Type != message.TypeTaskResult {
		return task.Record{}, fmt.Errorf("peer %s answered a task request with %q", p, resp.Type)
	}
	var rec task.Record
	if err := resp.DecodePayload(&rec); err != nil {
		return task.Record{}, fmt.Errorf("decoding task result from %s: %w", p, err)
	}
	return rec, nil
}

func (t *taskTransport) PeersOffering(typ string) []peer.ID { return t.host.PeersOffering(typ) }

// taskHandler runs task.request messages from peers on the local engine.
// It holds no metrics code: the service's middleware measures it.
func taskHandler(e *task.Engine) message.Handler {
	return func(ctx context.Context, from peer.ID, req *message.Envelope) (*message.Envelope, error) {
		var r task.Request
		if err := req.DecodePayload(&r); err != nil {
			return nil, fmt.Errorf("%w: task request: %w", task.ErrBadInput, err)
		}
		rec := e.Execute(task.WithPeer(ctx, from.String()), r)
		rec.Origin = from.String()
		return message.Reply(req, message.TypeTaskResult, rec)
	}
}

// taskAPI adapts the task engine to the control API.
type taskAPI struct {
	engine *task.Engine
	host   *p2p.Host
}

func (a *taskAPI) Submit(ctx context.Context, req api.TaskRequest) (any, error) {
	sr := task.SubmitRequest{Type: req.Type, Input: req.Input, Trace: req.Trace}
	if len(sr.Input) == 0 {
		sr.Input = json.RawMessage(`{}`)
	}
	if req.Peer != "" {
		id, err := a.host.Resolve(ctx, req.Peer)
		if err != nil {
			return nil, err
		}
		sr.Peer = id
	}
	// The task outlives the HTTP request that submitted it.
	return a.engine.Submit(context.WithoutCancel(ctx), sr)
}

func (a *taskAPI) Task(ctx context.Context, id string) (any, error) {
	return a.engine.Get(ctx, id)
}
