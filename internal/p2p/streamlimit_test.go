package p2p

import (
	"bufio"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

// TestMessageStreamsPerPeerLimit opens message streams to a node from a
// plain go-libp2p host, as a stranger would, and keeps them open: the
// node serves message.StreamsPerPeer of them, refuses the next, and
// serves a new one again once one of the kept streams is closed.
func TestMessageStreamsPerPeerLimit(t *testing.T) {
	n := newTestNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	if err := h.Connect(ctx, n.info()); err != nil {
		t.Fatal(err)
	}

	seq := 0
	// ping opens a message stream, pings on it and returns the stream
	// with the error of the round trip.
	ping := func() (network.Stream, error) {
		st, err := h.NewStream(ctx, n.h.ID(), protocol.ID(message.ProtocolID))
		if err != nil {
			return nil, err
		}
		_ = st.SetDeadline(time.Now().Add(5 * time.Second))
		seq++
		env, _ := message.NewEnvelope(message.TypePing, nil)
		env.ID = fmt.Sprintf("limit-%d", seq)
		frame, _ := message.AppendFrame(nil, env, 0)
		if _, err := st.Write(frame); err != nil {
			return st, err
		}
		resp, err := message.DecodeFrame(bufio.NewReader(st), message.DefaultMaxMessageBytes)
		if err != nil {
			return st, err
		}
		if resp.Type != message.TypePong || resp.ID != env.ID {
			return st, fmt.Errorf("answered %s %q to %q", resp.Type, resp.ID, env.ID)
		}
		return st, nil
	}

	kept := make([]network.Stream, 0, message.StreamsPerPeer)
	for i := range message.StreamsPerPeer {
		st, err := ping()
		if err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, message.StreamsPerPeer, err)
		}
		kept = append(kept, st)
	}
	t.Cleanup(func() {
		for _, st := range kept {
			_ = st.Reset()
		}
	})
	if st, err := ping(); err == nil {
		_ = st.Reset()
		t.Fatalf("stream %d was served; the limit is %d", message.StreamsPerPeer+1, message.StreamsPerPeer)
	} else {
		t.Logf("stream %d refused: %v", message.StreamsPerPeer+1, err)
		if st != nil {
			_ = st.Reset()
		}
	}

	// A kept stream closed frees its place (the node releases it when
	// its reader ends, so the next stream may race it: wait).
	_ = kept[0].Reset()
	kept = kept[1:]
	p2ptest.Eventually(t, 10*time.Second, "a new stream served after one closed", func() bool {
		st, err := ping()
		if err != nil {
			if st != nil {
				_ = st.Reset()
			}
			return false
		}
		kept = append(kept, st)
		return true
	})
	if len(kept) != message.StreamsPerPeer {
		t.Fatalf("%d streams kept, want %d", len(kept), message.StreamsPerPeer)
	}
}
