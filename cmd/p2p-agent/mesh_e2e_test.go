package main_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// peerJSON is one entry of `p2p-agent peers --json`.
type peerJSON struct {
	ID           string   `json:"id"`
	Address      string   `json:"address"`
	Direction    string   `json:"direction"`
	AgentVersion string   `json:"agent_version"`
	Capabilities []string `json:"capabilities"`
}

// allCapabilities are the task types every node advertises.
var allCapabilities = []string{"index.add", "index.search", "text.chunk", "text.embed"}

func peersOf(t *testing.T, n *testenv.Node) ([]peerJSON, error) {
	t.Helper()
	out, errOut, code := n.CLI("peers", "--json")
	if code != 0 {
		return nil, fmt.Errorf("peers --json on %s: exit %d: %s", n.PeerID, code, errOut)
	}
	var ps []peerJSON
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		return nil, fmt.Errorf("peers --json on %s: %v: %q", n.PeerID, err, out)
	}
	return ps, nil
}

func gauge(t *testing.T, n *testenv.Node, name string) float64 {
	t.Helper()
	f, _ := testenv.Scrape(t, nil, n.MetricsURL)
	if f.Find(name, nil) == nil {
		t.Fatalf("%s absent from %s", name, n.MetricsURL)
	}
	return f.Value(name, nil)
}

// poll calls f every interval until it returns nil, failing the test with
// f's last error when d passes. It returns the moment f first succeeded:
// unlike testenv.Eventually it keeps a fixed, fine interval, so the time it
// reports is a measurement (to within interval), not a backoff artefact.
func poll(t *testing.T, d, interval time.Duration, f func() error) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", d, err)
		}
		time.Sleep(interval)
	}
}

// TestMeshOfThreeBinaries starts three real processes, B and C knowing only
// A, and checks that they become a full mesh (peer exchange), that ping
// goes through the CLI and moves exactly the documented counters on both
// ends, that bad peers give the documented exit codes, and that a SIGKILLed
// node disappears from its peers' gauge.
func TestMeshOfThreeBinaries(t *testing.T) {
	a := testenv.StartNode(t, testenv.NodeOptions{})
	boot := "--p2p.bootstrap=" + a.FullAddr()
	if !strings.Contains(boot, "/tcp/") || !strings.Contains(boot, "/p2p/"+a.PeerID) {
		t.Fatalf("A's full address %q is not a TCP multiaddr with /p2p/ID", a.FullAddr())
	}
	launchB := time.Now()
	b := testenv.StartNode(t, testenv.NodeOptions{Args: []string{boot}})
	launchC := time.Now()
	c := testenv.StartNode(t, testenv.NodeOptions{Args: []string{boot}})
	readyC := time.Now()
	nodes := map[string]*testenv.Node{"A": a, "B": b, "C": c}
	names := []string{"A", "B", "C"}

	// 1. full mesh: every gauge at 2, measured with a fine poll.
	meshAt := poll(t, 30*time.Second, 10*time.Millisecond, func() error {
		for _, name := range names {
			if g := gauge(t, nodes[name], "agent_peers_connected"); g != 2 {
				return fmt.Errorf("agent_peers_connected on %s = %v, want 2", name, g)
			}
		}
		return nil
	})
	t.Logf("time to full mesh: %v from launching B, %v from launching C, %v after C was ready",
		meshAt.Sub(launchB).Round(time.Millisecond), meshAt.Sub(launchC).Round(time.Millisecond), meshAt.Sub(readyC).Round(time.Millisecond))

	// every node lists exactly the other two, with their capabilities
	// (known once identify has completed, hence the wait)
	testenv.Eventually(t, 15*time.Second, func() error {
		for _, name := range names {
			ps, err := peersOf(t, nodes[name])
			if err != nil {
				return err
			}
			var got, want []string
			for _, other := range names {
				if other != name {
					want = append(want, nodes[other].PeerID)
				}
			}
			for _, p := range ps {
				got = append(got, p.ID)
				if !slices.Equal(p.Capabilities, allCapabilities) {
					return fmt.Errorf("%s lists %s with capabilities %v, want %v", name, p.ID, p.Capabilities, allCapabilities)
				}
				if p.AgentVersion != "p2p-agent/test" {
					return fmt.Errorf("%s lists %s with agent version %q", name, p.ID, p.AgentVersion)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s lists peers %v, want %v", name, got, want)
			}
		}
		return nil
	})

	// 2. ping C by peer ID through A's API
	a0, _ := testenv.Scrape(t, nil, a.MetricsURL)
	c0, _ := testenv.Scrape(t, nil, c.MetricsURL)
	out, errOut, code := a.CLI("ping", c.PeerID, "--count", "5")
	if code != 0 {
		t.Fatalf("ping %s: exit %d: %s", c.PeerID, code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var pongs int
	for _, l := range lines {
		if strings.HasPrefix(l, "pong from ") {
			pongs++
			if want := fmt.Sprintf("pong from %s: seq=%d time=", c.PeerID, pongs); !strings.HasPrefix(l, want) || !strings.HasSuffix(l, " ms") {
				t.Errorf("pong line %q, want prefix %q", l, want)
			}
		}
	}
	if pongs != 5 || len(lines) != 6 || !strings.HasPrefix(lines[5], "--- "+c.PeerID+": 5 pings, rtt min/avg/max = ") {
		t.Fatalf("ping output: %d pong lines, want 5 and a summary:\n%s", pongs, out)
	}
	// A, the requester: its pings are sent, and the pongs read on its kept
	// outbound stream are counted as received (metrics.Messages help: every
	// message received from peers; responses are counted where they are
	// read, without a handler, so they have no processing duration).
	// All of A's counting happens before the CLI gets its answer.
	a1, _ := testenv.Scrape(t, nil, a.MetricsURL)
	if err := testenv.CheckDeltas(a0, a1, []testenv.Delta{
		{Name: "messages_sent_total", Labels: testenv.L("type", "ping"), Want: 5},
		{Name: "messages_received_total", Labels: testenv.L("type", "pong"), Want: 5},
		{Name: "messages_received_total", Labels: testenv.L("type", "ping"), Want: 0},
		{Name: "messages_sent_total", Labels: testenv.L("type", "pong"), Want: 0},
		{Name: "messages_received_total", Labels: testenv.L("type", "unknown"), Want: 0},
	}); err != nil {
		t.Error("requester A: " + err.Error())
	}
	if d := testenv.HistDelta(a0, a1, "message_processing_duration_seconds", testenv.L("type", "pong")); d != 0 {
		t.Errorf("requester A: processing duration of pong observed %d times, want 0 (responses are not handled)", d)
	}
	// C, the responder: counted by the middleware and the frame writer. The
	// pong is counted as sent after its write and the duration observed
	// after the reply, so the last one may land just after A got its pong.
	testenv.Eventually(t, 10*time.Second, func() error {
		c1, _ := testenv.Scrape(t, nil, c.MetricsURL)
		if d := testenv.HistDelta(c0, c1, "message_processing_duration_seconds", testenv.L("type", "ping")); d != 5 {
			return fmt.Errorf("responder C: message_processing_duration_seconds_count{ping} rose by %d, want 5", d)
		}
		return testenv.CheckDeltas(c0, c1, []testenv.Delta{
			{Name: "messages_received_total", Labels: testenv.L("type", "ping"), Want: 5},
			{Name: "messages_sent_total", Labels: testenv.L("type", "pong"), Want: 5},
			{Name: "messages_sent_total", Labels: testenv.L("type", "ping"), Want: 0},
			{Name: "messages_received_total", Labels: testenv.L("type", "pong"), Want: 0},
			{Name: "message_processing_errors_total", Labels: testenv.L("type", "ping"), Want: 0},
		})
	})

	// ping with a full multiaddr, through B
	out, errOut, code = b.CLI("ping", c.FullAddr(), "--count", "2")
	if code != 0 || strings.Count(out, "pong from "+c.PeerID+": seq=") != 2 {
		t.Fatalf("ping %s through B: exit %d, stdout %q, stderr %q", c.FullAddr(), code, out, errOut)
	}

	// a valid peer ID nobody runs: exit 1, one line naming the cause
	idOut, idErr, code := testenv.RunCLI(t, "id", "--data-dir", t.TempDir())
	stranger := strings.TrimSpace(idOut)
	if code != 0 || !strings.HasPrefix(stranger, "12D3KooW") {
		t.Fatalf("id: exit %d, %q, %s", code, idOut, idErr)
	}
	out, errOut, code = a.CLI("ping", stranger, "--count", "1")
	if code != 1 || out != "" {
		t.Fatalf("ping unknown peer: exit %d, stdout %q, stderr %q; want exit 1 and no output", code, out, errOut)
	}
	if !strings.HasPrefix(errOut, "p2p-agent: ") || strings.Count(errOut, "\n") != 1 ||
		!strings.Contains(errOut, "peer unreachable") || !strings.Contains(errOut, stranger) {
		t.Fatalf("ping unknown peer: stderr %q, want one line naming the peer and 'peer unreachable'", errOut)
	}
	t.Logf("ping of an unknown peer: %s", strings.TrimSpace(errOut))
	// a malformed peer: a usage error, exit 2
	for _, bad := range []string{"not-a-peer", "/ip4/127.0.0.1/tcp/1", "12D3KooWbogus"} {
		out, errOut, code = a.CLI("ping", bad)
		if code != 2 || out != "" || !strings.Contains(errOut, "invalid peer") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("ping %q: exit %d, stdout %q, stderr %q; want exit 2 and one 'invalid peer' line", bad, code, out, errOut)
		}
	}

	// 3. SIGKILL C: its peers see it gone. How fast depends on the
	// transport: a killed process's TCP sockets are closed by the kernel
	// (FIN/RST), so a TCP peer notices at once; UDP gives no such signal,
	// and QUIC only notices when its idle timeout expires (the host sets
	// 5s with 1s keep-alives; a listener notices within 7.5s of C's last
	// packet, see p2p.HostConfig.QUICIdleTimeout). A's only connection to C
	// is C's bootstrap dial to A's TCP address: A gets a short deadline. B
	// and C met through peer exchange, and go-libp2p's dial ranker prefers
	// QUIC: B gets the idle timeout plus a margin (the address shown is one
	// connection of possibly two, so it does not choose the deadline).
	deadlineFor := map[string]time.Duration{"A": 10 * time.Second, "B": 15 * time.Second}
	for _, name := range []string{"A", "B"} {
		ps, err := peersOf(t, nodes[name])
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.ID != c.PeerID {
				continue
			}
			if name == "A" && (!strings.Contains(p.Address, "/tcp/") || p.Direction != "inbound") {
				t.Fatalf("A reaches C over %s (%s), want C's inbound bootstrap connection over TCP", p.Address, p.Direction)
			}
			t.Logf("%s reaches C over %s (%s): waiting up to %v", name, p.Address, p.Direction, deadlineFor[name])
		}
	}
	c.Kill()
	killed := time.Now()
	for _, name := range []string{"A", "B"} {
		at := poll(t, deadlineFor[name], 50*time.Millisecond, func() error {
			if g := gauge(t, nodes[name], "agent_peers_connected"); g != 1 {
				return fmt.Errorf("agent_peers_connected on %s = %v after killing C, want 1", name, g)
			}
			return nil
		})
		t.Logf("%s noticed C was killed after %v", name, at.Sub(killed).Round(time.Millisecond))
	}
	// A and B still talk to each other
	out, errOut, code = a.CLI("ping", b.PeerID, "--count", "1")
	if code != 0 || !strings.Contains(out, "pong from "+b.PeerID) {
		t.Fatalf("ping B after C died: exit %d, %q, %s", code, out, errOut)
	}
}
