package message

import (
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

// testNode is one real libp2p host on loopback running the service, with
// its own registry. The host is a plain go-libp2p one with the node's
// transports, security and muxer: the service needs nothing more.
type testNode struct {
	reg *prometheus.Registry
	m   *metrics.Messages
	h   host.Host
	svc *Service
}

type nodeConfig struct {
	listen []string
	sc     ServiceConfig
	host   []libp2p.Option
}

// withHost adds options to the node's libp2p host.
func withHost(opts ...libp2p.Option) nodeOpt {
	return func(c *nodeConfig) { c.host = append(c.host, opts...) }
}

type nodeOpt func(*nodeConfig)

func withService(f func(*ServiceConfig)) nodeOpt {
	return func(c *nodeConfig) { f(&c.sc) }
}

func listenOn(addrs []string) nodeOpt {
	return func(c *nodeConfig) { c.listen = addrs }
}

func newTestNode(tb testing.TB, opts ...nodeOpt) *testNode {
	tb.Helper()
	c := nodeConfig{listen: p2ptest.Loopback(), sc: ServiceConfig{Logger: p2ptest.Logger()}}
	for _, o := range opts {
		o(&c)
	}
	h, err := libp2p.New(append([]libp2p.Option{
		libp2p.Identity(p2ptest.NewKey(tb)),
		libp2p.ListenAddrStrings(c.listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.UserAgent("p2p-agent/test"),
		libp2p.DisableMetrics(),
	}, c.host...)...)
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	n := &testNode{reg: reg, h: h, m: metrics.NewMessages(reg, MetricLabels())}
	n.svc = NewService(h, n.m, c.sc)
	tb.Cleanup(func() {
		_ = n.svc.Close()
		_ = h.Close()
	})
	return n
}

func (n *testNode) info() peer.AddrInfo {
	return peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()}
}

func connect(tb testing.TB, a, b *testNode) {
	tb.Helper()
	p2ptest.Connect(tb, a.svc.Connect, b.info())
}

func (n *testNode) sent(typ string) float64 { return testutil.ToFloat64(n.m.Sent.WithLabelValues(typ)) }
func (n *testNode) received(typ string) float64 {
	return testutil.ToFloat64(n.m.Received.WithLabelValues(typ))
}
func (n *testNode) errors(typ, reason string) float64 {
	return testutil.ToFloat64(n.m.Errors.WithLabelValues(typ, reason))
}

// handled is the sample count of message_processing_duration_seconds{type}.
func (n *testNode) handled(tb testing.TB, typ string) float64 {
	tb.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "message_processing_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}

// snapshot holds every message series of a node, to compare deltas.
type snapshot map[string]float64

func (n *testNode) snapshot(tb testing.TB) snapshot {
	tb.Helper()
	s := snapshot{}
	types := append(append([]string(nil), Types()...), metrics.Unknown)
	reasons := append(append([]string(nil), ErrorReasons()...), metrics.Unknown)
	for _, t := range types {
		s["sent/"+t] = n.sent(t)
		s["received/"+t] = n.received(t)
		s["handled/"+t] = n.handled(tb, t)
		for _, r := range reasons {
			s["errors/"+t+"/"+r] = n.errors(t, r)
		}
	}
	return s
}

// assertDelta checks that exactly the series in want moved, by exactly
// the given amounts, between before and now.
func (n *testNode) assertDelta(tb testing.TB, before snapshot, want map[string]float64) {
	tb.Helper()
	after := n.snapshot(tb)
	for k, v := range after {
		if d := v - before[k]; d != want[k] {
			tb.Errorf("%s moved by %v, want %v", k, d, want[k])
		}
	}
	for k := range want {
		if _, ok := after[k]; !ok {
			tb.Errorf("no series %s", k)
		}
	}
}
