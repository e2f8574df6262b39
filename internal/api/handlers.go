package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.deps.Status.Status())
}

func (s *Server) handlePeers(w http.ResponseWriter, _ *http.Request) {
	infos := s.deps.Peers.Peers()
	peers := make([]Peer, 0, len(infos))
	for _, p := range infos {
		peers = append(peers, Peer{
			ID:           p.ID.String(),
			Address:      p.Addr,
			Direction:    p.Direction,
			LatencyMs:    ms(p.Latency),
			AgentVersion: p.AgentVersion,
			Capabilities: p.Capabilities,
		})
	}
	writeJSON(w, http.StatusOK, peers)
}

func (s *Server) handlePing(w http.ResponseWriter, r *http.Request) {
	var req PingRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Peer == "" {
		s.fail(w, fmt.Errorf("%w: peer is required", errBadRequest))
		return
	}
	if req.Count <= 0 {
		req.Count = 1
	}
	if req.Count > 1000 {
		s.fail(w, fmt.Errorf("%w: count %d exceeds 1000", errBadRequest, req.Count))
		return
	}
	st, err := s.deps.Pinger.Ping(r.Context(), req.Peer, req.Count)
	if err != nil {
		s.fail(w, err)
		return
	}
	res := PingResult{Peer: st.Peer.String(), RTTsMs: make([]float64, len(st.RTTs)), MinMs: ms(st.Min), AvgMs: ms(st.Avg), MaxMs: ms(st.Max)}
	for i, rtt := range st.RTTs {
		res.RTTsMs[i] = ms(rtt)
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleTaskSubmit(w http.ResponseWriter, r *http.Request) {
	var req TaskRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	sr := task.SubmitRequest{Type: req.Type, Input: req.Input, Trace: req.Trace}
	if len(sr.Input) == 0 {
		sr.Input = json.RawMessage(`{}`)
	}
	if req.Peer != "" {
		if s.deps.Peers == nil {
			writeError(w, http.StatusServiceUnavailable, "p2p is not running")
			return
		}
		id, err := s.deps.Peers.Resolve(r.Context(), req.Peer)
		if err != nil {
			s.fail(w, err)
			return
		}
		sr.Peer = id
	}
	// The task outlives the HTTP request that submitted it.
	rec, err := s.deps.Tasks.Submit(context.WithoutCancel(r.Context()), sr)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, rec)
}

func (s *Server) handleTaskGet(w http.ResponseWriter, r *http.Request) {
	rec, err := s.deps.Tasks.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}
