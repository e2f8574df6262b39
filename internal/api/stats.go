package api

import (
	"net/http"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// StatsSource reads the node's own counters.
type StatsSource func() (metrics.Snapshot, error)

// Stats is the answer of GET /api/v1/stats: the node's status and its
// counters now. Two of them give rates (p2p-agent top).
type Stats struct {
	Status   Status           `json:"status"`
	Counters metrics.Snapshot `json:"counters"`
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	snap, err := s.deps.Stats()
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Stats{Status: s.deps.Status.Status(), Counters: snap})
}
