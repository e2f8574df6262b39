package message

import (
	"bufio"
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
)

// inboundStream serves requests arriving on one stream opened by a peer.
type inboundStream struct {
	svc    *Service
	s      network.Stream
	from   peer.ID
	w      *frameWriter
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup // handlers of this stream
	serve  Handler        // metrics middleware around deliver

	stopOnce sync.Once
	stopped  chan struct{}
}

// handleStream is the stream handler of ProtocolID. It reads frames until
// the stream ends, dispatching each message to its own goroutine (bounded
// by MaxConcurrentPerStream) so a slow request does not hold up pings;
// messages answered without blocking (ping, rejections) are answered by
// the reader itself.
func (s *Service) handleStream(st network.Stream) {
	is := &inboundStream{
		svc:     s,
		s:       st,
		from:    st.Conn().RemotePeer(), // authenticated by the security handshake
		sem:     make(chan struct{}, s.cfg.MaxConcurrentPerStream),
		stopped: make(chan struct{}),
	}
	is.ctx, is.cancel = context.WithCancel(s.ctx)
	defer is.cancel()
	is.w = newFrameWriter(st, s.cfg.WriteTimeout, s.rec, func(error) {
		is.cancel()
		_ = st.Reset()
	})
	is.serve = s.observe(is.deliver)

	s.smu.Lock()
	if s.closing {
		s.smu.Unlock()
		_ = st.Reset()
		return
	}
	s.inbound[is] = struct{}{}
	s.readers.Add(1)
	s.smu.Unlock()
	defer func() {
		s.smu.Lock()
		delete(s.inbound, is)
		s.smu.Unlock()
		s.readers.Done()
	}()

	graceful := is.readLoop()
	_, _ = is.w.flush() // handlers' replies are written directly from now on
	if graceful {
		is.wg.Wait() // in-flight handlers still reply
		_ = st.Close()
		return
	}
	is.cancel()
	_ = st.Reset()
	is.wg.Wait()
}

// readLoop reads and dispatches frames. It returns true when the stream may
// be closed gracefully (after its handlers finished), false to reset it.
func (is *inboundStream) readLoop() (graceful bool) {
	s := is.svc
	fr := frameReader{
		br:          bufio.NewReader(is.s),
		max:         s.cfg.MaxMessageBytes,
		setDeadline: is.s.SetReadDeadline,
		timeout:     s.cfg.ReadTimeout,
		idle:        s.cfg.IdleTimeout,
		beforeWait:  func() bool { wrote, _ := is.w.flush(); return wrote },
	}
	for {
		body, started, err := fr.next()
		if err != nil {
			if !started {
				switch {
				case is.isStopped() || errors.Is(err, io.EOF):
					// We stopped reading, or the peer closed its side
					// after its last request (half-close): in-flight
					// handlers still reply.
					return true
				case fr.idleExpired(err):
					// An idle stream is kept while it still has
					// requests in flight.
					if len(is.sem) > 0 {
						continue
					}
					return true
				}
				// The stream was reset or its connection died (closed,
				// or timed out by the transport): nobody is left to
				// read a reply, so the handlers are cancelled.
				s.log.Debug("inbound stream lost", "peer", is.from.String(), "err", err)
				return false
			}
			reason := streamErrorReason(err)
			s.rec.failed(metrics.Unknown, reason)
			s.log.Debug("bad inbound frame", "peer", is.from.String(), "reason", reason, "err", err)
			switch {
			case reason == ReasonTooLarge || reason == ReasonMalformed:
				// The stream cannot be resynchronised: answer, then close.
				is.replyError("", reason, err)
				return true
			case errors.Is(err, io.ErrUnexpectedEOF) || is.isStopped():
				// Truncated frame: the peer closed its side mid-frame;
				// what it sent before still gets its replies.
				return true
			default: // stalled mid-frame, reset, or connection lost
				return false
			}
		}
		env := getEnvelope()
		id, canonical, err := decodeEnvelopeInto(env, body)
		if err != nil {
			env.release()
			s.rec.failed(metrics.Unknown, ReasonMalformed)
			s.log.Debug("malformed inbound message", "peer", is.from.String(), "err", err)
			is.replyError("", ReasonMalformed, err) // framing is intact: carry on
			continue
		}
		env.received = fr.arrived
		if s.inline(env) {
			// Answered before the next frame is read: the envelope and
			// its ID (borrowed from the frame) are reused afterwards.
			if canonical {
				env.ID = borrowString(id)
			}
			if fr.br.Buffered() > 0 {
				// More requests are here already: their replies leave
				// together, flushed before the reader next waits.
				is.w.cork()
			}
			_, _ = is.serve(is.ctx, is.from, env)
			env.release()
			continue
		}
		// A handler may keep what it is given: its own envelope and ID.
		env.pooled = false
		if canonical {
			env.ID = string(id)
		}
		_, _ = is.w.flush() // the reader may block below
		size := len(body)
		if !s.held.reserve(is.from, size) {
			s.log.Debug("inbound request refused: busy", "peer", is.from.String(), "type", env.Type)
			s.rec.failed(env.Type, ReasonBusy)
			is.replyError(env.ID, ReasonBusy, errBusy)
			continue
		}
		select {
		case is.sem <- struct{}{}:
		case <-is.stopped:
			s.held.release(is.from, size)
			return true
		case <-is.ctx.Done():
			s.held.release(is.from, size)
			return false
		}
		is.wg.Add(1)
		go func() {
			defer func() {
				s.held.release(is.from, size)
				<-is.sem
				is.wg.Done()
			}()
			_, _ = is.serve(is.ctx, is.from, env)
		}()
	}
}

// stopReading makes readLoop return at the next frame boundary; in-flight
// handlers still reply.
func (is *inboundStream) stopReading() {
	is.stopOnce.Do(func() {
		close(is.stopped)
		_ = is.s.CloseRead()
	})
}

func (is *inboundStream) isStopped() bool {
	select {
	case <-is.stopped:
		return true
	default:
		return false
	}
}

// deliver routes one message and writes its reply; errors are returned
// (with their metric reason) for the metrics middleware to count.
func (is *inboundStream) deliver(ctx context.Context, from peer.ID, req *Envelope) (*Envelope, error) {
	s := is.svc
	resp, err := s.route(ctx, from, req)
	if err != nil {
		var me *messageError
		if errors.As(err, &me) && me.reason == ReasonPanic {
			s.log.Error("message handler panicked", "type", req.Type, "peer", from.String(), "err", err, "stack", string(me.stack))
		} else {
			s.log.Debug("message failed", "type", req.Type, "peer", from.String(), "err", err)
		}
		resp = errorEnvelope(req.ID, err)
	}
	if resp == nil {
		return nil, err
	}
	// One clock read serves the reply's sent_at, the write deadline and
	// the end of the message's processing time.
	now := time.Now()
	req.answered = metrics.Of(now)
	resp.V, resp.ID = EnvelopeVersion, req.ID
	if resp.SentAt.IsZero() {
		resp.SentAt = now.UTC()
	}
	f, ferr := encodeFrame(resp, s.cfg.MaxMessageBytes)
	if ferr != nil {
		// The handler's response cannot be sent: tell the peer instead.
		if err == nil {
			err = &messageError{reason: errorReason(ferr), code: CodeInternal, msg: "response could not be encoded", err: ferr}
			if errors.Is(ferr, ErrFrameTooLarge) {
				err.(*messageError).code = CodeTooLarge
			}
		}
		if f, ferr = encodeFrame(errorEnvelope(req.ID, err), s.cfg.MaxMessageBytes); ferr != nil {
			return nil, err
		}
	}
	resp.release() // the service's own reply (a pong) is reused
	werr := is.w.write(f, now)
	f.release()
	if werr != nil {
		// A failed write leaves a partial frame: the stream is unusable.
		is.cancel()
		_ = is.s.Reset()
		if err == nil {
			err = &messageError{reason: ReasonStream, code: CodeInternal, err: werr}
		}
	}
	return nil, err
}

// replyError answers a frame that never became a message.
func (is *inboundStream) replyError(id, reason string, cause error) {
	code := CodeMalformed
	if reason == ReasonTooLarge {
		code = CodeTooLarge
	}
	me := errBusy
	if cause != error(errBusy) {
		me = &messageError{reason: reason, code: code, err: cause}
	}
	f, err := encodeFrame(errorEnvelope(id, me), 0)
	if err != nil {
		return
	}
	defer f.release()
	if err := is.w.write(f, time.Time{}); err != nil {
		is.svc.log.Debug("error reply failed", "peer", is.from.String(), "err", err)
	}
}

// errorEnvelope builds the "error" reply for err.
func errorEnvelope(id string, err error) *Envelope {
	ep := ErrorPayload{Code: CodeHandler, Message: err.Error()}
	var re *RemoteError
	var me *messageError
	switch {
	case errors.As(err, &re):
		ep = ErrorPayload{Code: re.Code, Message: re.Message}
	case errors.As(err, &me):
		ep = ErrorPayload{Code: me.code, Message: me.msg}
		if ep.Message == "" && me.err != nil {
			ep.Message = me.err.Error()
		}
	case isTimeout(err):
		ep.Code = CodeTimeout
	}
	ep.Message = oneline.Flatten(ep.Message) // the wire carries one line
	env, _ := NewEnvelope(TypeError, ep)
	env.ID = id
	return env
}
