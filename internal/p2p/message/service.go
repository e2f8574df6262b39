package message

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// ServiceConfig configures NewService; zero values take the defaults.
type ServiceConfig struct {
	// MaxMessageBytes caps a frame body (default 1 MiB); larger frames are
	// refused on their length prefix, before allocation.
	MaxMessageBytes int
	// RequestTimeout bounds Request and Ping when ctx has no deadline
	// (default 30s).
	RequestTimeout time.Duration
	// ReadTimeout bounds the rest of a frame once its first byte arrived
	// (default 10s): a peer stalling mid-frame gets its stream reset.
	ReadTimeout time.Duration
	// WriteTimeout bounds one frame write (default 10s).
	WriteTimeout time.Duration
	// IdleTimeout closes an inbound stream that carried no frame for
	// between IdleTimeout/2 and IdleTimeout and has nothing in flight
	// (default 5m); the requester reopens transparently.
	IdleTimeout time.Duration
	// MaxConcurrentPerStream bounds handlers running for one stream
	// (default 64); beyond it the stream is not read (backpressure).
	MaxConcurrentPerStream int
	// ExclusiveStreams is how many kept streams per peer carry one request
	// at a time, read by the requester itself (default 16, at most 30:
	// the resource manager allows StreamsPerPeer message streams per peer
	// and direction); a request finding them all busy is pipelined on the
	// peer's shared stream instead. Negative: every request is pipelined.
	ExclusiveStreams int
	// MaxInflightBytes bounds the bytes of inbound request frames held by
	// running handlers across all peers (default 64 MiB), and
	// MaxHandlersPerPeer the handlers running for one peer across its
	// streams (default 64); beyond either a request gets the error code
	// busy at once instead of being buffered.
	MaxInflightBytes   int
	MaxHandlersPerPeer int
	// DrainTimeout bounds how long Close waits for in-flight handlers
	// (default 5s).
	DrainTimeout time.Duration
	// Tracing, when set, traces sampled messages: a span msg.send around
	// each request whose context is sampled (its traceparent goes in the
	// envelope), and a span msg around each handled message that carries
	// one (child of the sender's span). Nil traces nothing.
	Tracing *tracing.Tracing
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *ServiceConfig) defaults() {
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.MaxConcurrentPerStream <= 0 {
		c.MaxConcurrentPerStream = 64
	}
	switch {
	case c.ExclusiveStreams == 0:
		c.ExclusiveStreams = DefaultExclusiveStreams
	case c.ExclusiveStreams < 0:
		c.ExclusiveStreams = 0
	case c.ExclusiveStreams > maxExclusiveStreams:
		c.ExclusiveStreams = maxExclusiveStreams
	}
	if c.MaxInflightBytes <= 0 {
		c.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if c.MaxHandlersPerPeer <= 0 {
		c.MaxHandlersPerPeer = DefaultMaxHandlersPerPeer
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Service is the message service of DESIGN.md section 7: it serves
// ProtocolID, routing each inbound message by type to its Handler through
// the metrics middleware. Requests to a peer go over kept streams: up to
// ExclusiveStreams that carry one request at a time, read by the requester
// itself, and beyond those one shared stream on which requests are
// pipelined and their responses matched by ID.
type Service struct {
	lh      host.Host
	latency peerstore.Metrics // lh's peerstore, kept: Ping records into it
	cfg     ServiceConfig
	log     *slog.Logger
	rec     recorder
	observe Middleware
	held    *inflight

	mu       sync.Mutex
	handlers map[string]route
	routes   atomic.Pointer[map[string]route]

	ctx     context.Context // handlers' context; cancelled when draining gives up
	cancel  context.CancelFunc
	readers sync.WaitGroup // stream goroutines; each waits for its handlers

	smu      sync.Mutex
	closing  bool
	inbound  map[*inboundStream]struct{}
	outbound map[peer.ID]*outboundStream
	opening  map[peer.ID]chan struct{}
	excl     exclusivePool
	notifee  network.Notifiee

	idPrefix  string
	seq       atomic.Uint64
	closeOnce sync.Once
	closeErr  error
}

// NewService starts serving ProtocolID on h, any libp2p host (the node
// passes its p2p.Host's Libp2p()). m receives the message metrics; nil
// disables them (no middleware at all, the benchmarks' raw configuration).
// The built-in ping handler answers pong.
func NewService(h host.Host, m *metrics.Messages, cfg ServiceConfig) *Service {
	cfg.defaults()
	var idb [4]byte
	_, _ = rand.Read(idb[:])
	s := &Service{
		lh:       h,
		latency:  h.Peerstore(),
		cfg:      cfg,
		log:      cfg.Logger.With("component", "messages"),
		rec:      recorder{m},
		observe:  ObserveMiddleware(m, cfg.Tracing),
		held:     newInflight(cfg.MaxInflightBytes, cfg.MaxHandlersPerPeer),
		handlers: make(map[string]route),
		inbound:  make(map[*inboundStream]struct{}),
		outbound: make(map[peer.ID]*outboundStream),
		opening:  make(map[peer.ID]chan struct{}),
		excl:     newExclusivePool(),
		idPrefix: hex.EncodeToString(idb[:]) + "-",
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.routes.Store(&map[string]route{})
	s.handle(TypePing, route{h: pingHandler, inline: true})
	s.lh.SetStreamHandler(protocol.ID(ProtocolID), s.handleStream)
	s.notifee = &network.NotifyBundle{DisconnectedF: func(n network.Network, c network.Conn) {
		s.dropIdleOn(c.RemotePeer(), c)
		if n.Connectedness(c.RemotePeer()) != network.Connected {
			s.forgetLimit(c.RemotePeer())
		}
	}}
	s.lh.Network().Notify(s.notifee)
	return s
}

// route is a registered handler. Inline handlers never block, so they run
// on the stream's reader instead of a goroutine of their own.
type route struct {
	h      Handler
	inline bool
}

// pingHandler answers pong. The reply is the service's own (deliver
// reuses it once encoded) and gets its sent_at from deliver's clock read.
func pingHandler(_ context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
	resp := getEnvelope()
	resp.ID, resp.Type = req.ID, TypePong
	return resp, nil
}

// Handle registers h for messages of type typ, replacing any previous
// handler (including the built-in ping); a nil h removes it. It may be
// called at any time. Each message runs in its own goroutine.
func (s *Service) Handle(typ string, h Handler) {
	s.handle(typ, route{h: h})
}

func (s *Service) handle(typ string, r route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.h == nil {
		delete(s.handlers, typ)
	} else {
		s.handlers[typ] = r
	}
	s.rebuildLocked()
}

func (s *Service) rebuildLocked() {
	routes := make(map[string]route, len(s.handlers))
	for typ, r := range s.handlers {
		routes[typ] = route{h: recoverMiddleware(r.h), inline: r.inline}
	}
	s.routes.Store(&routes)
}

// inline reports whether req can be answered without blocking: the
// built-in ping, and the rejections of unknown types and versions.
func (s *Service) inline(req *Envelope) bool {
	if req.V != EnvelopeVersion {
		return true
	}
	r, ok := (*s.routes.Load())[req.Type]
	return !ok || r.inline
}

// route finds the handler of req and runs it.
func (s *Service) route(ctx context.Context, from peer.ID, req *Envelope) (*Envelope, error) {
	if req.V != EnvelopeVersion {
		return nil, errBadVersion
	}
	r, ok := (*s.routes.Load())[req.Type]
	if !ok {
		return nil, errUnknownType
	}
	return r.h(ctx, from, req)
}

// nextID returns the next request ID: the service's random prefix and a
// sequence number in base 36, built in one allocation.
func (s *Service) nextID() string {
	var buf [64]byte
	b := append(buf[:0], s.idPrefix...)
	return string(strconv.AppendUint(b, s.seq.Add(1), 36))
}

// Connect dials ai (force-direct: it ignores the swarm's dial backoff).
// Errors wrap ErrPeerUnreachable.
func (s *Service) Connect(ctx context.Context, ai peer.AddrInfo) error {
	return Connect(ctx, s.lh, ai)
}

// Connect dials ai from h (force-direct: it ignores the swarm's dial
// backoff). A peer without addresses is dialled at the ones h knows; with
// none, it fails at once. Errors wrap ErrPeerUnreachable and are one line.
func Connect(ctx context.Context, h host.Host, ai peer.AddrInfo) error {
	if ai.ID == h.ID() {
		return fmt.Errorf("%w: %s is this node", ErrPeerUnreachable, ai.ID)
	}
	if len(ai.Addrs) == 0 && !reachable(h, ai.ID) {
		return noAddressError(ai.ID)
	}
	if err := h.Connect(network.WithForceDirectDial(ctx, "requested"), ai); err != nil {
		return singleLine(fmt.Errorf("%w: %s: %w", ErrPeerUnreachable, ai.ID, err))
	}
	return nil
}

// reachable reports whether p is connected to h or has an address to dial.
func reachable(h host.Host, p peer.ID) bool {
	return h.Network().Connectedness(p) == network.Connected || len(h.Peerstore().Addrs(p)) > 0
}

// Request sends a message of type typ with payload to p and waits for the
// response. An "error" response is returned as a *RemoteError. Without a
// deadline on ctx, RequestTimeout applies. Errors are one line long; a
// peer with neither a connection nor a known address fails at once with
// ErrPeerUnreachable.
func (s *Service) Request(ctx context.Context, p peer.ID, typ string, payload any) (*Envelope, error) {
	return s.request(ctx, p, typ, payload, time.Now())
}

func (s *Service) request(ctx context.Context, p peer.ID, typ string, payload any, now time.Time) (*Envelope, error) {
	raw, err := marshalPayload(payload)
	if err != nil {
		return nil, err
	}
	env := getEnvelope() // nobody else sees it: reused once sent
	env.Type, env.Payload = typ, raw
	resp, err := s.sendAt(ctx, p, env, now)
	env.release()
	return resp, err
}

// Send is Request with a caller-built envelope; its ID is overwritten.
func (s *Service) Send(ctx context.Context, p peer.ID, env *Envelope) (*Envelope, error) {
	return s.sendAt(ctx, p, env, time.Now())
}

// sendAt is Send with the clock read by the caller: one reading serves the
// request timeout, sent_at and the write deadline.
func (s *Service) sendAt(ctx context.Context, p peer.ID, env *Envelope, now time.Time) (*Envelope, error) {
	// Without a deadline on ctx, RequestTimeout is enforced with a pooled
	// timer rather than a derived context, which would allocate a context
	// and a timer per request.
	var deadline time.Time
	if _, ok := ctx.Deadline(); !ok {
		deadline = now.Add(s.cfg.RequestTimeout)
	}
	env.V = EnvelopeVersion
	env.ID = s.nextID()
	if env.SentAt.IsZero() {
		env.SentAt = now.UTC()
	}
	ctx, span := s.cfg.Tracing.Start(ctx, "msg.send", trace.SpanKindClient)
	if span.Recording() {
		span.SetAttributes(attribute.String("message.type", env.Type), attribute.String("net.peer", p.String()))
		env.Trace = tracing.Traceparent(ctx)
		resp, err := s.send(ctx, p, env, deadline, now)
		span.End(err)
		return resp, err
	}
	return s.send(ctx, p, env, deadline, now)
}

// send encodes env and makes the round trip, retrying once on a new stream
// when the kept one turned out to be dead.
func (s *Service) send(ctx context.Context, p peer.ID, env *Envelope, deadline, now time.Time) (*Envelope, error) {
	frame, err := encodeFrame(env, s.cfg.MaxMessageBytes)
	if err != nil {
		return nil, err
	}
	defer frame.release()
	var handed *exclusiveStream // by awaitExclusive, for the retry
	for attempt := 0; ; attempt++ {
		var resp *Envelope
		if handed != nil {
			resp, err = s.exclusiveRoundTrip(ctx, handed, env, frame, deadline, time.Now())
		} else {
			if attempt > 0 {
				now = time.Now()
			}
			resp, err = s.roundTrip(ctx, p, env, frame, deadline, now)
		}
		if err == nil {
			return s.response(env, p, resp)
		}
		if attempt == 0 && isRetryable(err) && ctx.Err() == nil {
			s.log.Debug("retrying request on a new stream", "peer", p.String(), "type", env.Type, "err", err)
			if errors.Is(err, errStreamRefused) {
				// Retried at once, it would most likely be refused
				// again: it waits for one of p's streams instead.
				if handed, err = s.awaitExclusive(ctx, p, deadline); err != nil {
					return nil, singleLine(fmt.Errorf("p2p: %s request to %s: %w", env.Type, p, err))
				}
			}
			continue
		}
		return nil, singleLine(fmt.Errorf("p2p: %s request to %s: %w", env.Type, p, err))
	}
}

// roundTrip makes one attempt at a request: on an exclusive stream to p
// when one is free or may be opened, else pipelined on the shared one.
func (s *Service) roundTrip(ctx context.Context, p peer.ID, env *Envelope, frame *frameBuf, deadline, now time.Time) (*Envelope, error) {
	es, opened, err := s.takeExclusive(ctx, p, deadline, now)
	if err != nil {
		return nil, err
	}
	if opened {
		now = time.Now()
	}
	if es != nil {
		return s.exclusiveRoundTrip(ctx, es, env, frame, deadline, now)
	}
	ob, waited, err := s.outboundTo(ctx, p, deadline)
	if err != nil {
		return nil, err
	}
	if waited {
		now = time.Now()
	}
	return ob.roundTrip(ctx, env, frame, deadline, now)
}

// response returns resp, or the *RemoteError an "error" response carries.
func (s *Service) response(env *Envelope, p peer.ID, resp *Envelope) (*Envelope, error) {
	if resp.Type != TypeError {
		return resp, nil
	}
	var ep ErrorPayload
	if err := resp.DecodePayload(&ep); err != nil {
		return nil, fmt.Errorf("p2p: %s request to %s: error reply: %w", env.Type, p, err)
	}
	return nil, &RemoteError{Code: ep.Code, Message: oneline.Flatten(ep.Message)}
}

// Ping sends a ping to p and returns the round-trip time, which is also
// recorded as the peer's latency in the peerstore.
func (s *Service) Ping(ctx context.Context, p peer.ID) (time.Duration, error) {
	start := time.Now()
	resp, err := s.request(ctx, p, TypePing, nil, start)
	rtt := time.Since(start)
	if err != nil {
		return 0, err
	}
	typ := resp.Type
	resp.release() // nobody else sees a ping's response
	if typ != TypePong {
		return 0, fmt.Errorf("p2p: ping %s: %w: answered %q", p, ErrMalformed, typ)
	}
	s.latency.RecordLatency(p, rtt)
	return rtt, nil
}

// Close stops accepting streams and requests, and waits up to DrainTimeout
// for in-flight handlers to reply; see Shutdown. Close the service before
// its host.
func (s *Service) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown stops serving: no new stream is accepted and no further frame is
// read, pending requests fail with ErrServiceClosed, and in-flight handlers
// may finish and reply until ctx is done; then their context is cancelled
// and their streams reset.
func (s *Service) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.lh.RemoveStreamHandler(protocol.ID(ProtocolID))
		s.smu.Lock()
		s.closing = true
		inbound := make([]*inboundStream, 0, len(s.inbound))
		for is := range s.inbound {
			inbound = append(inbound, is)
		}
		outbound := make([]*outboundStream, 0, len(s.outbound))
		for _, os := range s.outbound {
			outbound = append(outbound, os)
		}
		s.smu.Unlock()

		s.lh.Network().StopNotify(s.notifee)
		s.closeExclusive()
		for _, os := range outbound {
			os.fail(ErrServiceClosed, true)
		}
		for _, is := range inbound {
			is.stopReading()
		}
		done := make(chan struct{})
		go func() { s.readers.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.closeErr = fmt.Errorf("p2p: message service drain: %w", ctx.Err())
			s.cancel()
			for _, is := range inbound {
				_ = is.s.Reset()
			}
			select {
			case <-done:
			case <-time.After(time.Second):
				s.log.Warn("message handlers ignored cancellation at shutdown")
			}
		}
		s.cancel()
	})
	return s.closeErr
}
