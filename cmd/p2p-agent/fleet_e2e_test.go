package main_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// sdGroup is one target group of GET /sd.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// networkJSON is the output of `p2p-agent network --json`.
type networkJSON struct {
	Self  string `json:"self"`
	Nodes []struct {
		ID           string   `json:"id"`
		Name         string   `json:"name"`
		Version      string   `json:"version"`
		State        string   `json:"state"`
		Peers        int      `json:"peers"`
		MemoryBytes  float64  `json:"memory_bytes"`
		TasksRunning int      `json:"tasks_running"`
		MetricsURL   string   `json:"metrics_url"`
		Capabilities []string `json:"capabilities"`
		Self         bool     `json:"self"`
	} `json:"nodes"`
	Edges []struct {
		From      string  `json:"from"`
		To        string  `json:"to"`
		LatencyMs float64 `json:"latency_ms"`
	} `json:"edges"`
}

// startAuthNode starts a node whose metrics listener asks for basic auth
// (so /readyz is behind it too: wait for the start line, not readiness).
func startAuthNode(t *testing.T, name, webCfg string, args ...string) *testenv.Node {
	t.Helper()
	n := testenv.StartNode(t, testenv.NodeOptions{NoWait: true, Args: append([]string{
		"--metrics.web_config_file=" + webCfg, "--node.name=" + name, "--p2p.peer_ttl=3s",
	}, args...)})
	testenv.Eventually(t, 60*time.Second, func() error {
		for _, line := range n.Logs() {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "node started" {
				n.PeerID, _ = rec["peer_id"].(string)
				n.MetricsURL, _ = rec["metrics_url"].(string)
				u, _ := rec["api_url"].(string)
				n.APIAddr = strings.TrimPrefix(u, "http://")
				for _, a := range rec["p2p_addrs"].([]any) {
					n.P2PAddrs = append(n.P2PAddrs, a.(string))
				}
				return nil
			}
		}
		return errors.New("not started")
	})
	return n
}

func getSD(url, user, pass string) (int, []sdGroup, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, err
	}
	var gs []sdGroup
	if err := json.Unmarshal(body, &gs); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%v: %s", err, body)
	}
	return resp.StatusCode, gs, nil
}

// TestFleetDiscovery: five real nodes behind basic auth, B to E knowing
// only A. A real Prometheus configured only with http_sd_configs pointing
// at A's /sd scrapes all five; `network --json` on A shows five nodes and
// the ten edges of the full mesh; a SIGKILLed node leaves /sd within
// p2p.peer_ttl; /sd without credentials answers 401.
func TestFleetDiscovery(t *testing.T) {
	testenv.SkipIfShort(t, "starts five binaries and prometheus")
	testenv.ToolPath(t, "prometheus")
	const user, pass, ttl = "prometheus", "s3cret", 3 * time.Second
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(webCfg, []byte("basic_auth_users:\n  "+user+": "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	names := []string{"node-a", "node-b", "node-c", "node-d", "node-e"}
	a := startAuthNode(t, names[0], webCfg)
	nodes := []*testenv.Node{a}
	for _, name := range names[1:] {
		nodes = append(nodes, startAuthNode(t, name, webCfg, "--p2p.bootstrap="+a.FullAddr()))
	}
	sdURL := strings.TrimSuffix(a.MetricsURL, "/metrics") + "/sd"

	// 401 without credentials, 401 with wrong ones
	if code, _, err := getSD(sdURL, "", ""); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("GET /sd without credentials: %d %v, want 401", code, err)
	}
	if code, _, err := getSD(sdURL, user, "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("GET /sd with a wrong password: %d %v, want 401", code, err)
	}

	// /sd lists all five, each with its own URL and labels
	want := map[string]string{} // peer ID -> name
	urls := map[string]string{}
	for i, n := range nodes {
		want[n.PeerID] = names[i]
		urls[n.PeerID] = n.MetricsURL
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		code, gs, err := getSD(sdURL, user, pass)
		if err != nil || code != 200 {
			return fmt.Errorf("GET /sd: %d %v", code, err)
		}
		if len(gs) != len(nodes) {
			return fmt.Errorf("/sd has %d groups, want %d: %v", len(gs), len(nodes), gs)
		}
		for _, g := range gs {
			id := g.Labels["peer_id"]
			if want[id] == "" || g.Labels["node"] != want[id] || g.Labels["version"] != "test" ||
				g.Labels["__scheme__"] != "http" || g.Labels["__metrics_path__"] != "/metrics" || len(g.Labels) != 5 {
				return fmt.Errorf("group %v", g)
			}
			if len(g.Targets) != 1 || "http://"+g.Targets[0]+"/metrics" != urls[id] {
				return fmt.Errorf("group of %s targets %v, want the node's URL %s", id, g.Targets, urls[id])
			}
		}
		return nil
	})

	// a real prometheus with only http_sd_configs scrapes all five
	prom := testenv.StartPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: p2p-agent
    basic_auth: {username: %[2]s, password: %[3]s}
    http_sd_configs:
      - url: %[1]s
        refresh_interval: 1s
        basic_auth: {username: %[2]s, password: %[3]s}
`, sdURL, user, pass))
	prom.WaitForTargetsUp(len(nodes), 60*time.Second)
	ts, err := prom.Targets()
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs, wantIDs []string
	for _, tg := range ts {
		if tg.Health != "up" {
			t.Errorf("target %s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError)
		}
		id := tg.Labels["peer_id"]
		gotIDs = append(gotIDs, id)
		if tg.Labels["node"] != want[id] || tg.ScrapeURL != urls[id] {
			t.Errorf("target %s labels %v, want node %s at %s", tg.ScrapeURL, tg.Labels, want[id], urls[id])
		}
	}
	for id := range want {
		wantIDs = append(wantIDs, id)
	}
	slices.Sort(gotIDs)
	slices.Sort(wantIDs)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("prometheus targets %v, want %v", gotIDs, wantIDs)
	}
	// and the data is there: agent_info of five peer IDs
	testenv.Eventually(t, 20*time.Second, func() error {
		s, err := prom.QueryVector(`count(agent_info{job="p2p-agent"})`)
		if err != nil || len(s) != 1 || s[0].Value != 5 {
			return fmt.Errorf("count(agent_info) = %v %v, want 5", s, err)
		}
		return nil
	})

	// network --json: five nodes and the ten edges of a full mesh
	var nw networkJSON
	testenv.Eventually(t, 30*time.Second, func() error {
		out, errOut, code := a.CLI("network", "--json")
		if code != 0 {
			return fmt.Errorf("network --json: exit %d: %s", code, errOut)
		}
		nw = networkJSON{}
		if err := json.Unmarshal([]byte(out), &nw); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if len(nw.Nodes) != 5 || len(nw.Edges) != 10 {
			return fmt.Errorf("%d nodes, %d edges; want 5 and 10", len(nw.Nodes), len(nw.Edges))
		}
		for _, n := range nw.Nodes {
			if n.Peers != 4 {
				return fmt.Errorf("node %s reports %d peers, want 4", n.Name, n.Peers)
			}
		}
		return nil
	})
	if nw.Self != a.PeerID || nw.Nodes[0].ID != a.PeerID || !nw.Nodes[0].Self || nw.Nodes[1].Self {
		t.Errorf("self %s, first node %s; want A %s", nw.Self, nw.Nodes[0].ID, a.PeerID)
	}
	// the human form: one line per node (this one marked), then the counts
	out, errOut, code := a.CLI("network")
	if code != 0 || !strings.Contains(out, "\n5 nodes, 10 edges\n") || !strings.Contains(out, a.PeerID+" (self)") {
		t.Errorf("network: exit %d %s\n%s", code, errOut, out)
	}
	for _, name := range names {
		if !strings.Contains(out, " "+name+" ") {
			t.Errorf("network output does not name %s:\n%s", name, out)
		}
	}
	pairs := map[[2]string]bool{}
	for _, n := range nw.Nodes {
		if want[n.ID] != n.Name || n.Version != "test" || n.State != "active" || n.MemoryBytes <= 0 ||
			n.TasksRunning != 0 || n.MetricsURL != urls[n.ID] || !slices.Equal(n.Capabilities, allCapabilities) {
			t.Errorf("node %+v", n)
		}
	}
	for _, e := range nw.Edges {
		if want[e.From] == "" || want[e.To] == "" || e.From >= e.To || e.LatencyMs < 0 {
			t.Errorf("edge %+v", e)
		}
		pairs[[2]string{e.From, e.To}] = true
	}
	if len(pairs) != 10 {
		t.Errorf("%d distinct edges, want 10", len(pairs))
	}

	// a SIGKILLed node leaves /sd within the TTL
	e := nodes[4]
	e.Kill()
	killed := time.Now()
	gone := poll(t, 2*ttl, 20*time.Millisecond, func() error {
		_, gs, err := getSD(sdURL, user, pass)
		if err != nil {
			return err
		}
		for _, g := range gs {
			if g.Labels["peer_id"] == e.PeerID {
				return fmt.Errorf("%s still in /sd %s after SIGKILL", e.PeerID, time.Since(killed))
			}
		}
		if len(gs) != 4 {
			return fmt.Errorf("/sd has %d groups, want 4", len(gs))
		}
		return nil
	})
	t.Logf("killed node left /sd after %s (p2p.peer_ttl %s)", gone.Sub(killed).Round(time.Millisecond), ttl)
	// The entry expires at its last answer + TTL, before the kill + TTL;
	// the slack covers one poll (20 ms and an HTTP round trip) on a loaded
	// machine.
	if d := gone.Sub(killed); d > ttl+500*time.Millisecond {
		t.Errorf("killed node left /sd after %s, over p2p.peer_ttl %s", d, ttl)
	}
}
