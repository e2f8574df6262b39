package message

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// outboundStream is the kept stream this node opened to one peer: requests
// are written by their callers (serialised), responses are read by one
// goroutine and handed to the waiting caller by ID.
type outboundStream struct {
	svc  *Service
	peer peer.ID
	s    network.Stream
	w    *frameWriter

	answered atomic.Bool // a response has arrived: the peer took the stream

	mu      sync.Mutex
	pending map[string]chan *Envelope
	done    chan struct{} // closed by fail; err is set before
	err     error
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
			s.readers.Add(1)
		}
		s.smu.Unlock()
		if err != nil {
			return nil, err
		}
		go ob.readLoop()
		return ob, nil
	}
}

// openStream opens a message stream to p, within deadline when it is not
// zero. Errors wrap ErrPeerUnreachable.
func (s *Service) openStream(ctx context.Context, p peer.ID, deadline time.Time) (network.Stream, error) {
	if p == s.lh.ID() {
		return nil, fmt.Errorf("%w: %s is this node", ErrPeerUnreachable, p)
	}
	if !reachable(s.lh, p) {
		return nil, noAddressError(p)
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	st, err := s.lh.NewStream(ctx, p, protocol.ID(ProtocolID))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrPeerUnreachable, p, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrPeerUnreachable, p, err)
	}
	return st, nil
}

func (s *Service) openOutbound(ctx context.Context, p peer.ID) (*outboundStream, error) {
	st, err := s.openStream(ctx, p, time.Time{})
	if err != nil {
		return nil, err
	}
	ob := &outboundStream{
		svc:     s,
		peer:    p,
		s:       st,
		pending: make(map[string]chan *Envelope),
		done:    make(chan struct{}),
	}
	ob.w = newFrameWriter(st, s.cfg.WriteTimeout, s.rec, func(err error) {
		if ob.refused(err) {
			return
		}
		ob.fail(fmt.Errorf("%w: write: %w", ErrStreamClosed, err), true)
	})
	return ob, nil
}

var (
	timerPool = sync.Pool{New: func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}}
	replyPool = sync.Pool{New: func() any { return make(chan *Envelope, 1) }}
)

// roundTrip writes the encoded request and waits for the response with its
// ID, until ctx is done or the deadline (when not zero) passes. now is a
// recent clock reading.
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
	}
	ch := replyPool.Get().(chan *Envelope)
	ob.mu.Lock()
	if ob.err != nil {
		err := ob.err
		ob.mu.Unlock()
		replyPool.Put(ch)
		return nil, &retryableError{err}
	}
	ob.pending[env.ID] = ch
	ob.mu.Unlock()

	if err := ob.w.write(f, now); err != nil {
		if ob.refused(err) {
			return nil, &retryableError{errStreamRefused}
		}
		err = fmt.Errorf("%w: write: %w", ErrStreamClosed, err)
		ob.fail(err, true)
		return nil, &retryableError{err}
	}
	select {
	case resp := <-ch:
		replyPool.Put(ch) // drained: safe to reuse
		resp.ID = env.ID
		return resp, nil
	case <-ob.done:
		select {
		case resp := <-ch:
			replyPool.Put(ch)
			resp.ID = env.ID
			return resp, nil
		default:
		}
		if errors.Is(ob.err, errPeerClosed) || errors.Is(ob.err, errStreamRefused) {
			return nil, &retryableError{ob.err}
		}
		return nil, ob.err
	case <-ctx.Done():
		ob.forget(env.ID)
		return nil, ctx.Err()
	case <-expired:
		ob.forget(env.ID)
		return nil, context.DeadlineExceeded
	}
}

// forget drops a request that stopped waiting; a late response is dropped.
func (ob *outboundStream) forget(id string) {
	ob.mu.Lock()
	delete(ob.pending, id)
	ob.mu.Unlock()
}

// readLoop reads responses until the stream ends, then fails what is left.
func (ob *outboundStream) readLoop() {
	s := ob.svc
	defer s.readers.Done()
	fr := frameReader{
		br:          bufio.NewReader(ob.s),
		max:         s.cfg.MaxMessageBytes,
		setDeadline: ob.s.SetReadDeadline,
		timeout:     s.cfg.ReadTimeout,
	}
	for {
		body, started, err := fr.next()
		if err != nil {
			if !started && errors.Is(err, io.EOF) {
				ob.fail(errPeerClosed, false)
				return
			}
			if !started && ob.refused(err) {
				return
			}
			if started {
				s.rec.failed(metrics.Unknown, streamErrorReason(err))
			}
			ob.fail(fmt.Errorf("%w: %w", ErrStreamClosed, err), true)
			return
		}
		// The response's ID is looked up as bytes: the waiting request
		// gives it its own ID string (the same value) in roundTrip.
		env := getEnvelope()
		id, canonical, err := decodeEnvelopeInto(env, body)
		if err == nil && env.V != EnvelopeVersion {
			err = fmt.Errorf("%w: response version %d", ErrMalformed, env.V)
		}
		if err != nil {
			s.rec.failed(metrics.Unknown, ReasonMalformed)
			ob.fail(fmt.Errorf("%w: bad response: %w", ErrStreamClosed, err), true)
			return
		}
		if !canonical {
			id = []byte(env.ID)
		}
		if !ob.answered.Load() {
			ob.answered.Store(true)
		}
		s.rec.received(env.Type)
		ob.mu.Lock()
		ch := ob.pending[string(id)]
		delete(ob.pending, string(id))
		ob.mu.Unlock()
		if ch != nil {
			ch <- env
		} else {
			s.log.Debug("response without a waiting request", "peer", ob.peer.String(), "type", env.Type, "id", string(id))
			env.release()
		}
	}
}

// refused reports whether err is the peer refusing the stream as it opened
// (see streamRefused; a stream that has answered was not refused), and
// then ends it: the requests on it were not handled.
func (ob *outboundStream) refused(err error) bool {
	if ob.answered.Load() || !refusedByLimit(err) {
		return false
	}
	ob.mu.Lock()
	first := ob.err == nil
	ob.mu.Unlock()
	if first {
		ob.svc.streamRefused(ob.peer, nil)
	}
	ob.fail(errStreamRefused, true)
	return true
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
