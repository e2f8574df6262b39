package p2p

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

var quicOnly = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}

func listenOn(addrs []string) nodeOpt {
	return withHost(func(c *HostConfig) { c.ListenAddrs = addrs })
}

// udpProxy relays one QUIC client to a server, and can black-hole both
// directions: to each end, the other looks like a machine that vanished.
type udpProxy struct {
	front, back *net.UDPConn
	client      atomic.Pointer[net.UDPAddr]
	drop        atomic.Bool
}

func newUDPProxy(t *testing.T, server *net.UDPAddr) *udpProxy {
	t.Helper()
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp4", nil, server)
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, back: back}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p.client.Store(from)
			if !p.drop.Load() {
				_, _ = back.Write(buf[:n])
			}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 64<<10)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			if to := p.client.Load(); to != nil && !p.drop.Load() {
				_, _ = front.WriteToUDP(buf[:n], to)
			}
		}
	}()
	t.Cleanup(func() {
		front.Close()
		back.Close()
		<-done
		<-done
	})
	return p
}

func (p *udpProxy) multiaddr(t *testing.T) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr("/ip4/127.0.0.1/udp/" + strconv.Itoa(p.front.LocalAddr().(*net.UDPAddr).Port) + "/quic-v1")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestQUICDeadPeerDetected: a QUIC peer that stops answering without
// closing anything (killed, unplugged) is disconnected on both ends within
// about the idle timeout, while an idle but live peer is kept by
// keep-alives. The dialer uses a short QUICIdleTimeout; the listener takes
// the dialer's advertised value, which quic-go raises to at least
// quicMinRemoteIdleTimeout.
func TestQUICDeadPeerDetected(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	opts := []nodeOpt{listenOn(quicOnly), withHost(func(c *HostConfig) {
		c.QUICIdleTimeout = idle
		c.DisablePeerExchange = true
	})}
	a, b := newTestNode(t, opts...), newTestNode(t, opts...)
	var server *net.UDPAddr
	for _, addr := range b.h.Libp2p().Addrs() {
		if port, err := addr.ValueForProtocol(ma.P_UDP); err == nil {
			server, _ = net.ResolveUDPAddr("udp4", "127.0.0.1:"+port)
		}
	}
	if server == nil {
		t.Fatalf("no QUIC address in %v", b.h.Libp2p().Addrs())
	}
	proxy := newUDPProxy(t, server)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A knows B only through the proxy.
	if err := a.svc.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: []ma.Multiaddr{proxy.multiaddr(t)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
		t.Fatal(err)
	}
	aConns, bConns := a.h.Libp2p().Network().ConnsToPeer(b.h.ID()), b.h.Libp2p().Network().ConnsToPeer(a.h.ID())
	if len(aConns) != 1 || len(bConns) != 1 {
		t.Fatalf("%d and %d connections, want one through the proxy", len(aConns), len(bConns))
	}
	// Idle for a few of A's idle timeouts: keep-alives hold the connection.
	time.Sleep(5 * idle / 2)
	if aConns[0].IsClosed() || bConns[0].IsClosed() {
		t.Fatal("an idle, live QUIC connection was dropped")
	}

	proxy.drop.Store(true)
	dropped := time.Now()
	// Detection takes the idle timeout after the last packet received,
	// plus up to a keep-alive period when a keep-alive was the first packet
	// sent after it (A: idle/5; B: half its idle timeout). The margin
	// absorbs a loaded test machine.
	const margin = 2 * time.Second
	for _, side := range []struct {
		name  string
		n     *testNode
		p     peer.ID
		idle  time.Duration
		keep  time.Duration
		conns []network.Conn
	}{
		{"A (dialer)", a, b.h.ID(), idle, idle / 5, aConns},
		{"B (listener)", b, a.h.ID(), quicMinRemoteIdleTimeout, quicMinRemoteIdleTimeout / 2, bConns},
	} {
		bound := side.idle + side.keep + margin
		p2ptest.Eventually(t, bound-time.Since(dropped), side.name+" to drop its vanished peer", side.conns[0].IsClosed)
		took := time.Since(dropped)
		t.Logf("%s dropped its vanished peer after %v (idle timeout %v)", side.name, took.Round(time.Millisecond), side.idle)
		if took < side.idle-100*time.Millisecond {
			t.Errorf("%s dropped its peer after %v, before the idle timeout %v", side.name, took, side.idle)
		}
		p2ptest.Eventually(t, time.Second, side.name+" to count no peer", func() bool { return side.n.h.ConnectedPeers() == 0 })
	}
}
