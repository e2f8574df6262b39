package p2p

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

// TestResolve: a full multiaddr is connected to, a bare ID or this host's
// own address is not dialled, and errors wrap ErrBadPeer or
// message.ErrPeerUnreachable, in one line.
func TestResolve(t *testing.T) {
	opts := withHost(func(c *HostConfig) { c.DisablePeerExchange = true })
	a, b := newTestNode(t, opts), newTestNode(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connected := func(p peer.ID) bool { return a.h.Libp2p().Network().Connectedness(p) == network.Connected }

	// A bare ID: returned as is, nothing dialled.
	id, err := a.h.Resolve(ctx, b.h.ID().String())
	if err != nil || id != b.h.ID() {
		t.Fatalf("Resolve(bare ID) = %s, %v; want %s", id, err, b.h.ID())
	}
	if connected(b.h.ID()) {
		t.Fatal("Resolve dialled a bare peer ID")
	}
	// A full multiaddr: connected on return.
	if id, err = a.h.Resolve(ctx, b.h.Addrs()[0]); err != nil || id != b.h.ID() {
		t.Fatalf("Resolve(%s) = %s, %v; want %s", b.h.Addrs()[0], id, err, b.h.ID())
	}
	if !connected(b.h.ID()) {
		t.Fatal("Resolve(multiaddr) returned without a connection")
	}
	// This host, either way: its ID, without a dial (no error).
	for _, self := range []string{a.h.ID().String(), a.h.Addrs()[0]} {
		if id, err := a.h.Resolve(ctx, self); err != nil || id != a.h.ID() {
			t.Errorf("Resolve(own %s) = %s, %v; want %s", self, id, err, a.h.ID())
		}
	}
	// Malformed targets.
	for _, bad := range []string{"", "not-a-peer", "/ip4/127.0.0.1/tcp/4001"} {
		if _, err := a.h.Resolve(ctx, bad); !errors.Is(err, ErrBadPeer) {
			t.Errorf("Resolve(%q) = %v, want ErrBadPeer", bad, err)
		}
	}
	// A peer nobody listens for: unreachable, one line.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	ghost, err := peer.IDFromPrivateKey(p2ptest.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.h.Resolve(ctx, "/ip4/127.0.0.1/tcp/"+port+"/p2p/"+ghost.String())
	if !errors.Is(err, message.ErrPeerUnreachable) {
		t.Fatalf("Resolve(closed port) = %v, want ErrPeerUnreachable", err)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, ghost.String()) {
		t.Errorf("Resolve(closed port) error %q: want one line naming the peer", msg)
	}
}
