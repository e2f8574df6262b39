package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// Connection manager defaults (HostConfig.ConnLow, ConnHigh).
const (
	DefaultConnLow  = 32
	DefaultConnHigh = 96
)

// infoProtocolID is fleet.ProtocolID (package fleet builds on this one).
const infoProtocolID = protocol.ID("/p2p-ai-agents/info/1.0.0")

// mdnsServiceName scopes mDNS discovery to nodes of this network.
const mdnsServiceName = "p2p-ai-agents"

// HostConfig configures NewHost; zero values take the defaults.
type HostConfig struct {
	// ListenAddrs are multiaddrs to listen on, e.g. /ip4/0.0.0.0/tcp/4001
	// and /ip4/0.0.0.0/udp/4001/quic-v1. Empty means dial-only.
	ListenAddrs []string
	// Bootstrap peers (multiaddrs ending in /p2p/<ID>) are dialled in the
	// background and re-dialled with exponential backoff whenever lost.
	Bootstrap []string
	// MDNS enables local-network discovery; keep it off in tests.
	MDNS bool
	// Registerer receives go-libp2p's own metrics. Nil disables them; the
	// default registry is never used.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// ConnLow and ConnHigh are the connection manager watermarks (defaults
	// 32 and 96): above ConnHigh connections are trimmed down to ConnLow,
	// and discovered peers are only dialled while below ConnLow.
	ConnLow, ConnHigh int
	// UserAgent is announced through identify (e.g. "p2p-agent/1.2.3").
	UserAgent string
	// Capabilities are announced from the first identify on: they are
	// registered before the host listens or dials. Advertise can change them
	// later, but go-libp2p may then lose the push to a peer whose identify is
	// still in flight, so a node's fixed capabilities belong here.
	Capabilities []string
	// DisablePeerExchange turns off the peer-exchange protocol that makes
	// nodes knowing a single bootstrap peer discover each other.
	DisablePeerExchange bool
	// BootstrapBackoffMin and BootstrapBackoffMax bound the exponential
	// backoff between failed bootstrap dials (defaults 500ms and 1m).
	BootstrapBackoffMin, BootstrapBackoffMax time.Duration
	// PeerExchangeInterval is the period of the background peer-exchange
	// round that spreads knowledge beyond direct neighbours (default 30s).
	PeerExchangeInterval time.Duration
	// QUICIdleTimeout bounds how long a QUIC connection survives without
	// a packet from its peer (default DefaultQUICIdleTimeout): it is how
	// fast a peer that vanished without closing (killed, unplugged) is
	// noticed over QUIC, where no FIN or RST tells. It applies to the
	// connections this host dials, on both ends (see quicTimeouts; the
	// accepting end uses at least 5s). Keep-alives hold a live, idle peer.
	QUICIdleTimeout time.Duration
}

// DefaultQUICIdleTimeout is the default HostConfig.QUICIdleTimeout: a
// vanished QUIC peer is dropped 5 to 7.5 seconds after its last packet
// (see quicTimeouts). go-libp2p's own settings (quic-go's default 30s,
// keep-alive 15s) leave it "connected" for 30 to 45 seconds.
const DefaultQUICIdleTimeout = 5 * time.Second

// quicMinRemoteIdleTimeout is the smallest idle timeout quic-go accepts
// from a peer (protocol.MinRemoteIdleTimeout): a listener, whose own config
// go-libp2p does not expose, uses at least this.
const quicMinRemoteIdleTimeout = 5 * time.Second

func (c *HostConfig) defaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ConnLow <= 0 {
		c.ConnLow = DefaultConnLow
	}
	if c.ConnHigh <= 0 {
		c.ConnHigh = DefaultConnHigh
	}
	if c.ConnHigh < c.ConnLow {
		c.ConnHigh = c.ConnLow
	}
	if c.BootstrapBackoffMin <= 0 {
		c.BootstrapBackoffMin = 500 * time.Millisecond
	}
	if c.BootstrapBackoffMax < c.BootstrapBackoffMin {
		c.BootstrapBackoffMax = max(time.Minute, c.BootstrapBackoffMin)
	}
	if c.PeerExchangeInterval <= 0 {
		c.PeerExchangeInterval = 30 * time.Second
	}
	if c.QUICIdleTimeout <= 0 {
		c.QUICIdleTimeout = DefaultQUICIdleTimeout
	}
}

// quicTimeouts sets the idle timeout and keep-alive period of the QUIC
// connections this host dials. go-libp2p v0.51 has no option for them:
// its QUIC connection manager hands out the quic.Config it clones for every
// dial (ClientConfig), and this sets it before the host can dial. The
// listener's config cannot be reached, but QUIC applies the smaller of the
// two idle timeouts the endpoints advertise (RFC 9000, 10.1) on both ends,
// so an inbound connection from a node configured the same way gets the
// same timeout (quic-go raises an advertised value below 5s to 5s). The
// dialer sends keep-alive PINGs every idle/5, the listener every half of the
// idle timeout: a peer that vanishes is dropped by the dialer within
// 1.2 x idle, by the listener within 1.5 x idle, of its last packet.
// WithFxOption is marked experimental by go-libp2p: TestQUICDeadPeerDetected
// fails if an upgrade stops this from taking effect.
func quicTimeouts(idle time.Duration) libp2p.Option {
	return libp2p.WithFxOption(fx.Invoke(func(cm *quicreuse.ConnManager) {
		c := cm.ClientConfig()
		c.MaxIdleTimeout = idle
		c.KeepAlivePeriod = idle / 5
	}))
}

// Host is the node's libp2p host with its discovery loops: bootstrap
// redialling, mDNS, and peer exchange.
type Host struct {
	lh   host.Host
	cm   *connmgr.BasicConnMgr
	cfg  HostConfig
	log  *slog.Logger
	boot []peer.AddrInfo

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sub    event.Subscription
	mdns   mdns.Service
	dials  chan struct{} // bounds concurrent discovery dials

	mu        sync.Mutex
	lost      map[peer.ID]chan struct{} // bootstrap peer -> wake-up on disconnect
	caps      map[string]struct{}
	closeOnce sync.Once
	closeErr  error
}

// NewHost starts a libp2p host with identity priv: TCP and QUIC transports,
// Noise and TLS security, yamux, a resource manager with scaled default
// limits and a connection manager. Background discovery runs until Close or
// until ctx is cancelled.
func NewHost(ctx context.Context, priv crypto.PrivKey, cfg HostConfig) (*Host, error) {
	cfg.defaults()
	if priv == nil {
		return nil, errors.New("p2p: nil private key")
	}
	self, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("p2p: peer ID from key: %w", err)
	}
	var boot []peer.AddrInfo
	for _, s := range cfg.Bootstrap {
		ai, err := ParsePeer(s)
		if err != nil {
			return nil, fmt.Errorf("p2p: bootstrap peer: %w", err)
		}
		if len(ai.Addrs) == 0 {
			return nil, fmt.Errorf("p2p: bootstrap peer %q: %w: an address is required", s, ErrBadPeer)
		}
		if ai.ID == self {
			continue
		}
		boot = append(boot, ai)
	}

	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	rm, err := newResourceManager(cfg.Registerer != nil)
	if err != nil {
		cm.Close()
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	listenAddrs := make([]ma.Multiaddr, 0, len(cfg.ListenAddrs))
	for _, s := range cfg.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			cm.Close()
			return nil, fmt.Errorf("p2p: listen address %q: %w", s, err)
		}
		listenAddrs = append(listenAddrs, a)
	}
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		// Listening starts below, once the capabilities are registered (an
		// empty ListenAddrs means dial-only, not libp2p's defaults).
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		quicTimeouts(cfg.QUICIdleTimeout),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
	}
	if cfg.UserAgent != "" {
		opts = append(opts, libp2p.UserAgent(cfg.UserAgent))
	}
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	lh, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: start libp2p host: %w", err)
	}

	h := &Host{
		lh:    lh,
		cm:    cm,
		cfg:   cfg,
		log:   cfg.Logger.With("component", "p2p"),
		boot:  boot,
		dials: make(chan struct{}, 8),
		lost:  make(map[peer.ID]chan struct{}, len(boot)),
		caps:  make(map[string]struct{}),
	}
	h.ctx, h.cancel = context.WithCancel(ctx)

	sub, err := lh.EventBus().Subscribe([]any{
		new(event.EvtPeerConnectednessChanged),
		new(event.EvtPeerIdentificationCompleted),
	})
	if err != nil {
		h.cancel()
		lh.Close()
		return nil, fmt.Errorf("p2p: subscribe to host events: %w", err)
	}
	h.sub = sub
	if !cfg.DisablePeerExchange {
		lh.SetStreamHandler(PeerExchangeProtocolID, h.servePeerExchange)
	}
	fail := func(err error) (*Host, error) {
		h.cancel()
		sub.Close()
		lh.Close()
		return nil, err
	}
	if err := h.Advertise(cfg.Capabilities...); err != nil {
		return fail(err)
	}
	if len(listenAddrs) > 0 {
		if err := lh.Network().Listen(listenAddrs...); err != nil {
			return fail(fmt.Errorf("p2p: listen on %v: %w", cfg.ListenAddrs, err))
		}
	}
	for _, ai := range boot {
		lh.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstorePermanentTTL)
		cm.Protect(ai.ID, "bootstrap")
		wake := make(chan struct{}, 1)
		h.lost[ai.ID] = wake
		h.wg.Go(func() { h.keepConnected(ai, wake) })
	}
	h.wg.Go(h.watchEvents)
	if !cfg.DisablePeerExchange {
		h.wg.Go(h.peerExchangeLoop)
	}
	if cfg.MDNS {
		h.mdns = mdns.NewMdnsService(lh, mdnsServiceName, mdnsNotifee{h})
		if err := h.mdns.Start(); err != nil {
			h.log.Warn("mDNS discovery unavailable", "err", err)
			h.mdns = nil
		}
	}
	h.log.Info("p2p host started", "peer_id", lh.ID().String(), "addrs", h.Addrs(), "bootstrap", len(boot), "mdns", h.mdns != nil)
	return h, nil
}

func newResourceManager(withMetrics bool) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	// Up to message.DefaultExclusiveStreams kept message streams per peer
	// and direction, plus the shared pipelined one, is the normal case;
	// the headroom covers reopening after a reset and raw probes.
	limits.AddProtocolLimit(protocol.ID(message.ProtocolID),
		rcmgr.BaseLimit{StreamsInbound: 1024, StreamsOutbound: 1024, Streams: 2048, Memory: 256 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 64 << 20})
	limits.AddProtocolPeerLimit(protocol.ID(message.ProtocolID),
		rcmgr.BaseLimit{StreamsInbound: message.StreamsPerPeer, StreamsOutbound: message.StreamsPerPeer, Streams: 2 * message.StreamsPerPeer, Memory: 32 << 20},
		rcmgr.BaseLimitIncrease{})
	limits.AddProtocolPeerLimit(PeerExchangeProtocolID,
		rcmgr.BaseLimit{StreamsInbound: 2, StreamsOutbound: 2, Streams: 4, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{})
	// The info protocol of package fleet: one request at a time per peer
	// and direction is the normal case.
	limits.AddProtocolPeerLimit(infoProtocolID,
		rcmgr.BaseLimit{StreamsInbound: 2, StreamsOutbound: 2, Streams: 4, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{})
	var opts []rcmgr.Option
	if withMetrics {
		str, err := rcmgr.NewStatsTraceReporter()
		if err != nil {
			return nil, err
		}
		opts = append(opts, rcmgr.WithTraceReporter(str))
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()), opts...)
}

// ID returns the host's peer ID.
func (h *Host) ID() peer.ID { return h.lh.ID() }

// Libp2p returns the underlying libp2p host, for wiring and tests.
func (h *Host) Libp2p() host.Host { return h.lh }

// Addrs returns the host's listen addresses as full multiaddrs ending in
// /p2p/<ID>, ready to be given to another node as a bootstrap peer.
func (h *Host) Addrs() []string {
	suffix := "/p2p/" + h.lh.ID().String()
	addrs := h.lh.Addrs()
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String()+suffix)
	}
	return out
}

// ConnectedPeers returns the number of distinct peers with at least one
// live connection; the agent_peers_connected gauge reads it at scrape time.
func (h *Host) ConnectedPeers() int { return len(h.lh.Network().Peers()) }

// PeerInfo describes one connected peer.
type PeerInfo struct {
	ID           peer.ID       `json:"id"`
	Addr         string        `json:"addr"`
	Direction    string        `json:"direction"` // "inbound" or "outbound"
	Latency      time.Duration `json:"latency_ns"`
	AgentVersion string        `json:"agent_version,omitempty"`
	Protocols    []string      `json:"protocols,omitempty"`
	Capabilities []string      `json:"capabilities,omitempty"`
}

// Peers describes every connected peer (its first live connection),
// sorted by peer ID. Latency is the peerstore's moving average, fed by
// the message service's Ping; zero when never measured.
func (h *Host) Peers() []PeerInfo {
	ps := h.lh.Peerstore()
	var out []PeerInfo
	seen := make(map[peer.ID]bool)
	for _, c := range h.lh.Network().Conns() {
		p := c.RemotePeer()
		if seen[p] {
			continue
		}
		seen[p] = true
		pi := PeerInfo{
			ID:        p,
			Addr:      c.RemoteMultiaddr().String(),
			Direction: directionString(c.Stat().Direction),
			Latency:   ps.LatencyEWMA(p),
		}
		if v, err := ps.Get(p, "AgentVersion"); err == nil {
			pi.AgentVersion, _ = v.(string)
		}
		if protos, err := ps.GetProtocols(p); err == nil {
			for _, pr := range protos {
				pi.Protocols = append(pi.Protocols, string(pr))
			}
			slices.Sort(pi.Protocols)
			pi.Capabilities = capabilitiesOf(protos)
		}
		out = append(out, pi)
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

func directionString(d network.Direction) string {
	switch d {
	case network.DirInbound:
		return "inbound"
	case network.DirOutbound:
		return "outbound"
	}
	return "unknown"
}

// Close stops discovery and closes the libp2p host and its connections.
// It is safe to call more than once.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.cancel()
		if h.mdns != nil {
			if err := h.mdns.Close(); err != nil {
				h.log.Debug("close mDNS", "err", err)
			}
		}
		h.sub.Close()
		h.wg.Wait()
		if err := h.lh.Close(); err != nil {
			h.closeErr = fmt.Errorf("p2p: close host: %w", err)
		}
	})
	return h.closeErr
}
