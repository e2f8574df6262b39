package opskit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// cli runs a CLI command against node n and fails the test unless it exits 0.
func cli(t *testing.T, n *testenv.Node, args ...string) string {
	t.Helper()
	out, errOut, code := n.CLI(args...)
	if code != 0 {
		t.Fatalf("p2p-agent %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// TestLiveFleet runs the operator kit against the real thing: two p2p-agent
// processes (one on the local store, one on a real redis-server)
// bootstrapped into one mesh, a real prometheus scraping both every second
// with alerts.yml loaded, and real storage, message and task traffic driven
// through the CLI. Every dashboard query, every rule expression and every
// example query of docs/metrics.md must then be accepted, the core panels
// must show the traffic on both nodes, every rule must evaluate cleanly, and
// the healthy fleet must raise no alert.
func TestLiveFleet(t *testing.T) {
	testenv.SkipIfShort(t, "starts two nodes, redis-server and prometheus")
	testenv.ToolPath(t, "prometheus") // skip (or fail under CI) before building anything
	rules, dash, doc := loadRules(t), loadDashboard(t), parseCatalogue(t)

	redis := testenv.StartRedis(t)
	a := testenv.StartNode(t, testenv.NodeOptions{})
	b := testenv.StartNode(t, testenv.NodeOptions{Args: []string{
		"--storage.backend=redis",
		"--storage.redis.addrs=" + redis.Addr(),
		"--p2p.bootstrap=" + a.FullAddr(),
	}})
	f := startFleetPrometheus(t, a.MetricsURL, b.MetricsURL)
	f.backends = []string{"local", "redis"}
	f.tasks = 2
	f.waitVector(t, `agent_peers_connected{job="p2p-agent"}`, f.perInstance(func(v float64) bool { return v >= 1 }))

	for i := 0; i < 5; i++ {
		for _, n := range []*testenv.Node{a, b} {
			key, value := fmt.Sprintf("opskit/%d", i), fmt.Sprintf("value-%d", i)
			cli(t, n, "kv", "put", key, value)
			if got := cli(t, n, "kv", "get", key); got != value {
				t.Fatalf("kv get %s = %q, want %q", key, got, value)
			}
		}
	}
	cli(t, a, "kv", "list", "opskit/")
	cli(t, b, "kv", "delete", "opskit/0")
	cli(t, a, "ping", b.PeerID, "--count", "5")
	cli(t, b, "ping", a.PeerID, "--count", "5")
	input := filepath.Join(t.TempDir(), "input.txt")
	text := strings.Repeat("Peer-to-peer agents split text into overlapping token windows. ", 200)
	if err := os.WriteFile(input, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testenv.Node{a, b} {
		if out := cli(t, n, "task", "submit", "text.chunk", "--input", input, "--wait"); !json.Valid([]byte(out)) {
			t.Fatalf("task submit --wait printed no JSON result: %q", out)
		}
	}

	// What a real node serves is what docs/metrics.md lists, plus go-libp2p's
	// own families, which the docs describe by prefix.
	documented := map[string]bool{}
	for _, m := range doc {
		documented[m.Name] = true
	}
	for _, n := range []*testenv.Node{a, b} {
		fams, _ := testenv.Scrape(t, nil, n.MetricsURL)
		libp2p := 0
		for name := range fams {
			switch {
			case strings.HasPrefix(name, "libp2p_"):
				libp2p++
			case !documented[name]:
				t.Errorf("node %s serves %s, which docs/metrics.md does not list", n.PeerID, name)
			}
		}
		if libp2p == 0 {
			t.Errorf("node %s serves no libp2p_* family; docs/metrics.md says go-libp2p registers its metrics on the node registry", n.PeerID)
		}
	}
	if fams, _ := testenv.Scrape(t, nil, b.MetricsURL); fams.SeriesCount("storage_redis_pool_connections") != 1 {
		t.Errorf("the redis node serves no storage_redis_pool_connections")
	}
	if fams, _ := testenv.Scrape(t, nil, a.MetricsURL); fams.SeriesCount("storage_redis_pool_connections") != 0 {
		t.Errorf("the local node serves storage_redis_pool_connections; docs/metrics.md says Redis only")
	}

	f.waitIngested(t)
	f.checkDashboard(t, dash)
	f.checkRules(t, rules)
	f.checkDocExamples(t, doc)
}
