package p2p

import (
	"context"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// TaskTransport carries task requests to peers over the message service:
// the task engine's Transport. It translates the peer's refusals into what
// the engine branches on (see Call).
type TaskTransport struct {
	host *Host
	svc  *message.Service
}

var _ task.Transport = (*TaskTransport)(nil)

// NewTaskTransport returns the transport sending task requests through svc
// to the peers h knows.
func NewTaskTransport(h *Host, svc *message.Service) *TaskTransport {
	return &TaskTransport{host: h, svc: svc}
}

// Call sends req to p as a task.request and returns the task.result
// record. A refusal by the peer's message layer becomes:
//   - code bad_input (the request was not a task request): an error
//     wrapping task.ErrBadInput, which the engine does not retry;
//   - code busy (the peer holds too many requests): a failed record with
//     code busy, which the engine tries on another peer or runs here;
//   - code unknown_type (the peer takes no task requests at all): a failed
//     record with code unknown_type, tried elsewhere like a peer without
//     the executor;
//
// and an unreachable peer an error wrapping task.ErrNoPeer.
func (t *TaskTransport) Call(ctx context.Context, p peer.ID, req task.Request) (task.Record, error) {
	resp, err := t.svc.Request(ctx, p, message.TypeTaskRequest, req)
	if err != nil {
		var re *message.RemoteError
		switch {
		case errors.As(err, &re) && re.Code == task.CodeBadInput:
			return task.Record{}, fmt.Errorf("%w: %w", task.ErrBadInput, err)
		case errors.As(err, &re) && re.Code == message.CodeBusy:
			return failedRecord(p, req, task.CodeBusy, err), nil
		case errors.As(err, &re) && re.Code == message.CodeUnknownType:
			return failedRecord(p, req, task.CodeUnknownType, err), nil
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

// failedRecord is the record of a request the peer refused before running it.
func failedRecord(p peer.ID, req task.Request, code string, err error) task.Record {
	return task.Record{ID: req.ID, Type: req.Type, State: task.StateFailed, Peer: p.String(), Code: code, Error: err.Error()}
}

// PeersOffering lists the connected peers announcing task type typ.
func (t *TaskTransport) PeersOffering(typ string) []peer.ID { return t.host.PeersOffering(typ) }

// TaskHandler returns the handler of task.request messages: each request
// runs on e on behalf of the sending peer, and the reply is its task.result
// record, whatever the outcome. A payload that is not a task request is
// refused with an error of code bad_input (not retried by the sender). The
// handler holds no metrics code: the service's middleware measures it.
func TaskHandler(e *task.Engine) message.Handler {
	return func(ctx context.Context, from peer.ID, req *message.Envelope) (*message.Envelope, error) {
		var r task.Request
		if err := req.DecodePayload(&r); err != nil {
			bad := fmt.Errorf("%w: task request: %w", task.ErrBadInput, err)
			// The code tells the sender not to retry; the cause keeps the
			// metric reason of the failure (malformed).
			return nil, errors.Join(&message.RemoteError{Code: task.CodeBadInput, Message: bad.Error()}, bad)
		}
		rec := e.Execute(task.WithPeer(ctx, from.String()), r)
		rec.Origin = from.String()
		return message.Reply(req, message.TypeTaskResult, rec)
	}
}
