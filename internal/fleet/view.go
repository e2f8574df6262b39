package fleet

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Node is one node of the view, as it last described itself.
type Node struct {
	ID       peer.ID
	Answer   Answer // Peers and Hints are not kept
	LastSeen time.Time
	// Connected tells whether this node holds a connection to it.
	Connected bool
}

type entry struct {
	ans      Answer
	lastSeen time.Time
	hintsAt  time.Time // when it last sent hints
	answers  int       // answers received from it while in the view
}

type hint struct {
	ai   peer.AddrInfo
	seen time.Time
}

func (s *Service) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.nodes {
		if now.Sub(e.lastSeen) >= s.cfg.TTL {
			delete(s.nodes, id)
		}
	}
	for id, h := range s.hints {
		if now.Sub(h.seen) >= s.cfg.TTL {
			delete(s.hints, id)
		}
	}
}

// Nodes returns the other nodes heard from within the TTL, sorted by ID.
func (s *Service) Nodes() []Node {
	now := time.Now()
	s.mu.Lock()
	out := make([]Node, 0, len(s.nodes))
	for id, e := range s.nodes {
		if now.Sub(e.lastSeen) >= s.cfg.TTL {
			continue
		}
		out = append(out, Node{ID: id, Answer: e.ans, LastSeen: e.lastSeen})
	}
	s.mu.Unlock()
	for i := range out {
		out[i].Connected = s.h.Network().Connectedness(out[i].ID) == network.Connected
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// View is the mesh as this node sees it: every node heard from within the
// TTL, and the edges each reported about itself (this node's own included).
type View struct {
	Self  peer.ID
	Nodes []Node
	// Edges maps a node to the edges it reported; a node that could not be
	// asked is absent.
	Edges map[peer.ID][]Edge
}

// Network asks every node of the view for its edges (bounded by the worker
// pool and the query timeout) and returns the view. Answers are reused for
// a second, so a refreshing screen does not multiply the queries.
func (s *Service) Network(ctx context.Context) View {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	if time.Since(s.viewAt) >= edgesCacheFor || s.viewEdges == nil {
		edges := map[peer.ID][]Edge{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, n := range s.Nodes() {
			select {
			case s.sem <- struct{}{}:
			case <-ctx.Done():
			case <-s.ctx.Done():
			}
			if ctx.Err() != nil || s.ctx.Err() != nil {
				break
			}
			wg.Go(func() {
				defer func() { <-s.sem }()
				if ans, err := s.query(n.ID, true); err == nil {
					mu.Lock()
					edges[n.ID] = ans.Peers
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		s.viewEdges, s.viewAt = edges, time.Now()
	}
	v := View{Self: s.h.ID(), Nodes: s.Nodes(), Edges: map[peer.ID][]Edge{s.h.ID(): s.edges()}}
	for _, n := range v.Nodes {
		if e, ok := s.viewEdges[n.ID]; ok {
			v.Edges[n.ID] = e
		}
	}
	return v
}
