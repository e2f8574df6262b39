package task

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// dispatch runs a task on the requested peer (this node when it names
// itself), else on the least busy peer offering its type, else locally. A
// remote attempt that fails for want of an answer is retried once: on the
// requested peer again, else on another offering peer, else locally; when
// the peer asked answered busy, on a third peer or locally.
func (e *Engine) dispatch(ctx context.Context, rec Record, req SubmitRequest) Record {
	wire := Request{ID: rec.ID, Type: req.Type, Input: req.Input, TimeoutMS: e.timeout.Milliseconds()}
	var tried []peer.ID
	var failures []string
	maxAttempts := 2
	for attempt := 1; ; attempt++ {
		target := req.Peer
		if attempt == 3 {
			target = e.self // every peer asked was busy: run here
		}
		if target == "" {
			target = e.pick(req.Type, tried)
		}
		rec.Attempts = attempt
		rec.State = StateRunning
		if rec.StartedAt.IsZero() {
			rec.StartedAt = time.Now().UTC()
		}
		if target == "" || target == e.self {
			rec.Peer = e.self.String()
			e.persistRunning(ctx, rec)
			actx, cancel := context.WithTimeoutCause(ctx, e.timeout, errAttemptTimeout)
			res, code, err := e.execute(actx, req.Type, req.Input, "", e.lim.local)
			cancel()
			if err != nil && len(failures) > 0 {
				err = fmt.Errorf("%s; attempt %d locally: %w", strings.Join(failures, "; "), attempt, err)
			}
			return finish(rec, res, code, err)
		}
		rec.Peer = target.String()
		e.persistRunning(ctx, rec)
		tried = append(tried, target)
		remote, err := e.attempt(ctx, target, wire, attempt)
		if err == nil && remote.State == StateSucceeded {
			return finish(rec, remote.Result, "", nil)
		}
		retry, code, msg := classify(remote, err)
		failures = append(failures, fmt.Sprintf("attempt %d on peer %s: %s", attempt, target, msg))
		if code == CodeBusy && req.Peer == "" {
			maxAttempts = 3
		}
		if !retry || attempt >= maxAttempts || ctx.Err() != nil {
			if ctx.Err() != nil {
				code = CodeClosed
			}
			return finish(rec, nil, code, errors.New(strings.Join(failures, "; ")))
		}
		e.log.Warn("task attempt failed, retrying", "id", rec.ID, "type", rec.Type, "peer", target, "err", msg)
	}
}

// classify decides whether a failed remote attempt is worth retrying
// elsewhere, and with which code and message it failed.
func classify(remote Record, err error) (retry bool, code, msg string) {
	switch {
	case errors.Is(err, errAttemptTimeout):
		return true, CodeTimeout, err.Error()
	case errors.Is(err, ErrBadInput):
		return false, CodeBadInput, err.Error()
	case err != nil:
		return true, CodeUnavailable, err.Error()
	case remote.State != StateFailed:
		return true, CodeUnavailable, fmt.Sprintf("peer answered with a %q record", remote.State)
	case remote.Code == CodeUnknownType || remote.Code == CodeClosed || remote.Code == CodeBusy:
		return true, remote.Code, remote.Error
	case remote.Code == CodeCancelled:
		// The peer stopped at our deadline (or lost our stream) first.
		return true, CodeTimeout, remote.Error
	}
	return false, cmp.Or(remote.Code, CodeError), remote.Error
}

// attempt is call traced: a span task.dispatch (attributes peer, attempt)
// around the call when the task is sampled. The transport carries the span
// to the peer, whose spans become its children.
func (e *Engine) attempt(ctx context.Context, p peer.ID, req Request, n int) (Record, error) {
	ctx, span := e.trc.Start(ctx, "task.dispatch", trace.SpanKindClient)
	if !span.Recording() {
		return e.call(ctx, p, req)
	}
	span.SetAttributes(attribute.String("peer", p.String()), attribute.Int("attempt", n))
	rec, err := e.call(ctx, p, req)
	switch {
	case err != nil:
		span.End(err)
	case rec.State == StateFailed:
		span.SetAttributes(attribute.String("task.code", rec.Code))
		span.End(errors.New(rec.Error))
	default:
		span.End(nil)
	}
	return rec, err
}

// call sends one attempt to p with the attempt timeout. The transport
// honours ctx, so the call ends by the deadline.
func (e *Engine) call(ctx context.Context, p peer.ID, req Request) (Record, error) {
	e.mu.Lock()
	e.inflight[p]++
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.inflight[p]--; e.inflight[p] <= 0 {
			delete(e.inflight, p)
		}
		e.mu.Unlock()
	}()
	actx, cancel := context.WithTimeoutCause(ctx, e.timeout, errAttemptTimeout)
	defer cancel()
	rec, err := e.tr.Call(actx, p, req)
	if err != nil && actx.Err() != nil {
		if errors.Is(context.Cause(actx), errAttemptTimeout) {
			return Record{}, fmt.Errorf("%w after %v", errAttemptTimeout, e.timeout)
		}
		return Record{}, fmt.Errorf("%w: %w", context.Cause(actx), err)
	}
	return rec, err
}

// offering returns the connected peers other than self that offer typ.
func (e *Engine) offering(typ string) []peer.ID {
	if e.tr == nil {
		return nil
	}
	peers := e.tr.PeersOffering(typ)
	return slices.DeleteFunc(slices.Clone(peers), func(p peer.ID) bool { return p == e.self || p == "" })
}

// pick returns the offering peer not yet tried with the fewest calls in
// flight from this node (first listed on a tie), or "" when there is none.
func (e *Engine) pick(typ string, tried []peer.ID) peer.ID {
	var best peer.ID
	bestN := -1
	peers := e.offering(typ)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range peers {
		if slices.Contains(tried, p) {
			continue
		}
		if n := e.inflight[p]; bestN < 0 || n < bestN {
			best, bestN = p, n
		}
	}
	return best
}

// fanOutPeers returns the executor of a task to fan out and the peers to
// ask: a task whose executor is a Merger, submitted without a peer, while
// some connected peer offers its type.
func (e *Engine) fanOutPeers(req SubmitRequest) (Merger, []peer.ID) {
	m, ok := e.execs[req.Type].x.(Merger)
	if !ok || req.Peer != "" || e.tr == nil {
		return nil, nil
	}
	return m, e.offering(req.Type)
}

// fanOut runs a task on this node and on every peer in peers, concurrently,
// and has m merge their answers (the peers' in order, then this node's).
// An input m rejects is not sent anywhere: it runs, and fails, here only.
// When this node rejects the input, the task fails with that. A panic of
// m fails the task (code panic).
func (e *Engine) fanOut(ctx context.Context, rec Record, req SubmitRequest, m Merger, peers []peer.ID) (final Record) {
	defer func() {
		if v := recover(); v != nil {
			e.log.Error("task merger panicked", "type", req.Type, "panic", v, "stack", string(debug.Stack()))
			final = finish(rec, nil, CodePanic, fmt.Errorf("merger panicked: %v", v))
		}
	}()
	if err := m.CheckInput(req.Input); err != nil {
		// Counted as a local execution that failed on its input.
		res, code, err := e.execute(ctx, req.Type, req.Input, "", e.lim.local)
		return finish(rec, res, code, err)
	}
	rec.State, rec.Peer, rec.Attempts, rec.StartedAt = StateRunning, e.self.String(), 1, time.Now().UTC()
	e.persistRunning(ctx, rec)

	parts := make([]Part, len(peers)+1)
	var wg sync.WaitGroup
	wire := Request{ID: rec.ID, Type: req.Type, Input: req.Input, TimeoutMS: e.timeout.Milliseconds()}
	for i, p := range peers {
		wg.Go(func() {
			part := Part{Peer: p}
			remote, err := e.attempt(ctx, p, wire, 1)
			if err == nil && remote.State == StateSucceeded {
				part.Result = remote.Result
			} else {
				_, code, msg := classify(remote, err)
				part.Code, part.Err = code, errors.New(msg)
			}
			parts[i] = part
		})
	}
	wg.Go(func() {
		actx, cancel := context.WithTimeoutCause(ctx, e.timeout, errAttemptTimeout)
		defer cancel()
		part := Part{Peer: e.self}
		part.Result, part.Code, part.Err = e.execute(actx, req.Type, req.Input, "", e.lim.local)
		parts[len(peers)] = part
	})
	wg.Wait() // every call honours ctx: this ends by the attempt timeout

	if local := parts[len(peers)]; local.Code == CodeBadInput {
		return finish(rec, nil, local.Code, local.Err)
	}
	res, code, err := m.Merge(ctx, req.Input, parts)
	return finish(rec, res, code, err)
}
