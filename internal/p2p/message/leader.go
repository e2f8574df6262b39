package message

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// Responses on an outbound stream are read by the requesters themselves,
// leader and followers. While requests wait, exactly one of them (the
// leader) reads the stream for everyone, handing each response to its
// requester by ID, until its own arrives or it must stop waiting; it then
// passes the reading on to another waiting request. With one request at a
// time the requester reads its own response, as a raw stream's user would,
// with no hand-off between goroutines.
//
// Every requester keeps its own deadline and cancellation: the stream's
// read deadline is never later than the leader's, a cancelled leader
// interrupts its read, and a frame half read when the leader leaves stays
// in the frameReader for the next one. When nobody has read for watchAfter,
// a watcher reads in the background until a frame comes or the stream
// ends, so that a stream the peer closed while idle is let go.

// watchAfter is how long an outbound stream may go unread before the
// watcher reads it.
const watchAfter = time.Second

// waiter is a request waiting for its response.
type waiter struct {
	ch      chan *Envelope // cap 1: the response, or leadToken
	written bool           // its frame is written or queued: it may lead
}

// leadToken, sent on a waiting request's channel, makes it the leader.
var leadToken = new(Envelope)

var waiterPool = sync.Pool{New: func() any { return newWaiter() }}

func newWaiter() *waiter { return &waiter{ch: make(chan *Envelope, 1)} }

// reuse returns w, whose channel is drained and no longer known to the
// stream, to the pool.
func (w *waiter) reuse() {
	w.written = false
	waiterPool.Put(w)
}

// abandon drops a request that stopped waiting, passing the reading on if
// it had it; a late response is dropped.
func (ob *outboundStream) abandon(id string, w *waiter) {
	ob.mu.Lock()
	if ob.pending[id] == w {
		delete(ob.pending, id)
	}
	if ob.leader == w {
		ob.passLocked()
	}
	select {
	case resp := <-w.ch:
		if resp != leadToken {
			resp.release()
		}
	default:
	}
	ob.mu.Unlock()
	w.reuse() // nobody sends on it any more
}

// passLocked passes the reading on to a waiting request whose frame is
// written, if there is one; else nobody reads until the next request, or
// the watcher.
func (ob *outboundStream) passLocked() {
	ob.leader = nil
	for _, w := range ob.pending {
		if w.written {
			ob.leader = w
			w.ch <- leadToken // its buffer is empty: it is still waiting
			return
		}
	}
	if !ob.watchArmed && ob.err == nil {
		ob.watchArmed = true
		ob.watch.Reset(watchAfter)
	}
}

// watchIdle runs watchAfter after the reading stopped: if nobody reads
// now, it reads until a frame arrives (then passes the reading on) or the
// stream ends.
func (ob *outboundStream) watchIdle() {
	ob.mu.Lock()
	ob.watchArmed = false
	if ob.err != nil || ob.leader != nil {
		ob.mu.Unlock()
		return
	}
	ob.leader = ob.watcher
	ob.mu.Unlock()
	_, _ = ob.lead(context.Background(), "", ob.watcher, time.Time{})
}

// lead reads the stream for every waiting request until the response with
// id arrives (returned), ctx is done or the deadline passes (the reading
// is passed on, a frame half read included), or the stream fails. The
// watcher leads with no id and no deadline, and passes the reading on
// after one frame.
func (ob *outboundStream) lead(ctx context.Context, id string, w *waiter, deadline time.Time) (*Envelope, error) {
	if ctx.Done() != nil {
		// A cancelled leader interrupts its own read; an interruption that
		// comes late, to a later leader, is seen as early and ignored.
		stop := context.AfterFunc(ctx, func() { _ = ob.s.SetReadDeadline(time.Now()) })
		defer stop()
	}
	s := ob.svc
	for {
		body, started, err := ob.readFrame(ctx, deadline)
		if err != nil {
			return nil, ob.readFailed(ctx, id, w, deadline, started, err)
		}
		// The response's ID is looked up as bytes: the waiting request
		// gives it its own ID string (the same value) in roundTrip.
		env := getEnvelope()
		rid, canonical, err := decodeEnvelopeInto(env, body)
		if err == nil && env.V != EnvelopeVersion {
			err = fmt.Errorf("%w: response version %d", ErrMalformed, env.V)
		}
		if err != nil {
			env.release()
			s.rec.failed(metrics.Unknown, ReasonMalformed)
			ob.fail(fmt.Errorf("%w: bad response: %w", ErrStreamClosed, err), true)
			return nil, ob.failure()
		}
		if !canonical {
			rid = []byte(env.ID)
		}
		s.rec.received(env.Type)
		ob.mu.Lock()
		if ob.err != nil {
			ob.mu.Unlock()
			env.release()
			return nil, ob.failure()
		}
		if id != "" && string(rid) == id {
			delete(ob.pending, id)
			ob.passLocked()
			ob.mu.Unlock()
			return env, nil
		}
		to := ob.pending[string(rid)]
		delete(ob.pending, string(rid))
		if to != nil {
			to.ch <- env // its buffer is empty: it is not the leader
		}
		if w == ob.watcher {
			ob.passLocked()
		}
		ob.mu.Unlock()
		if to == nil {
			s.log.Debug("response without a waiting request", "peer", ob.peer.String(), "type", env.Type, "id", string(rid))
			env.release()
		}
		if w == ob.watcher {
			return nil, nil
		}
	}
}

// readFrame reads the next frame with the stream's read deadline no later
// than the leader's deadline (zero: none) and, once a frame has begun, than
// the frame's (ReadTimeout after it began); a timeout with ctx done is the
// leader's cancellation. A deadline that passes early (one set for an
// earlier leader, or a cancelled leader's late interruption) is moved and
// the read resumed.
func (ob *outboundStream) readFrame(ctx context.Context, deadline time.Time) (body []byte, started bool, err error) {
	ob.bound(deadline)
	for {
		body, started, err = ob.fr.next()
		if err == nil {
			ob.frameDeadline = time.Time{}
			return body, true, nil
		}
		if !isTimeout(err) {
			return nil, started, err
		}
		now := time.Now()
		if ctx.Err() != nil || (!deadline.IsZero() && !now.Before(deadline)) || (!ob.frameDeadline.IsZero() && !now.Before(ob.frameDeadline)) {
			return nil, started, err
		}
		ob.rdl = ob.limit(deadline)
		_ = ob.s.SetReadDeadline(ob.rdl)
	}
}

// limit returns the earlier of the leader's deadline and the frame's (zero:
// none).
func (ob *outboundStream) limit(deadline time.Time) time.Time {
	if !ob.frameDeadline.IsZero() && (deadline.IsZero() || ob.frameDeadline.Before(deadline)) {
		return ob.frameDeadline
	}
	return deadline
}

// bound moves the stream's read deadline to limit(deadline) when it is
// later than that, or unset.
func (ob *outboundStream) bound(deadline time.Time) {
	want := ob.limit(deadline)
	if want.IsZero() {
		if !ob.rdl.IsZero() {
			ob.rdl = time.Time{}
			_ = ob.s.SetReadDeadline(time.Time{})
		}
		return
	}
	if ob.rdl.IsZero() || want.Before(ob.rdl) {
		ob.rdl = want
		_ = ob.s.SetReadDeadline(want)
	}
}

// midFrame is the frameReader's hook when a frame begins that is not whole
// in the buffer: its rest must come within ReadTimeout.
func (ob *outboundStream) midFrame() {
	ob.frameDeadline = time.Now().Add(ob.svc.cfg.ReadTimeout)
	if ob.rdl.IsZero() || ob.frameDeadline.Before(ob.rdl) {
		ob.rdl = ob.frameDeadline
		_ = ob.s.SetReadDeadline(ob.rdl)
	}
}

// readFailed handles a read that ended with err: the leader's own deadline
// or cancellation passes the reading on; anything else (the frame's
// ReadTimeout, the stream ending or breaking) fails the stream.
func (ob *outboundStream) readFailed(ctx context.Context, id string, w *waiter, deadline time.Time, started bool, err error) error {
	if ob.failed() != nil {
		return ob.failure()
	}
	if isTimeout(err) {
		own := ctx.Err()
		if own == nil && !deadline.IsZero() && !time.Now().Before(deadline) {
			own = context.DeadlineExceeded
		}
		if own != nil {
			ob.abandon(id, w)
			return own
		}
	}
	if !started && errors.Is(err, io.EOF) {
		ob.fail(errPeerClosed, false)
		return ob.failure()
	}
	if started {
		ob.svc.rec.failed(metrics.Unknown, streamErrorReason(err))
	}
	ob.fail(fmt.Errorf("%w: %w", ErrStreamClosed, err), true)
	return ob.failure()
}

// failed returns the error that ended the stream, nil while it is live.
func (ob *outboundStream) failed() error {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.err
}
