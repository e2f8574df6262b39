package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"

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

// Node is one node of the view, as it last described itself.
type Node struct {
	ID       peer.ID
	Answer   Answer // Peers and Hints are not kept
	LastSeen time.Time
	// Connected tells whether this node holds a connection to it.
	Connected bool
}

type entry struct {
	ans      Answer
	lastSeen time.Time
	hintsAt  time.Time // when it last sent hints
	answers  int       // answers received from it while in the view
}

type hint struct {
	ai   peer.AddrInfo
	seen time.Time
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

// Per-peer bound on the info requests this node answers. A well-behaved
// peer asks every 10 s, once more on connect and once a second while a
// network view is watched; a peer asking faster than AnswerRate (after a
// burst of AnswerBurst) gets its stream reset instead of an answer, counted
// as busy.
const (
	AnswerRate  = 2 // per second
	AnswerBurst = 10
)

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

func (s *Service) loop() {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.refresh()
	}
}

// refresh asks every connected agent, then up to MaxIndirect nodes this
// node is not connected to (known ones first, then hints), expiring what
// has not been heard from within the TTL.
func (s *Service) refresh() {
	now := time.Now()
	s.expire(now)
	var direct []peer.ID
	for _, p := range s.h.Network().Peers() {
		if ok, _ := s.h.Peerstore().SupportsProtocols(p, ProtocolID); len(ok) > 0 {
			direct = append(direct, p)
		}
	}
	var indirect []peer.ID
	s.mu.Lock()
	for id := range s.nodes {
		if s.h.Network().Connectedness(id) != network.Connected {
			indirect = append(indirect, id)
		}
	}
	known := len(indirect)
	for id, hn := range s.hints {
		if _, ok := s.nodes[id]; ok || s.h.Network().Connectedness(id) == network.Connected {
			continue
		}
		s.h.Peerstore().AddAddrs(id, hn.ai.Addrs, s.cfg.TTL)
		indirect = append(indirect, id)
	}
	s.mu.Unlock()
	rand.Shuffle(known, func(i, j int) { indirect[i], indirect[j] = indirect[j], indirect[i] })
	targets := append(direct, indirect[:min(len(indirect), s.cfg.MaxIndirect)]...)
	var wg sync.WaitGroup
	for _, p := range targets {
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			_, _ = s.query(p, false)
		})
	}
	wg.Wait()
}

// ask queries p once (on connect), bounded by the worker pool.
func (s *Service) ask(p peer.ID) {
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		return
	}
	defer func() { <-s.sem }()
	_, _ = s.query(p, false)
}

func (s *Service) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.nodes {
		if now.Sub(e.lastSeen) >= s.cfg.TTL {
			delete(s.nodes, id)
		}
	}
	for id, h := range s.hints {
		if now.Sub(h.seen) >= s.cfg.TTL {
			delete(s.hints, id)
		}
	}
}

// query asks p for its info and records the answer under p.
func (s *Service) query(p peer.ID, edges bool) (*Answer, error) {
	if p == s.h.ID() {
		return nil, errors.New("fleet: not asking myself")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	st, err := s.h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return nil, fmt.Errorf("open info stream to %s: %w", p, err)
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(s.cfg.Timeout))
	sentAt := time.Now()
	wantHints := false
	if !edges {
		s.mu.Lock()
		e, ok := s.nodes[p]
		// a young node's peers are few: ask its first answers for hints
		wantHints = !ok || e.answers < hintsFirst || sentAt.Sub(e.hintsAt) >= hintsEvery
		s.mu.Unlock()
	}
	req, _ := json.Marshal(request{Edges: edges, Hints: wantHints})
	frame, err := message.AppendRawFrame(nil, req, maxRequestBytes)
	if err == nil {
		_, err = st.Write(frame)
	}
	if err == nil {
		err = st.CloseWrite()
	}
	if err != nil {
		_ = st.Reset()
		return nil, fmt.Errorf("send info request to %s: %w", p, err)
	}
	ans, err := readAnswer(st)
	if err != nil {
		_ = st.Reset()
		s.refused(err)
		s.log.Debug("info answer refused", "peer", p.String(), "err", err)
		return nil, fmt.Errorf("%w from %s: %w", ErrRefused, p, err)
	}
	now := time.Now()
	if !edges {
		// The round trip of a small answer is this node's latency sample
		// of the edge (the message service's pings feed the same average).
		s.h.Peerstore().RecordLatency(p, now.Sub(sentAt))
	}
	var fresh []peer.AddrInfo
	s.mu.Lock()
	for _, h := range ans.Hints {
		ai, ok := hintAddrInfo(h)
		if !ok || ai.ID == s.h.ID() {
			continue
		}
		if _, known := s.nodes[ai.ID]; known {
			continue
		}
		_, had := s.hints[ai.ID]
		if !had && len(s.hints) >= maxHintsKept {
			continue
		}
		s.hints[ai.ID] = hint{ai: ai, seen: now}
		if !had && s.h.Network().Connectedness(ai.ID) != network.Connected {
			// a node never heard of: ask it now rather than at the next
			// round, so a new node is known (and connected) within moments
			fresh = append(fresh, ai)
		}
	}
	kept := *ans
	kept.Peers, kept.Hints = nil, nil
	hintsAt, answers := now, 1
	if prev, ok := s.nodes[p]; ok {
		answers = prev.answers + 1
		if !wantHints {
			hintsAt = prev.hintsAt
		}
	}
	s.nodes[p] = &entry{ans: kept, lastSeen: now, hintsAt: hintsAt, answers: answers}
	delete(s.hints, p)
	s.mu.Unlock()
	for _, ai := range fresh {
		s.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, s.cfg.TTL)
		s.wg.Go(func() { s.ask(ai.ID) })
	}
	return ans, nil
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

// serve answers one info request.
func (s *Service) serve(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(s.cfg.Timeout))
	asker := st.Conn().RemotePeer()
	if !s.asks.Allow(asker.String(), time.Now()) {
		s.cfg.Refused(message.ReasonBusy)
		s.log.Debug("info request refused: the peer asks too often", "peer", asker.String())
		_ = st.Reset()
		return
	}
	body, err := message.ReadRawFrame(bufio.NewReader(st), maxRequestBytes)
	var req request
	if err == nil {
		if jerr := json.Unmarshal(body, &req); jerr != nil {
			err = fmt.Errorf("%w: info request: %w", message.ErrMalformed, jerr)
		}
	}
	if err != nil {
		s.refused(err)
		s.log.Debug("info request refused", "peer", asker.String(), "err", err)
		_ = st.Reset()
		return
	}
	var local net.IP
	if ip, err := manet.ToIP(st.Conn().LocalMultiaddr()); err == nil {
		local = ip
	}
	ans := s.answer(local, asker, req)
	out, err := json.Marshal(ans)
	if err == nil {
		out, err = message.AppendRawFrame(nil, out, MaxAnswerBytes)
	}
	if err == nil {
		_, err = st.Write(out)
	}
	if err != nil {
		s.log.Debug("info answer not sent", "peer", asker.String(), "err", err)
		_ = st.Reset()
	}
}

// answer describes this node to asker.
func (s *Service) answer(local net.IP, asker peer.ID, req request) Answer {
	l := s.cfg.Local()
	a := Answer{
		Name: l.Name, Version: l.Version, State: l.State, Capabilities: l.Capabilities,
		MetricsURL: s.cfg.MetricsURL(local), CPUPercent: l.CPUPercent, MemoryBytes: l.MemoryBytes,
		MessagesPerSecond: l.MessagesPerSecond, TasksRunning: l.TasksRunning,
	}
	if a.Capabilities == nil {
		a.Capabilities = []string{}
	}
	if req.Edges {
		a.Peers = s.edges()
	}
	if !req.Hints {
		return a
	}
	ps := s.h.Peerstore()
	peers := s.h.Network().Peers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	for _, p := range peers {
		if len(a.Hints) == MaxHints {
			break
		}
		if p == asker {
			continue
		}
		if ok, _ := ps.SupportsProtocols(p, ProtocolID); len(ok) == 0 {
			continue
		}
		var addrs []string
		for _, c := range s.h.Network().ConnsToPeer(p) {
			// the address this node reaches it on, if it dialled; the
			// peerstore's listen addresses otherwise
			if c.Stat().Direction == network.DirOutbound {
				addrs = append(addrs, c.RemoteMultiaddr().String())
				break
			}
		}
		for _, ad := range ps.Addrs(p) {
			if len(addrs) == maxHintAddrs {
				break
			}
			if str := ad.String(); !slices.Contains(addrs, str) {
				addrs = append(addrs, str)
			}
		}
		if len(addrs) > 0 {
			a.Hints = append(a.Hints, Hint{ID: p.String(), Addrs: addrs})
		}
	}
	return a
}

// edges lists this node's connected agents with their latency.
func (s *Service) edges() []Edge {
	ps := s.h.Peerstore()
	var out []Edge
	for _, p := range s.h.Network().Peers() {
		if len(out) == MaxEdges {
			break
		}
		if ok, _ := ps.SupportsProtocols(p, ProtocolID); len(ok) == 0 {
			continue
		}
		out = append(out, Edge{ID: p.String(), LatencyMs: float64(ps.LatencyEWMA(p)) / float64(time.Millisecond)})
	}
	slices.SortFunc(out, func(a, b Edge) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Nodes returns the other nodes heard from within the TTL, sorted by ID.
func (s *Service) Nodes() []Node {
	now := time.Now()
	s.mu.Lock()
	out := make([]Node, 0, len(s.nodes))
	for id, e := range s.nodes {
		if now.Sub(e.lastSeen) >= s.cfg.TTL {
			continue
		}
		out = append(out, Node{ID: id, Answer: e.ans, LastSeen: e.lastSeen})
	}
	s.mu.Unlock()
	for i := range out {
		out[i].Connected = s.h.Network().Connectedness(out[i].ID) == network.Connected
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// View is the mesh as this node sees it: every node heard from within the
// TTL, and the edges each reported about itself (this node's own included).
type View struct {
	Self  peer.ID
	Nodes []Node
	// Edges maps a node to the edges it reported; a node that could not be
	// asked is absent.
	Edges map[peer.ID][]Edge
}

// Network asks every node of the view for its edges (bounded by the worker
// pool and the query timeout) and returns the view. Answers are reused for
// a second, so a refreshing screen does not multiply the queries.
func (s *Service) Network(ctx context.Context) View {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	if time.Since(s.viewAt) >= edgesCacheFor || s.viewEdges == nil {
		edges := map[peer.ID][]Edge{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, n := range s.Nodes() {
			select {
			case s.sem <- struct{}{}:
			case <-ctx.Done():
			case <-s.ctx.Done():
			}
			if ctx.Err() != nil || s.ctx.Err() != nil {
				break
			}
			wg.Go(func() {
				defer func() { <-s.sem }()
				if ans, err := s.query(n.ID, true); err == nil {
					mu.Lock()
					edges[n.ID] = ans.Peers
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		s.viewEdges, s.viewAt = edges, time.Now()
	}
	v := View{Self: s.h.ID(), Nodes: s.Nodes(), Edges: map[peer.ID][]Edge{s.h.ID(): s.edges()}}
	for _, n := range v.Nodes {
		if e, ok := s.viewEdges[n.ID]; ok {
			v.Edges[n.ID] = e
		}
	}
	return v
}
