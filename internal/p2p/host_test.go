package p2p

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

func TestFullMeshFromOneBootstrapPeer(t *testing.T) {
	a := newTestNode(t)
	start := time.Now()
	b := newTestNode(t, withHost(func(c *HostConfig) { c.Bootstrap = a.h.Addrs()[:1] }))
	c := newTestNode(t, withHost(func(c *HostConfig) { c.Bootstrap = a.h.Addrs()[:1] }))
	nodes := []*testNode{a, b, c}
	p2ptest.Eventually(t, 10*time.Second, "a full mesh", func() bool {
		for _, n := range nodes {
			if n.h.ConnectedPeers() != 2 {
				return false
			}
		}
		return true
	})
	t.Logf("full mesh of 3 nodes after %v", time.Since(start))

	// Every peer is usable and described.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.svc.Ping(ctx, c.h.ID()); err != nil {
		t.Fatal(err)
	}
	peers := b.h.Peers()
	if len(peers) != 2 {
		t.Fatalf("Peers() = %+v", peers)
	}
	for _, p := range peers {
		if p.AgentVersion != "p2p-agent/test" || p.Addr == "" || (p.Direction != "inbound" && p.Direction != "outbound") {
			t.Errorf("peer info %+v", p)
		}
		if p.ID == c.h.ID() && p.Latency <= 0 {
			t.Errorf("no latency after ping: %+v", p)
		}
	}

	// Closing a node drops it from the others' counts.
	_ = c.svc.Close()
	_ = c.h.Close()
	p2ptest.Eventually(t, 10*time.Second, "the others to notice C left", func() bool {
		return a.h.ConnectedPeers() == 1 && b.h.ConnectedPeers() == 1
	})
}

func TestBootstrapPeerRedialledWhenLost(t *testing.T) {
	a := newTestNode(t)
	b := newTestNode(t, withHost(func(c *HostConfig) {
		c.Bootstrap = a.h.Addrs()
		c.BootstrapBackoffMin = 50 * time.Millisecond
	}))
	p2ptest.Eventually(t, 10*time.Second, "B to reach its bootstrap peer", func() bool { return b.h.ConnectedPeers() == 1 })
	for range 2 {
		if err := a.h.Libp2p().Network().ClosePeer(b.h.ID()); err != nil {
			t.Fatal(err)
		}
		p2ptest.Eventually(t, 5*time.Second, "the connection to drop", func() bool { return a.h.ConnectedPeers() == 0 || b.h.ConnectedPeers() == 0 })
		p2ptest.Eventually(t, 10*time.Second, "B to redial", func() bool {
			return a.h.ConnectedPeers() == 1 && b.h.ConnectedPeers() == 1
		})
	}
}

func TestBootstrapBackoffWhileDown(t *testing.T) {
	// A bootstrap peer that is not up yet: B keeps trying and connects
	// once it is.
	priv := p2ptest.NewKey(t)
	id, _ := peer.IDFromPrivateKey(priv)
	probe := newTestNode(t) // find a free port by letting a node pick one, then reuse it
	port := probe.h.Libp2p().Addrs()[0]
	addr := port.String() + "/p2p/" + id.String()
	_ = probe.svc.Close()
	_ = probe.h.Close()

	b := newTestNode(t, withHost(func(c *HostConfig) {
		c.Bootstrap = []string{addr}
		c.BootstrapBackoffMin = 50 * time.Millisecond
		c.BootstrapBackoffMax = 200 * time.Millisecond
	}))
	time.Sleep(300 * time.Millisecond) // a few failed dials
	if b.h.ConnectedPeers() != 0 {
		t.Fatal("connected to a peer that is down")
	}
	a, err := NewHost(context.Background(), priv, HostConfig{ListenAddrs: []string{port.String()}, Logger: p2ptest.Logger()})
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer a.Close()
	p2ptest.Eventually(t, 10*time.Second, "B to connect once the bootstrap peer is up", func() bool { return b.h.ConnectedPeers() == 1 })
}

func TestCapabilities(t *testing.T) {
	// A's capabilities are registered before it listens, so B's first
	// identify carries them (Advertise after connecting could lose go-libp2p's
	// push to a peer whose identify is still in flight).
	a := newTestNode(t, withHost(func(hc *HostConfig) { hc.Capabilities = []string{"text.embed", "text.chunk"} }))
	b := newTestNode(t)
	connect(t, a, b)
	if err := a.h.Advertise("Bad/Name"); err == nil {
		t.Error("invalid capability accepted")
	}
	p2ptest.Eventually(t, 5*time.Second, "identify to reach B", func() bool {
		return slices.Equal(b.h.PeerCapabilities(a.h.ID()), []string{"text.chunk", "text.embed"})
	})
	if got := b.h.PeersOffering("text.chunk"); !slices.Equal(got, []peer.ID{a.h.ID()}) {
		t.Errorf("PeersOffering = %v", got)
	}
	if got := b.h.PeersOffering("index.search"); len(got) != 0 {
		t.Errorf("PeersOffering(index.search) = %v", got)
	}
	if got := a.h.Capabilities(); !slices.Equal(got, []string{"text.chunk", "text.embed"}) {
		t.Errorf("Capabilities = %v", got)
	}
	a.h.Withdraw("text.embed")
	p2ptest.Eventually(t, 5*time.Second, "withdrawal to reach B", func() bool {
		return slices.Equal(b.h.PeerCapabilities(a.h.ID()), []string{"text.chunk"})
	})
	// A new peer learns them through identify.
	c := newTestNode(t)
	connect(t, c, a)
	p2ptest.Eventually(t, 5*time.Second, "identify to reach C", func() bool {
		return slices.Equal(c.h.PeerCapabilities(a.h.ID()), []string{"text.chunk"})
	})
}

func TestParsePeer(t *testing.T) {
	id, _ := peer.IDFromPrivateKey(p2ptest.NewKey(t))
	for _, tc := range []struct {
		in      string
		ok      bool
		wantLen int
	}{
		{id.String(), true, 0},
		{"  " + id.String() + "\n", true, 0},
		{"/ip4/127.0.0.1/tcp/4001/p2p/" + id.String(), true, 1},
		{"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/" + id.String(), true, 1},
		{"/p2p/" + id.String(), true, 0},
		{"", false, 0},
		{"not-a-peer", false, 0},
		{"/ip4/127.0.0.1/tcp/4001", false, 0},
		{"/ip4/999.0.0.1/tcp/4001/p2p/" + id.String(), false, 0},
		{"/ip4/127.0.0.1/tcp/4001/p2p/QmNotAnID", false, 0},
	} {
		ai, err := ParsePeer(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("ParsePeer(%q) = %v", tc.in, err)
			continue
		}
		if !tc.ok {
			if !errors.Is(err, ErrBadPeer) {
				t.Errorf("ParsePeer(%q) error %v does not wrap ErrBadPeer", tc.in, err)
			}
			continue
		}
		if ai.ID != id || len(ai.Addrs) != tc.wantLen {
			t.Errorf("ParsePeer(%q) = %v", tc.in, ai)
		}
	}
	if _, err := NewHost(context.Background(), p2ptest.NewKey(t), HostConfig{ListenAddrs: p2ptest.Loopback(), Bootstrap: []string{id.String()}}); !errors.Is(err, ErrBadPeer) {
		t.Errorf("bootstrap peer without address: %v, want ErrBadPeer", err)
	}
}

func TestLibp2pMetricsOnOwnRegistry(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	for _, n := range []*testNode{a, b} {
		count, err := testutil.GatherAndCount(n.reg)
		if err != nil {
			t.Fatal(err)
		}
		mfs, _ := n.reg.Gather()
		libp2p := 0
		for _, mf := range mfs {
			if len(mf.GetName()) > 7 && mf.GetName()[:7] == "libp2p_" {
				libp2p++
			}
		}
		if libp2p == 0 {
			t.Errorf("no libp2p_ families on the node's registry (%d series)", count)
		}
	}
	// A host without a registerer still works (metrics disabled).
	h, err := NewHost(context.Background(), p2ptest.NewKey(t), HostConfig{ListenAddrs: p2ptest.Loopback(), Logger: p2ptest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	_ = h.Close()
}

func TestMDNSHostStartsAndStops(t *testing.T) {
	// Discovery itself is not asserted (multicast is environment-dependent);
	// the host must start, keep working and close cleanly with mDNS on.
	a := newTestNode(t, withHost(func(c *HostConfig) { c.MDNS = true }))
	b := newTestNode(t)
	connect(t, b, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.svc.Ping(ctx, a.h.ID()); err != nil {
		t.Fatal(err)
	}
	if err := a.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNoGoroutinesLeftAfterClose(t *testing.T) {
	// Warm up package-level goroutines (quic-go, timers) once.
	warm := newTestNode(t)
	_ = warm.svc.Close()
	_ = warm.h.Close()
	baseline := runtime.NumGoroutine()

	a := newTestNode(t)
	b := newTestNode(t, withHost(func(c *HostConfig) { c.Bootstrap = a.h.Addrs() }))
	// Both sides: a registers the inbound connection a moment after b.
	p2ptest.Eventually(t, 10*time.Second, "bootstrap", func() bool { return b.h.ConnectedPeers() == 1 && a.h.ConnectedPeers() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b.svc.Handle(message.TypeTaskRequest, func(ctx context.Context, _ peer.ID, req *message.Envelope) (*message.Envelope, error) {
		<-ctx.Done() // blocks until the service gives up draining
		return nil, ctx.Err()
	})
	go func() { _, _ = a.svc.Request(ctx, b.h.ID(), message.TypeTaskRequest, nil) }()
	for range 10 {
		if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
			t.Fatal(err)
		}
	}
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShutdown()
	if err := b.svc.Shutdown(shutdown); err == nil {
		t.Error("Shutdown with a stuck handler reported no drain timeout")
	}
	for _, n := range []*testNode{a, b} {
		_ = n.svc.Close()
		_ = n.h.Close()
	}
	p2ptest.WaitGoroutines(t, baseline)
}

func TestInvalidCapabilityInConfigFailsNewHost(t *testing.T) {
	_, err := NewHost(context.Background(), p2ptest.NewKey(t), HostConfig{
		ListenAddrs:  p2ptest.Loopback(),
		Capabilities: []string{"Bad/Name"},
		Logger:       p2ptest.Logger(),
	})
	if err == nil {
		t.Fatal("NewHost accepted an invalid capability")
	}
}
