package api_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
)

// TestNetworkRoute: GET /api/v1/network answers the view as the node built
// it, with empty lists (not null) for a node alone, and 503 without a
// network source.
func TestNetworkRoute(t *testing.T) {
	two := 2
	view := api.NetworkView{
		Self: "a",
		Nodes: []api.NetworkNode{
			{ID: "a", Name: "node-a", Version: "1", State: "active", Peers: &two, Capabilities: []string{"text.chunk"}, Connected: true, Self: true},
			{ID: "b", Name: "node-b", Version: "1", State: "active", Capabilities: []string{}, LastSeenSeconds: 1.5},
		},
		Edges: []api.NetworkEdge{{From: "a", To: "b", LatencyMs: 0.25}},
	}
	h := newHarness(t, local.Options{}, func(_ *harness, _ *api.ServerConfig, d *api.Deps) {
		d.Network = func(context.Context) api.NetworkView { return view }
	})
	a := h.do(t, "GET", "/api/v1/network", "")
	if got := decode[api.NetworkView](t, a); a.code != 200 || !reflect.DeepEqual(got, view) {
		t.Fatalf("network = %d %+v, want %+v", a.code, got, view)
	}

	alone := newHarness(t, local.Options{}, func(_ *harness, _ *api.ServerConfig, d *api.Deps) {
		d.Network = func(context.Context) api.NetworkView { return api.NetworkView{Self: "a"} }
	})
	a = alone.do(t, "GET", "/api/v1/network", "")
	if a.code != 200 || string(a.body) != "{\n  \"self\": \"a\",\n  \"nodes\": [],\n  \"edges\": []\n}\n" {
		t.Fatalf("alone = %d %s", a.code, a.body)
	}

	none := newHarness(t, local.Options{})
	if a := none.do(t, "GET", "/api/v1/network", ""); a.code != 503 {
		t.Fatalf("without a source = %d %s, want 503", a.code, a.body)
	}
}
