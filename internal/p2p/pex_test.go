package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

// TestPeerExchangeWireFormat pins the peer-exchange frame to what nodes
// sent before it shared the message codec's framing: an unsigned varint
// length, then the JSON reply. A reply framed by hand is read, and a
// host's reply is parsed by hand.
func TestPeerExchangeWireFormat(t *testing.T) {
	a, b, c := newTestNode(t), newTestNode(t), newTestNode(t)
	connect(t, b, a)
	connect(t, c, a)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p2ptest.Eventually(t, 5*time.Second, "A to identify B and C as agents", func() bool {
		n := 0
		for _, p := range []*testNode{b, c} {
			if ok, _ := a.h.Libp2p().Peerstore().SupportsProtocols(p.h.ID(), PeerExchangeProtocolID); len(ok) > 0 {
				n++
			}
		}
		return n == 2
	})

	// A's reply, read by hand: B asks, and learns C (not itself).
	s, err := b.h.Libp2p().NewStream(ctx, a.h.ID(), PeerExchangeProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(s)
	n, err := binary.ReadUvarint(br)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the reply: %v, want EOF", err)
	}
	var got pexMessage
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	if len(got.Peers) != 1 || got.Peers[0].ID != c.h.ID().String() || len(got.Peers[0].Addrs) == 0 {
		t.Fatalf("A told B %+v, want C (%s) with its addresses", got, c.h.ID())
	}

	// A reply framed by hand, as before: read by requestPeers.
	want := pexMessage{Peers: []pexPeer{{ID: c.h.ID().String(), Addrs: []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"}}}}
	b.h.Libp2p().SetStreamHandler(PeerExchangeProtocolID, func(s network.Stream) {
		defer s.Close()
		body, _ := json.Marshal(want)
		_, _ = s.Write(append(binary.AppendUvarint(nil, uint64(len(body))), body...))
	})
	peers, err := a.h.requestPeers(b.h.ID())
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].ID != c.h.ID() {
		t.Fatalf("requestPeers = %v, want C", peers)
	}
	var addrs []string
	for _, a := range peers[0].Addrs {
		addrs = append(addrs, a.String())
	}
	if !slices.Equal(addrs, want.Peers[0].Addrs) {
		t.Errorf("addresses %v, want %v", addrs, want.Peers[0].Addrs)
	}

	// An oversized reply is refused on its length prefix.
	b.h.Libp2p().SetStreamHandler(PeerExchangeProtocolID, func(s network.Stream) {
		defer s.Close()
		_, _ = s.Write(binary.AppendUvarint(nil, pexMaxBytes+1))
	})
	if _, err := a.h.requestPeers(b.h.ID()); !errors.Is(err, message.ErrFrameTooLarge) {
		t.Errorf("oversized reply: %v, want ErrFrameTooLarge", err)
	}
}
