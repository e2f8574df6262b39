package message

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// StreamsPerPeer is how many streams of ProtocolID a node accepts from one
// peer, and opens to one, at a time: the node's resource manager limit.
const StreamsPerPeer = 32

// DefaultExclusiveStreams is the default of ServiceConfig.ExclusiveStreams:
// as many as the requests a node's callers usually have in flight to one
// peer (16 concurrent requests then run as 16 raw streams would).
const DefaultExclusiveStreams = 16

// maxExclusiveStreams leaves one of the StreamsPerPeer the resource manager
// allows for the shared stream and one for reopening.
const maxExclusiveStreams = StreamsPerPeer - 2

// maxLearnedLimits bounds how many peers' lowered limits are remembered
// beyond the life of their streams (see streamRefused).
const maxLearnedLimits = 1024

// keptReadBufferBytes bounds the response buffer an idle exclusive stream
// keeps; a larger response's buffer is dropped when the stream goes idle.
const keptReadBufferBytes = 4 << 10

// exclusiveStream is a kept stream used by one request at a time: the
// requester writes its frame and reads the response itself, as the user
// of a raw stream does, with no goroutine between them.
type exclusiveStream struct {
	s        network.Stream
	peer     peer.ID
	of       *peerStreams
	fr       frameReader
	wdl, rdl time.Time // write and read deadlines set on s
	lastUsed time.Time // when it last went idle; zero until it has answered
}

// peerStreams are one peer's exclusive streams: the idle ones, most
// recently used last, and how many there are, idle or in use. It stays in
// the pool while count > 0, so a stream returns to it without a lookup.
// limit is how many it may have (ExclusiveStreams, or fewer once the peer
// refused a stream); waiters are requests whose stream the peer refused,
// waiting for one of these streams to be handed to them (nil: try again).
type peerStreams struct {
	idle    []*exclusiveStream
	count   int
	limit   int
	waiters []chan *exclusiveStream
}

// wakeAll tells every waiter to try again on its own.
func (ps *peerStreams) wakeAll() {
	for _, w := range ps.waiters {
		w <- nil
	}
	ps.waiters = nil
}

// exclusivePool holds every peer's exclusive streams; all holds each one
// opened (idle or in use) until it is dropped, for Shutdown to reset.
// limits holds, for each connected peer that refused one of our streams,
// how many exclusive streams it is given from then on.
type exclusivePool struct {
	mu     sync.Mutex
	closed bool
	peers  map[peer.ID]*peerStreams
	all    map[*exclusiveStream]struct{}
	limits map[peer.ID]int
}

func newExclusivePool() exclusivePool {
	return exclusivePool{
		peers:  make(map[peer.ID]*peerStreams),
		all:    make(map[*exclusiveStream]struct{}),
		limits: make(map[peer.ID]int),
	}
}

// errStreamRefused is a stream the peer reset as soon as it was opened
// because its resource manager allows no more of our message streams (a
// peer of an older build allows 16): the request was not handled.
var errStreamRefused = fmt.Errorf("%w: refused by the peer's stream limit", ErrStreamClosed)

// refusedByLimit reports whether err is the peer resetting a stream it
// refused for its resource limits.
func refusedByLimit(err error) bool {
	return errors.Is(err, &network.StreamError{ErrorCode: network.StreamResourceLimitExceeded, Remote: true})
}

// streamRefused learns from p refusing a message stream of ours: the
// shared one, or es. With open streams of ours to p when it did (the
// refused one included), p allows at most open-1, so from now on p gets
// open-2 exclusive streams and the shared one. The limit only ever goes
// down, and is forgotten when p disconnects. A refused es is dropped in
// the same step, so that concurrent refusals each count what is left.
func (s *Service) streamRefused(p peer.ID, es *exclusiveStream) {
	shared := es == nil // the refused one
	if !shared {
		s.smu.Lock()
		shared = s.outbound[p] != nil
		s.smu.Unlock()
	}
	pl := &s.excl
	pl.mu.Lock()
	open := 0
	if shared {
		open++
	}
	ps := pl.peers[p]
	if es != nil {
		ps = es.of
	}
	if ps != nil {
		open += ps.count
	}
	limit := max(open-2, 0)
	old, known := pl.limits[p]
	lowered := !known || limit < old
	if lowered {
		// Kept for connected peers only (forgetLimit), and for at most
		// maxLearnedLimits of them: a refusal that races its peer's
		// disconnection must not leave an entry for ever.
		if known || len(pl.limits) < maxLearnedLimits {
			pl.limits[p] = limit
		}
		if ps != nil {
			ps.limit = limit
		}
	}
	if es != nil {
		pl.dropLocked(es)
	}
	pl.mu.Unlock()
	if es != nil {
		_ = es.s.Reset()
	}
	if lowered {
		s.log.Info("peer refused a message stream: fewer exclusive streams to it", "peer", p.String(), "open", open, "exclusive_streams", limit)
	}
}

// forgetLimit forgets what p refused, once it is no longer connected: it
// may come back with another build.
func (s *Service) forgetLimit(p peer.ID) {
	s.excl.mu.Lock()
	delete(s.excl.limits, p)
	s.excl.mu.Unlock()
}

// awaitExclusive waits, for a request whose stream p refused, until one of
// p's exclusive streams is handed over (returned) or one is let go (nil:
// try again), or the request's deadline. When p has room or no exclusive
// stream to wait for, it returns nil at once.
func (s *Service) awaitExclusive(ctx context.Context, p peer.ID, deadline time.Time) (*exclusiveStream, error) {
	pl := &s.excl
	pl.mu.Lock()
	ps := pl.peers[p]
	if pl.closed || ps == nil || ps.count == 0 || ps.count < ps.limit {
		pl.mu.Unlock()
		return nil, nil
	}
	w := make(chan *exclusiveStream, 1)
	ps.waiters = append(ps.waiters, w)
	pl.mu.Unlock()

	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	var err error
	select {
	case es := <-w:
		return es, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = context.DeadlineExceeded
	}
	pl.mu.Lock()
	waiting := false
	ps.waiters = slices.DeleteFunc(ps.waiters, func(c chan *exclusiveStream) bool {
		if c == w {
			waiting = true
		}
		return c == w
	})
	pl.mu.Unlock()
	if !waiting { // handed a stream (or woken) as it gave up
		if es := <-w; es != nil {
			s.putExclusive(es, time.Now())
		}
	}
	return nil, err
}

// takeExclusive returns an exclusive stream to p: an idle one, or a new
// one while p has fewer than ExclusiveStreams (opened reports that, so the
// caller's clock reading is stale). It returns nil when all of p's are in
// use (the request shares the pipelined stream).
func (s *Service) takeExclusive(ctx context.Context, p peer.ID, deadline, now time.Time) (es *exclusiveStream, opened bool, err error) {
	if s.cfg.ExclusiveStreams <= 0 {
		return nil, false, nil
	}
	pl := &s.excl
	var stale []*exclusiveStream
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		return nil, false, ErrServiceClosed
	}
	ps := pl.peers[p]
	if ps == nil {
		ps = &peerStreams{limit: s.cfg.ExclusiveStreams}
		if l, ok := pl.limits[p]; ok {
			ps.limit = min(ps.limit, l)
		}
		pl.peers[p] = ps
	}
	// Streams idle for half the peer's idle timeout may be closed by it
	// soon: they are let go from the bottom of the stack.
	for len(ps.idle) > 0 && now.Sub(ps.idle[0].lastUsed) > s.cfg.IdleTimeout/2 {
		old := ps.idle[0]
		stale = append(stale, old)
		ps.idle = slices.Delete(ps.idle, 0, 1)
		ps.count--
		delete(pl.all, old)
	}
	if n := len(ps.idle); n > 0 {
		es = ps.idle[n-1]
		ps.idle[n-1] = nil
		ps.idle = ps.idle[:n-1]
	} else if ps.count < ps.limit {
		ps.count++ // opened below, counted meanwhile
		es = &exclusiveStream{peer: p, of: ps}
	}
	if ps.count == 0 {
		ps.wakeAll()
		delete(pl.peers, p)
	}
	pl.mu.Unlock()
	for _, old := range stale {
		_ = old.s.Close()
	}
	if es == nil || es.s != nil {
		return es, false, nil
	}

	st, err := s.openStream(ctx, p, deadline)
	if err == nil {
		es.fr = frameReader{br: bufio.NewReader(st), max: s.cfg.MaxMessageBytes}
		pl.mu.Lock()
		if pl.closed {
			err = ErrServiceClosed
			_ = st.Reset()
		} else {
			es.s = st
			pl.all[es] = struct{}{}
		}
		pl.mu.Unlock()
	}
	if err != nil {
		s.dropExclusive(es)
		return nil, false, err
	}
	return es, true, nil
}

// putExclusive makes es idle again after a complete round trip, hands it
// to a request waiting for one, or closes it when its peer now has more
// than its limit.
func (s *Service) putExclusive(es *exclusiveStream, now time.Time) {
	if cap(es.fr.buf) > keptReadBufferBytes {
		es.fr.buf = nil
	}
	es.lastUsed = now
	pl := &s.excl
	pl.mu.Lock()
	if pl.closed {
		pl.mu.Unlock()
		_ = es.s.Reset()
		return
	}
	ps := es.of
	if len(ps.waiters) > 0 {
		w := ps.waiters[0]
		ps.waiters = slices.Delete(ps.waiters, 0, 1)
		pl.mu.Unlock()
		w <- es
		return
	}
	if ps.count > ps.limit {
		ps.count--
		delete(pl.all, es)
		pl.mu.Unlock()
		_ = es.s.Close()
		return
	}
	ps.idle = append(ps.idle, es)
	pl.mu.Unlock()
}

// dropExclusive resets es (when it was opened) and forgets it.
func (s *Service) dropExclusive(es *exclusiveStream) {
	if es.s != nil {
		_ = es.s.Reset()
	}
	pl := &s.excl
	pl.mu.Lock()
	pl.dropLocked(es)
	pl.mu.Unlock()
}

// dropLocked forgets es, with pl.mu held: a request waiting for one of its
// peer's streams may open one instead.
func (pl *exclusivePool) dropLocked(es *exclusiveStream) {
	delete(pl.all, es)
	ps := es.of
	ps.count--
	switch {
	case ps.count <= 0:
		ps.wakeAll()
		if pl.peers[es.peer] == ps {
			delete(pl.peers, es.peer)
		}
	case len(ps.waiters) > 0 && ps.count < ps.limit:
		w := ps.waiters[0]
		ps.waiters = slices.Delete(ps.waiters, 0, 1)
		w <- nil
	}
}

// dropIdleOn resets the idle exclusive streams to p on connection c (it
// closed, or one of its streams just failed).
func (s *Service) dropIdleOn(p peer.ID, c network.Conn) {
	pl := &s.excl
	var dead []*exclusiveStream
	pl.mu.Lock()
	if ps := pl.peers[p]; ps != nil {
		ps.idle = slices.DeleteFunc(ps.idle, func(es *exclusiveStream) bool {
			if es.s.Conn() != c {
				return false
			}
			dead = append(dead, es)
			ps.count--
			delete(pl.all, es)
			return true
		})
		if ps.count <= 0 {
			ps.wakeAll()
			delete(pl.peers, p)
		}
	}
	pl.mu.Unlock()
	for _, es := range dead {
		_ = es.s.Reset()
	}
}

// closeExclusive resets every exclusive stream: requests using one fail
// with ErrServiceClosed, and no new one is taken.
func (s *Service) closeExclusive() {
	pl := &s.excl
	pl.mu.Lock()
	pl.closed = true
	for _, ps := range pl.peers {
		ps.wakeAll()
	}
	all := make([]network.Stream, 0, len(pl.all))
	for es := range pl.all {
		all = append(all, es.s)
	}
	pl.mu.Unlock()
	for _, st := range all {
		_ = st.Reset()
	}
}

// aLongTimeAgo, as a read deadline, wakes a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// exclusiveRoundTrip writes f on es and reads the response itself. The
// stream returns to the pool only after a whole, matching response; any
// failure resets it (a late response can never reach another request).
func (s *Service) exclusiveRoundTrip(ctx context.Context, es *exclusiveStream, env *Envelope, f *frameBuf, deadline, now time.Time) (*Envelope, error) {
	// Write deadlines move only when less than half of WriteTimeout
	// remains, as on the pipelined stream.
	if wt := s.cfg.WriteTimeout; es.wdl.Sub(now) < wt/2 {
		es.wdl = now.Add(wt)
		if err := es.s.SetWriteDeadline(es.wdl); err != nil {
			return nil, s.exclusiveFailed(es, &retryableError{fmt.Errorf("%w: %w", ErrStreamClosed, err)})
		}
	}
	if _, err := es.s.Write(f.b); err != nil {
		if refusedByLimit(err) && es.lastUsed.IsZero() {
			return nil, s.exclusiveRefused(es)
		}
		return nil, s.exclusiveFailed(es, &retryableError{fmt.Errorf("%w: write: %w", ErrStreamClosed, err)})
	}
	s.rec.sent(f.typ)

	// The read deadline is the request's. Setting one arms a timer, so
	// it is only moved when it would come too early, or more than a
	// twentieth of RequestTimeout too late: a request without a deadline
	// of its own times out between RequestTimeout and 1.05 times it. A
	// context that can end wakes the read through context.AfterFunc.
	want := deadline
	if d, ok := ctx.Deadline(); ok {
		want = d
	}
	slack := s.cfg.RequestTimeout / 20
	if es.rdl.Before(want) || es.rdl.After(want.Add(slack)) {
		es.rdl = want.Add(slack / 2)
		if err := es.s.SetReadDeadline(es.rdl); err != nil {
			return nil, s.exclusiveFailed(es, fmt.Errorf("%w: %w", ErrStreamClosed, err))
		}
	}
	var stop func() bool
	if ctx.Done() != nil {
		st := es.s
		stop = context.AfterFunc(ctx, func() { _ = st.SetReadDeadline(aLongTimeAgo) })
	}

	body, started, err := es.fr.next()
	// A context that ended just as the response arrived has moved (or is
	// moving) the stream's read deadline into the past: the stream is not
	// reused, or the next request on it would fail for nothing.
	interrupted := stop != nil && !stop()
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case !started && errors.Is(err, io.EOF):
			// The peer closes a stream only after answering all it
			// read: this request was not read.
			err = &retryableError{errPeerClosed}
		case !started && refusedByLimit(err) && es.lastUsed.IsZero():
			// Refused as it opened (a stream that has answered
			// before was not: its request may have been handled).
			return nil, s.exclusiveRefused(es)
		case isTimeout(err):
			err = context.DeadlineExceeded
		default:
			if started {
				s.rec.failed(metrics.Unknown, streamErrorReason(err))
			}
			err = fmt.Errorf("%w: %w", ErrStreamClosed, err)
		}
		return nil, s.exclusiveFailed(es, err)
	}
	resp := getEnvelope()
	id, canonical, err := decodeEnvelopeInto(resp, body)
	if err == nil && resp.V != EnvelopeVersion {
		err = fmt.Errorf("%w: response version %d", ErrMalformed, resp.V)
	}
	if err == nil && !canonical {
		id = []byte(resp.ID)
	}
	if err == nil && string(id) != env.ID {
		err = fmt.Errorf("%w: response to %q on the stream of %q", ErrMalformed, id, env.ID)
	}
	if err != nil {
		resp.release()
		s.rec.failed(metrics.Unknown, ReasonMalformed)
		return nil, s.exclusiveFailed(es, fmt.Errorf("%w: bad response: %w", ErrStreamClosed, err))
	}
	s.rec.received(resp.Type)
	resp.ID = env.ID
	if interrupted {
		s.dropExclusive(es)
	} else {
		s.putExclusive(es, now)
	}
	return resp, nil
}

// exclusiveFailed drops es after a failed round trip and returns err, or
// ErrServiceClosed when the service is closing. A stream that died makes
// the other idle streams of its connection suspect: they are dropped too,
// so a retry opens a fresh one.
func (s *Service) exclusiveFailed(es *exclusiveStream, err error) error {
	c := es.s.Conn()
	s.dropExclusive(es)
	if isRetryable(err) {
		s.dropIdleOn(es.peer, c)
	}
	return s.unlessClosed(err)
}

// exclusiveRefused drops es, which its peer refused, learning the peer's
// limit; the request was not handled, and may be sent again.
func (s *Service) exclusiveRefused(es *exclusiveStream) error {
	s.streamRefused(es.peer, es)
	return s.unlessClosed(&retryableError{errStreamRefused})
}

// unlessClosed returns err, or ErrServiceClosed when the service is
// closing (its exclusive streams are being reset).
func (s *Service) unlessClosed(err error) error {
	s.excl.mu.Lock()
	closed := s.excl.closed
	s.excl.mu.Unlock()
	if closed {
		return ErrServiceClosed
	}
	return err
}
