package main_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestKilledQUICPeerDropped starts two binaries connected over QUIC only,
// SIGKILLs one and measures how long the other takes to notice: a killed
// process's UDP socket just goes silent (no FIN or RST as with TCP), so the
// survivor only learns from the QUIC idle timeout, which the node sets to
// p2p.DefaultQUICIdleTimeout (go-libp2p's own is 30s). The listening side
// is the slower one: it keeps its peer for the idle timeout after the last
// packet, plus up to half of it when its own keep-alive was the first
// packet sent since. Before the kill, the idle connection must survive
// longer than the idle timeout: keep-alives hold it.
func TestKilledQUICPeerDropped(t *testing.T) {
	idle := p2p.DefaultQUICIdleTimeout
	bound := idle + idle/2 + 3*time.Second // detection bound plus margin
	for _, tc := range []struct {
		name string
		kill string // which node dies: "dialer" or "listener"
	}{
		{"listener notices killed dialer", "dialer"},
		{"dialer notices killed listener", "listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			quic := "--p2p.listen=/ip4/127.0.0.1/udp/0/quic-v1"
			listener := testenv.StartNode(t, testenv.NodeOptions{Args: []string{quic}})
			var boot string
			for _, a := range listener.P2PAddrs {
				if !strings.Contains(a, "/quic-v1/") {
					t.Fatalf("listener address %s: want QUIC only (%v)", a, listener.P2PAddrs)
				}
				boot = a
			}
			dialer := testenv.StartNode(t, testenv.NodeOptions{Args: []string{quic, "--p2p.bootstrap=" + boot}})
			survivor, victim := listener, dialer
			if tc.kill == "listener" {
				survivor, victim = dialer, listener
			}

			connectedPeers := func(n *testenv.Node) float64 {
				f, _ := testenv.Scrape(t, nil, n.MetricsURL)
				if f.Find("agent_peers_connected", nil) == nil {
					t.Fatalf("agent_peers_connected absent from %s", n.MetricsURL)
				}
				return f.Value("agent_peers_connected", nil)
			}
			testenv.Eventually(t, 30*time.Second, func() error {
				for _, n := range []*testenv.Node{listener, dialer} {
					if g := connectedPeers(n); g != 1 {
						return fmt.Errorf("agent_peers_connected on %s = %v, want 1", n.PeerID, g)
					}
				}
				return nil
			})
			ps := peerList(t, survivor)
			if len(ps) != 1 || ps[0].ID != victim.PeerID || !strings.Contains(ps[0].Address, "/quic-v1") || len(ps[0].Capabilities) == 0 {
				t.Fatalf("survivor's peers %+v, want the victim over QUIC with its capabilities", ps)
			}

			// Idle past the idle timeout: keep-alives hold the connection.
			time.Sleep(idle + time.Second)
			for _, n := range []*testenv.Node{listener, dialer} {
				if g := connectedPeers(n); g != 1 {
					t.Fatalf("idle, live peer dropped: agent_peers_connected on %s = %v", n.PeerID, g)
				}
			}

			victim.Kill()
			killed := time.Now()
			deadline := killed.Add(bound)
			for {
				g := connectedPeers(survivor)
				if g == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("agent_peers_connected = %v %v after SIGKILL of the %s, want 0 within %v", g, time.Since(killed).Round(time.Millisecond), tc.kill, bound)
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("the %s was SIGKILLed; its peer dropped it after %v (idle timeout %v, bound %v)",
				tc.kill, time.Since(killed).Round(time.Millisecond), idle, bound)
			if ps := peerList(t, survivor); len(ps) != 0 {
				t.Errorf("the killed peer is still listed: %+v", ps)
			}
		})
	}
}

// peerList is `p2p-agent peers --json` on n.
func peerList(t *testing.T, n *testenv.Node) []struct {
	ID           string   `json:"id"`
	Address      string   `json:"address"`
	Capabilities []string `json:"capabilities"`
} {
	t.Helper()
	out, errOut, code := n.CLI("peers", "--json")
	if code != 0 {
		t.Fatalf("peers --json: exit %d: %s", code, errOut)
	}
	var ps []struct {
		ID           string   `json:"id"`
		Address      string   `json:"address"`
		Capabilities []string `json:"capabilities"`
	}
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("peers --json: %v: %q", err, out)
	}
	return ps
}
