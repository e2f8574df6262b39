package p2p

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

// testNode is one real node on loopback with its own registry.
type testNode struct {
	reg *prometheus.Registry
	m   *metrics.Messages
	h   *Host
	svc *message.Service
}

type nodeOpt func(*HostConfig, *message.ServiceConfig)

func withHost(f func(*HostConfig)) nodeOpt {
	return func(hc *HostConfig, _ *message.ServiceConfig) { f(hc) }
}

func newTestNode(tb testing.TB, opts ...nodeOpt) *testNode {
	tb.Helper()
	reg := prometheus.NewRegistry()
	hc := HostConfig{ListenAddrs: p2ptest.Loopback(), Registerer: reg, Logger: p2ptest.Logger(), UserAgent: "p2p-agent/test"}
	sc := message.ServiceConfig{Logger: hc.Logger}
	for _, o := range opts {
		o(&hc, &sc)
	}
	h, err := NewHost(context.Background(), p2ptest.NewKey(tb), hc)
	if err != nil {
		tb.Fatal(err)
	}
	n := &testNode{reg: reg, h: h, m: metrics.NewMessages(reg, message.MetricLabels())}
	n.svc = message.NewService(h.Libp2p(), n.m, sc)
	tb.Cleanup(func() {
		_ = n.svc.Close()
		_ = h.Close()
	})
	return n
}

func (n *testNode) info() peer.AddrInfo {
	return peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Libp2p().Addrs()}
}

func connect(tb testing.TB, a, b *testNode) {
	tb.Helper()
	p2ptest.Connect(tb, a.svc.Connect, b.info())
}
