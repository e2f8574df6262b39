package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/peerlimit"
)

// Local is what this node says about itself in its answers.
type Local struct {
	Name              string
	Version           string
	State             string
	Capabilities      []string
	CPUPercent        float64
	MemoryBytes       float64
	MessagesPerSecond float64
	TasksRunning      int
}

// Config configures a Service; zero values take the defaults.
type Config struct {
	// Local reports this node's own state; required.
	Local func() Local
	// MetricsURL is the metrics URL told to a peer that reached this node
	// on local (the IP of this end of its connection; nil when unknown);
	// "" when metrics are disabled. Nil means metrics are disabled.
	MetricsURL func(local net.IP) string
	// TTL is how long a node not heard from stays in the view (default 1m).
	TTL time.Duration
	// Interval is the refresh period (default the smaller of 10s and TTL/3).
	Interval time.Duration
	// Timeout bounds one query (default 5s).
	Timeout time.Duration
	// Workers bounds the queries in flight (default 8).
	Workers int
	// MaxIndirect bounds the nodes asked per round that this node is not
	// connected to (default 64).
	MaxIndirect int
	// Refused counts an answer or request refused as malformed or too
	// large, by reason ("malformed", "too_large"); nil counts nothing.
	Refused func(reason string)
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultTTL         = time.Minute
	DefaultInterval    = 10 * time.Second
	DefaultTimeout     = 5 * time.Second
	DefaultWorkers     = 8
	DefaultMaxIndirect = 64
	// edgesCacheFor is how long one network view (with every node asked for
	// its edges) is reused.
	edgesCacheFor = time.Second
	// maxHintsKept bounds the dial hints remembered at once.
	maxHintsKept = 1024
	// hintsEvery is how often a peer is asked for hints after the first
	// query.
	hintsEvery = time.Minute
	// hintsFirst is how many first answers of a node are asked for hints.
	hintsFirst = 3
)

func (c *Config) defaults() {
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.Interval <= 0 {
		c.Interval = min(DefaultInterval, c.TTL/3)
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	c.Timeout = min(c.Timeout, max(c.TTL/2, time.Second))
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.MaxIndirect <= 0 {
		c.MaxIndirect = DefaultMaxIndirect
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MetricsURL == nil {
		c.MetricsURL = func(net.IP) string { return "" }
	}
}

// Service answers the info protocol and keeps the view of the fleet.
type Service struct {
	h   host.Host
	cfg Config
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{}

	mu    sync.Mutex
	nodes map[peer.ID]*entry
	hints map[peer.ID]hint

	viewMu    sync.Mutex
	viewAt    time.Time
	viewEdges map[peer.ID][]Edge

	asks *peerlimit.Limits // per-peer bound on the requests answered
}

// New returns a service on h; it does nothing until Start.
func New(h host.Host, cfg Config) *Service {
	cfg.defaults()
	return &Service{
		h: h, cfg: cfg, log: cfg.Logger.With("component", "fleet"),
		sem:   make(chan struct{}, cfg.Workers),
		nodes: map[peer.ID]*entry{},
		hints: map[peer.ID]hint{},
		asks:  peerlimit.New(AnswerRate, AnswerBurst, 0),
	}
}

// Start registers the protocol handler and starts refreshing the view: at
// once for every newly identified peer that speaks the protocol, and every
// Interval for all.
func (s *Service) Start(ctx context.Context) error {
	s.ctx, s.cancel = context.WithCancel(ctx)
	sub, err := s.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		s.cancel()
		return fmt.Errorf("fleet: subscribe to identify events: %w", err)
	}
	s.h.SetStreamHandler(ProtocolID, s.serve)
	s.wg.Go(func() {
		defer sub.Close()
		for {
			select {
			case <-s.ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				ev := e.(event.EvtPeerIdentificationCompleted)
				if slices.Contains(ev.Protocols, ProtocolID) {
					s.wg.Go(func() { s.ask(ev.Peer) })
				}
			}
		}
	})
	s.wg.Go(s.loop)
	return nil
}

// Close stops the refresh and the handler; it waits for queries in flight.
func (s *Service) Close() {
	if s.cancel == nil {
		return
	}
	s.h.RemoveStreamHandler(ProtocolID)
	s.cancel()
	s.wg.Wait()
}

func (s *Service) refused(err error) {
	if s.cfg.Refused == nil {
		return
	}
	switch {
	case errors.Is(err, message.ErrFrameTooLarge):
		s.cfg.Refused("too_large")
	case errors.Is(err, message.ErrMalformed):
		s.cfg.Refused("malformed")
	}
}
