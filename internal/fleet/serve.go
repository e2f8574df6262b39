package fleet

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// Per-peer bound on the info requests this node answers. A well-behaved
// peer asks every 10 s, once more on connect and once a second while a
// network view is watched; a peer asking faster than AnswerRate (after a
// burst of AnswerBurst) gets its stream reset instead of an answer, counted
// as busy.
const (
	AnswerRate  = 2 // per second
	AnswerBurst = 10
)

// serve answers one info request.
func (s *Service) serve(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(s.cfg.Timeout))
	asker := st.Conn().RemotePeer()
	if !s.asks.Allow(asker.String(), time.Now()) {
		s.cfg.Refused(message.ReasonBusy)
		s.log.Debug("info request refused: the peer asks too often", "peer", asker.String())
		_ = st.Reset()
		return
	}
	body, err := message.ReadRawFrame(bufio.NewReader(st), maxRequestBytes)
	var req request
	if err == nil {
		if jerr := json.Unmarshal(body, &req); jerr != nil {
			err = fmt.Errorf("%w: info request: %w", message.ErrMalformed, jerr)
		}
	}
	if err != nil {
		s.refused(err)
		s.log.Debug("info request refused", "peer", asker.String(), "err", err)
		_ = st.Reset()
		return
	}
	var local net.IP
	if ip, err := manet.ToIP(st.Conn().LocalMultiaddr()); err == nil {
		local = ip
	}
	ans := s.answer(local, asker, req)
	out, err := json.Marshal(ans)
	if err == nil {
		out, err = message.AppendRawFrame(nil, out, MaxAnswerBytes)
	}
	if err == nil {
		_, err = st.Write(out)
	}
	if err != nil {
		s.log.Debug("info answer not sent", "peer", asker.String(), "err", err)
		_ = st.Reset()
	}
}

// answer describes this node to asker.
func (s *Service) answer(local net.IP, asker peer.ID, req request) Answer {
	l := s.cfg.Local()
	a := Answer{
		Name: l.Name, Version: l.Version, State: l.State, Capabilities: l.Capabilities,
		MetricsURL: s.cfg.MetricsURL(local), CPUPercent: l.CPUPercent, MemoryBytes: l.MemoryBytes,
		MessagesPerSecond: l.MessagesPerSecond, TasksRunning: l.TasksRunning,
	}
	if a.Capabilities == nil {
		a.Capabilities = []string{}
	}
	if req.Edges {
		a.Peers = s.edges()
	}
	if !req.Hints {
		return a
	}
	ps := s.h.Peerstore()
	peers := s.h.Network().Peers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	for _, p := range peers {
		if len(a.Hints) == MaxHints {
			break
		}
		if p == asker {
			continue
		}
		if ok, _ := ps.SupportsProtocols(p, ProtocolID); len(ok) == 0 {
			continue
		}
		var addrs []string
		for _, c := range s.h.Network().ConnsToPeer(p) {
			// the address this node reaches it on, if it dialled; the
			// peerstore's listen addresses otherwise
			if c.Stat().Direction == network.DirOutbound {
				addrs = append(addrs, c.RemoteMultiaddr().String())
				break
			}
		}
		for _, ad := range ps.Addrs(p) {
			if len(addrs) == maxHintAddrs {
				break
			}
			if str := ad.String(); !slices.Contains(addrs, str) {
				addrs = append(addrs, str)
			}
		}
		if len(addrs) > 0 {
			a.Hints = append(a.Hints, Hint{ID: p.String(), Addrs: addrs})
		}
	}
	return a
}

// edges lists this node's connected agents with their latency.
func (s *Service) edges() []Edge {
	ps := s.h.Peerstore()
	var out []Edge
	for _, p := range s.h.Network().Peers() {
		if len(out) == MaxEdges {
			break
		}
		if ok, _ := ps.SupportsProtocols(p, ProtocolID); len(ok) == 0 {
			continue
		}
		out = append(out, Edge{ID: p.String(), LatencyMs: float64(ps.LatencyEWMA(p)) / float64(time.Millisecond)})
	}
	slices.SortFunc(out, func(a, b Edge) int { return strings.Compare(a.ID, b.ID) })
	return out
}
