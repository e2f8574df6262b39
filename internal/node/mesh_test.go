package node_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/node"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// rawPeer is a bare libp2p host with its own registry, outside any node:
// it speaks the wire protocol by hand.
func rawPeer(t *testing.T) *p2p.Host {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := p2p.NewHost(context.Background(), priv, p2p.HostConfig{
		Registerer:          prometheus.NewRegistry(),
		Logger:              slog.New(slog.DiscardHandler),
		DisablePeerExchange: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// addrInfo is the node's peer ID with its listen addresses.
func addrInfo(t *testing.T, n *node.Node) peer.AddrInfo {
	t.Helper()
	ai := peer.AddrInfo{ID: n.PeerID()}
	for _, s := range n.Host().Addrs() {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		info, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		ai.Addrs = append(ai.Addrs, info.Addrs...)
	}
	return ai
}

// openMsgStream connects h to n and opens a stream of the message protocol.
func openMsgStream(t *testing.T, h *p2p.Host, n *node.Node) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Libp2p().Connect(ctx, addrInfo(t, n)); err != nil {
		t.Fatal(err)
	}
	s, err := h.Libp2p().NewStream(ctx, n.PeerID(), protocol.ID(message.ProtocolID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Reset() })
	return s
}

// messageFamilies are the families labelled by message type.
var messageFamilies = []string{
	"messages_received_total", "messages_sent_total",
	"message_processing_duration_seconds", "message_processing_errors_total",
}

// knownTypes are the pre-initialised type labels: the protocol's closed
// set (DESIGN.md section 7) and "unknown".
var knownTypes = []string{"error", "info", "ping", "pong", "task.request", "task.result", "trace.get", "trace.spans", "unknown"}

// TestBogusMessageTypesKeepCardinality sends 200 frames with 200 distinct
// invented message types on a raw stream, reads the 200 error replies, and
// proves from a scrape that they all went to type="unknown": no family
// labelled by type grew a single series.
func TestBogusMessageTypesKeepCardinality(t *testing.T) {
	n, _ := startNode(t, nil)
	h := rawPeer(t)
	s := openMsgStream(t, h, n)

	before, _ := testenv.Scrape(t, nil, n.MetricsURL())
	for _, fam := range messageFamilies {
		if got := before.LabelValues(fam, "type"); !slices.Equal(got, knownTypes) {
			t.Fatalf("%s types before = %v, want %v", fam, got, knownTypes)
		}
	}
	seriesBefore := map[string]int{}
	for _, fam := range messageFamilies {
		seriesBefore[fam] = before.SeriesCount(fam)
	}

	const frames = 200
	sentAt := time.Now().UTC()
	var buf []byte
	for i := 0; i < frames; i++ {
		env := &message.Envelope{V: message.EnvelopeVersion, ID: fmt.Sprintf("bogus-%03d", i), Type: fmt.Sprintf("x-bogus.type-%03d", i), SentAt: sentAt}
		var err error
		if buf, err = message.AppendFrame(buf, env, 0); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := s.Write(buf); err != nil {
		t.Fatal(err)
	}
	// every frame gets its own error reply, in order (unknown types are
	// answered by the stream's reader itself)
	br := bufio.NewReader(s)
	for i := 0; i < frames; i++ {
		resp, err := message.DecodeFrame(br, message.DefaultMaxMessageBytes)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		var ep message.ErrorPayload
		if resp.Type != message.TypeError || resp.ID != fmt.Sprintf("bogus-%03d", i) || json.Unmarshal(resp.Payload, &ep) != nil || ep.Code != message.CodeUnknownType {
			t.Fatalf("reply %d = %+v (payload %s), want an error %s with the request's id", i, resp, resp.Payload, message.CodeUnknownType)
		}
	}
	// the stream still serves a real request
	ping, _ := message.NewEnvelope(message.TypePing, nil)
	ping.ID = "after-bogus"
	f, err := message.AppendFrame(nil, ping, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(f); err != nil {
		t.Fatal(err)
	}
	if resp, err := message.DecodeFrame(br, message.DefaultMaxMessageBytes); err != nil || resp.Type != message.TypePong || resp.ID != "after-bogus" {
		t.Fatalf("ping after the bogus frames: %+v, %v", resp, err)
	}

	// The error counter is incremented after the reply is written: wait
	// for the exact totals, then check nothing else moved.
	var after testenv.Families
	var body []byte
	testenv.Eventually(t, 10*time.Second, func() error {
		after, body = testenv.Scrape(t, nil, n.MetricsURL())
		return testenv.CheckDeltas(before, after, []testenv.Delta{
			{Name: "messages_received_total", Labels: testenv.L("type", "unknown"), Want: frames},
			{Name: "message_processing_errors_total", Labels: testenv.L("type", "unknown", "reason", "unknown_type"), Want: frames},
			{Name: "messages_sent_total", Labels: testenv.L("type", "error"), Want: frames},
			{Name: "messages_received_total", Labels: testenv.L("type", "ping"), Want: 1},
			{Name: "messages_sent_total", Labels: testenv.L("type", "pong"), Want: 1},
		})
	})
	if d := testenv.HistDelta(before, after, "message_processing_duration_seconds", testenv.L("type", "unknown")); d != frames {
		t.Errorf("message_processing_duration_seconds_count{unknown} rose by %d, want %d", d, frames)
	}
	for _, fam := range messageFamilies {
		if got := after.LabelValues(fam, "type"); !slices.Equal(got, knownTypes) {
			t.Errorf("%s types after = %v, want %v", fam, got, knownTypes)
		}
		if got := after.SeriesCount(fam); got != seriesBefore[fam] {
			t.Errorf("%s has %d series after, %d before", fam, got, seriesBefore[fam])
		}
	}
	if got := after.LabelValues("message_processing_errors_total", "reason"); !slices.Equal(got,
		[]string{"busy", "handler", "malformed", "panic", "stream", "timeout", "too_large", "unknown", "unknown_type"}) {
		t.Errorf("error reasons = %v", got)
	}
	// the other reasons and types of the error family did not move
	for _, m := range after["message_processing_errors_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		want := 0.0
		if labels["type"] == "unknown" && labels["reason"] == "unknown_type" {
			want = frames
		}
		if d := m.GetCounter().GetValue() - before.Value("message_processing_errors_total", labels); d != want {
			t.Errorf("message_processing_errors_total%v rose by %v, want %v", labels, d, want)
		}
	}
	if strings.Contains(string(body), "x-bogus") {
		t.Error("a bogus type name appears in the exposition")
	}
}
