package message

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// outboundStream is the kept stream this node opened to one peer. Requests
// are written by their callers (gathered by the frameWriter); responses are
// read by the callers themselves (see leader.go): while requests wait, one
// of them reads for everyone.
type outboundStream struct {
	svc  *Service
	peer peer.ID
	s    network.Stream
	w    *frameWriter

	// Owned by the leader.
	fr frameReader
	// rdl is the stream's read deadline (zero: none). It is only moved
	// earlier, or when it passed too early: requests' deadlines mostly
	// grow, and setting one arms a timer in the stream.
	rdl time.Time
	// frameDeadline bounds the rest of a frame that was not whole in the
	// buffer when it began (zero: none), across leaders.
	frameDeadline time.Time

	mu      sync.Mutex
	pending map[string]*waiter
	leader  *waiter // the one reading; nil: nobody reads
	// watch starts the watcher when nobody has read for watchAfter, so
	// that a stream the peer closed or reset while idle is noticed.
	watch      *time.Timer
	watchArmed bool
	watcher    *waiter
	done       chan struct{} // closed by fail; err is set before
	err        error
}

// retryableError marks a request that certainly did not reach a handler
// (the stream died before or while it was written, or the peer closed the
// stream without reading it), so it can be sent again on a new stream.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func isRetryable(err error) bool {
	var r *retryableError
	return errors.As(err, &r)
}

// errPeerClosed is the graceful end of an outbound stream: the peer only
// closes after answering everything it read (idle timeout, shutdown).
var errPeerClosed = fmt.Errorf("%w: closed by peer", ErrStreamClosed)

// outboundTo returns the live kept stream to p, opening it (once, however
// many callers wait) when there is none. waited reports that it had to
// wait for the stream to open, so the caller's clock reading is stale.
func (s *Service) outboundTo(ctx context.Context, p peer.ID, deadline time.Time) (ob *outboundStream, waited bool, err error) {
	ob, err = s.openedOutbound(p)
	if ob != nil || err != nil {
		return ob, false, err
	}
	ob, err = s.openOutboundOnce(ctx, p, deadline)
	return ob, true, err
}

// openedOutbound returns the kept stream to p if there is one (nil, nil if
// there is none).
func (s *Service) openedOutbound(p peer.ID) (*outboundStream, error) {
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.closing {
		return nil, ErrServiceClosed
	}
	return s.outbound[p], nil
}

// openOutboundOnce opens the kept stream to p, or waits for the caller
// already opening it.
func (s *Service) openOutboundOnce(ctx context.Context, p peer.ID, deadline time.Time) (*outboundStream, error) {
	for {
		s.smu.Lock()
		if s.closing {
			s.smu.Unlock()
			return nil, ErrServiceClosed
		}
		if ob := s.outbound[p]; ob != nil {
			s.smu.Unlock()
			return ob, nil
		}
		if wait, ok := s.opening[p]; ok {
			s.smu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		wait := make(chan struct{})
		s.opening[p] = wait
		s.smu.Unlock()

		octx, cancel := ctx, context.CancelFunc(func() {})
		if !deadline.IsZero() {
			octx, cancel = context.WithDeadline(ctx, deadline)
		}
		ob, err := s.openOutbound(octx, p)
		cancel()

		s.smu.Lock()
		delete(s.opening, p)
		close(wait)
		if err == nil && s.closing {
			_ = ob.s.Reset()
			err = ErrServiceClosed
		}
		if err == nil {
			s.outbound[p] = ob
		}
		s.smu.Unlock()
		if err != nil {
			return nil, err
		}
		return ob, nil
	}
}

func (s *Service) openOutbound(ctx context.Context, p peer.ID) (*outboundStream, error) {
	if p == s.lh.ID() {
		return nil, fmt.Errorf("%w: %s is this node", ErrPeerUnreachable, p)
	}
	if !reachable(s.lh, p) {
		return nil, noAddressError(p)
	}
	st, err := s.lh.NewStream(ctx, p, protocol.ID(ProtocolID))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrPeerUnreachable, p, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrPeerUnreachable, p, err)
	}
	ob := &outboundStream{
		svc:     s,
		peer:    p,
		s:       st,
		pending: make(map[string]*waiter),
		watcher: newWaiter(),
		done:    make(chan struct{}),
	}
	ob.watch = time.AfterFunc(time.Hour, ob.watchIdle)
	ob.watch.Stop()
	ob.fr = frameReader{br: bufio.NewReader(st), max: s.cfg.MaxMessageBytes, midFrame: ob.midFrame}
	ob.w = newFrameWriter(st, s.cfg.WriteTimeout, s.rec, func(err error) {
		ob.fail(fmt.Errorf("%w: write: %w", ErrStreamClosed, err), true)
	})
	return ob, nil
}

var timerPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// roundTrip writes the encoded request and waits for the response with its
// ID, until ctx is done or the deadline (when not zero) passes, reading the
// stream itself when nobody else is reading it. now is a recent clock
// reading.
func (ob *outboundStream) roundTrip(ctx context.Context, env *Envelope, f *frameBuf, deadline, now time.Time) (*Envelope, error) {
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := timerPool.Get().(*time.Timer)
		t.Reset(deadline.Sub(now))
		defer func() {
			t.Stop() // since Go 1.23 a stopped timer's channel holds no stale value
			timerPool.Put(t)
		}()
		expired = t.C
	} else if d, ok := ctx.Deadline(); ok {
		deadline = d // ctx.Done() fires then; a leader needs the time
	}
	w := waiterPool.Get().(*waiter)
	ob.mu.Lock()
	if ob.err != nil {
		err := ob.err
		ob.mu.Unlock()
		waiterPool.Put(w)
		return nil, &retryableError{err}
	}
	// Registered before the write: the reply may be read by a leader
	// before this write returns (another caller wrote the frame).
	ob.pending[env.ID] = w
	ob.mu.Unlock()

	if err := ob.w.write(f, now); err != nil {
		err = fmt.Errorf("%w: write: %w", ErrStreamClosed, err)
		ob.fail(err, true)
		return nil, &retryableError{err}
	}
	// Only now may it lead: a caller blocked in a write must not be the
	// one reading, or both peers could wait on full windows.
	ob.mu.Lock()
	w.written = true
	lead := ob.leader == nil && ob.err == nil
	if lead {
		ob.leader = w
	}
	ob.mu.Unlock()
	for {
		if lead {
			resp, err := ob.lead(ctx, env.ID, w, deadline)
			if err == nil {
				w.reuse()
				resp.ID = env.ID
			}
			return resp, err
		}
		select {
		case resp := <-w.ch:
			if resp == leadToken {
				lead = true
				continue
			}
			w.reuse()
			resp.ID = env.ID
			return resp, nil
		case <-ob.done:
			select {
			case resp := <-w.ch:
				if resp != leadToken {
					w.reuse()
					resp.ID = env.ID
					return resp, nil
				}
			default:
			}
			return nil, ob.failure()
		case <-ctx.Done():
			ob.abandon(env.ID, w)
			return nil, ctx.Err()
		case <-expired:
			ob.abandon(env.ID, w)
			return nil, context.DeadlineExceeded
		}
	}
}

// failure is the error of a request on a failed stream: retryable when the
// peer closed it gracefully, since it only does so after answering every
// request it read.
func (ob *outboundStream) failure() error {
	if errors.Is(ob.err, errPeerClosed) {
		return &retryableError{ob.err}
	}
	return ob.err
}

// fail ends the stream once: waiting requests see err, and the next
// request opens a new stream.
func (ob *outboundStream) fail(err error, reset bool) {
	ob.mu.Lock()
	if ob.err != nil {
		ob.mu.Unlock()
		return
	}
	ob.err = err
	ob.pending = nil
	ob.leader = nil
	ob.watch.Stop()
	ob.mu.Unlock()
	close(ob.done)

	s := ob.svc
	s.smu.Lock()
	if s.outbound[ob.peer] == ob {
		delete(s.outbound, ob.peer)
	}
	s.smu.Unlock()
	if reset {
		_ = ob.s.Reset()
	} else {
		_ = ob.s.Close()
	}
}
