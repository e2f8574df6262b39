package api

import (
	"context"
	"net/http"
)

// NetworkSource returns the mesh as the node sees it (GET /api/v1/network).
type NetworkSource func(ctx context.Context) NetworkView

// NetworkView is the answer of GET /api/v1/network: every node heard from
// within p2p.peer_ttl (this one first) and the edges they reported.
type NetworkView struct {
	Self  string        `json:"self"`
	Nodes []NetworkNode `json:"nodes"`
	Edges []NetworkEdge `json:"edges"`
}

// NetworkNode is one node of the network view, as it described itself.
type NetworkNode struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
	// Peers is how many agent peers the node reported; null when it could
	// not be asked for them.
	Peers             *int     `json:"peers"`
	CPUPercent        float64  `json:"cpu_percent"`
	MemoryBytes       float64  `json:"memory_bytes"`
	MessagesPerSecond float64  `json:"messages_per_second"`
	TasksRunning      int      `json:"tasks_running"`
	MetricsURL        string   `json:"metrics_url,omitempty"`
	Capabilities      []string `json:"capabilities"`
	// LastSeenSeconds is how long ago the node last answered (0 for self).
	LastSeenSeconds float64 `json:"last_seen_seconds"`
	// Connected tells whether this node holds a connection to it.
	Connected bool `json:"connected"`
	// Self marks the node that answered.
	Self bool `json:"self,omitempty"`
}

// NetworkEdge is one connection between two nodes, reported by From (and
// possibly by To as well); LatencyMs is 0 when never measured.
type NetworkEdge struct {
	From      string  `json:"from"`
	To        string  `json:"to"`
	LatencyMs float64 `json:"latency_ms"`
}

func (s *Server) handleNetwork(w http.ResponseWriter, r *http.Request) {
	v := s.deps.Network(r.Context())
	if v.Nodes == nil {
		v.Nodes = []NetworkNode{}
	}
	if v.Edges == nil {
		v.Edges = []NetworkEdge{}
	}
	writeJSON(w, http.StatusOK, v)
}
