package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

func (s *Service) loop() {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.refresh()
	}
}

// refresh asks every connected agent, then up to MaxIndirect nodes this
// node is not connected to (known ones first, then hints), expiring what
// has not been heard from within the TTL.
func (s *Service) refresh() {
	now := time.Now()
	s.expire(now)
	var direct []peer.ID
	for _, p := range s.h.Network().Peers() {
		if ok, _ := s.h.Peerstore().SupportsProtocols(p, ProtocolID); len(ok) > 0 {
			direct = append(direct, p)
		}
	}
	var indirect []peer.ID
	s.mu.Lock()
	for id := range s.nodes {
		if s.h.Network().Connectedness(id) != network.Connected {
			indirect = append(indirect, id)
		}
	}
	known := len(indirect)
	for id, hn := range s.hints {
		if _, ok := s.nodes[id]; ok || s.h.Network().Connectedness(id) == network.Connected {
			continue
		}
		s.h.Peerstore().AddAddrs(id, hn.ai.Addrs, s.cfg.TTL)
		indirect = append(indirect, id)
	}
	s.mu.Unlock()
	rand.Shuffle(known, func(i, j int) { indirect[i], indirect[j] = indirect[j], indirect[i] })
	targets := append(direct, indirect[:min(len(indirect), s.cfg.MaxIndirect)]...)
	var wg sync.WaitGroup
	for _, p := range targets {
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-s.sem }()
			_, _ = s.query(p, false)
		})
	}
	wg.Wait()
}

// ask queries p once (on connect), bounded by the worker pool.
func (s *Service) ask(p peer.ID) {
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		return
	}
	defer func() { <-s.sem }()
	_, _ = s.query(p, false)
}

// query asks p for its info and records the answer under p.
func (s *Service) query(p peer.ID, edges bool) (*Answer, error) {
	if p == s.h.ID() {
		return nil, errors.New("fleet: not asking myself")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	st, err := s.h.NewStream(ctx, p, ProtocolID)
	if err != nil {
		return nil, fmt.Errorf("open info stream to %s: %w", p, err)
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(s.cfg.Timeout))
	sentAt := time.Now()
	wantHints := false
	if !edges {
		s.mu.Lock()
		e, ok := s.nodes[p]
		// a young node's peers are few: ask its first answers for hints
		wantHints = !ok || e.answers < hintsFirst || sentAt.Sub(e.hintsAt) >= hintsEvery
		s.mu.Unlock()
	}
	req, _ := json.Marshal(request{Edges: edges, Hints: wantHints})
	frame, err := message.AppendRawFrame(nil, req, maxRequestBytes)
	if err == nil {
		_, err = st.Write(frame)
	}
	if err == nil {
		err = st.CloseWrite()
	}
	if err != nil {
		_ = st.Reset()
		return nil, fmt.Errorf("send info request to %s: %w", p, err)
	}
	ans, err := readAnswer(st)
	if err != nil {
		_ = st.Reset()
		s.refused(err)
		s.log.Debug("info answer refused", "peer", p.String(), "err", err)
		return nil, fmt.Errorf("%w from %s: %w", ErrRefused, p, err)
	}
	now := time.Now()
	if !edges {
		// The round trip of a small answer is this node's latency sample
		// of the edge (the message service's pings feed the same average).
		s.h.Peerstore().RecordLatency(p, now.Sub(sentAt))
	}
	var fresh []peer.AddrInfo
	s.mu.Lock()
	for _, h := range ans.Hints {
		ai, ok := hintAddrInfo(h)
		if !ok || ai.ID == s.h.ID() {
			continue
		}
		if _, known := s.nodes[ai.ID]; known {
			continue
		}
		_, had := s.hints[ai.ID]
		if !had && len(s.hints) >= maxHintsKept {
			continue
		}
		s.hints[ai.ID] = hint{ai: ai, seen: now}
		if !had && s.h.Network().Connectedness(ai.ID) != network.Connected {
			// a node never heard of: ask it now rather than at the next
			// round, so a new node is known (and connected) within moments
			fresh = append(fresh, ai)
		}
	}
	kept := *ans
	kept.Peers, kept.Hints = nil, nil
	hintsAt, answers := now, 1
	if prev, ok := s.nodes[p]; ok {
		answers = prev.answers + 1
		if !wantHints {
			hintsAt = prev.hintsAt
		}
	}
	s.nodes[p] = &entry{ans: kept, lastSeen: now, hintsAt: hintsAt, answers: answers}
	delete(s.hints, p)
	s.mu.Unlock()
	for _, ai := range fresh {
		s.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, s.cfg.TTL)
		s.wg.Go(func() { s.ask(ai.ID) })
	}
	return ans, nil
}
