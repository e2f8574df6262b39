package metrics_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// TestSDGroups: one group per node with a usable URL, the five labels, and
// nothing for a node whose URL is empty or not http(s).
func TestSDGroups(t *testing.T) {
	got := metrics.SDGroups([]metrics.SDTarget{
		{PeerID: "p1", Node: "a", Version: "1.0", URL: "http://10.0.0.1:8080/metrics"},
		{PeerID: "p2", Node: "b", Version: "1.1", URL: "https://[::1]:9100/custom/path"},
		{PeerID: "p3", Node: "c", Version: "1.0", URL: ""},
		{PeerID: "p4", Node: "d", Version: "1.0", URL: "ftp://x/metrics"},
		{PeerID: "p5", Node: "e", Version: "1.0", URL: "http://10.0.0.5:8080"},
	})
	want := []metrics.SDGroup{
		{Targets: []string{"10.0.0.1:8080"}, Labels: map[string]string{"peer_id": "p1", "node": "a", "version": "1.0", "__scheme__": "http", "__metrics_path__": "/metrics"}},
		{Targets: []string{"[::1]:9100"}, Labels: map[string]string{"peer_id": "p2", "node": "b", "version": "1.1", "__scheme__": "https", "__metrics_path__": "/custom/path"}},
		{Targets: []string{"10.0.0.5:8080"}, Labels: map[string]string{"peer_id": "p5", "node": "e", "version": "1.0", "__scheme__": "http", "__metrics_path__": "/metrics"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SDGroups =\n%+v\nwant\n%+v", got, want)
	}
}

// TestSDBehindBasicAuth: /sd is served by the same listener, behind the
// same basic auth as /metrics; the source sees the request's Host.
func TestSDBehindBasicAuth(t *testing.T) {
	webCfg := writeWebConfig(t, t.TempDir(), basicAuthUsers(t, "scraper", "pw", bcrypt.MinCost))
	srv := startServer(t, metrics.ServerConfig{WebConfigFile: webCfg, SD: func(r *http.Request) []metrics.SDTarget {
		return []metrics.SDTarget{{PeerID: "self", Node: "n", Version: "v", URL: "http://" + r.Host + "/metrics"}}
	}}, nil)
	sdURL := strings.TrimSuffix(srv.URL(), "/metrics") + "/sd"
	if resp, _ := get(t, http.DefaultClient, sdURL, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/sd without credentials: %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, sdURL, nil)
	req.SetBasicAuth("scraper", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var gs []metrics.SDGroup
	if err := json.NewDecoder(resp.Body).Decode(&gs); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/sd: %d %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	host := strings.TrimPrefix(strings.TrimSuffix(srv.URL(), "/metrics"), "http://")
	if len(gs) != 1 || len(gs[0].Targets) != 1 || gs[0].Targets[0] != host || gs[0].Labels["peer_id"] != "self" {
		t.Errorf("/sd = %+v, want self at %s", gs, host)
	}
}
