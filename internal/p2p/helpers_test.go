package p2p

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

var loopback = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

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

func testLogger() *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newKey(tb testing.TB) crypto.PrivKey {
	tb.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return priv
}

func newTestNode(tb testing.TB, opts ...nodeOpt) *testNode {
	tb.Helper()
	reg := prometheus.NewRegistry()
	hc := HostConfig{ListenAddrs: loopback, Registerer: reg, Logger: testLogger(), UserAgent: "p2p-agent/test"}
	sc := message.ServiceConfig{Logger: hc.Logger}
	for _, o := range opts {
		o(&hc, &sc)
	}
	h, err := NewHost(context.Background(), newKey(tb), hc)
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.svc.Connect(ctx, b.info()); err != nil {
		tb.Fatal(err)
	}
}

// eventually polls cond every 10ms until it holds or the deadline passes.
func eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitGoroutines waits for the goroutine count to return to at most limit.
func waitGoroutines(tb testing.TB, limit int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= limit {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			tb.Fatalf("goroutine leak: %d goroutines, want <= %d\n%s", n, limit, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
