package p2p

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// PeerExchangeProtocolID is the peer-exchange protocol: the dialler opens a
// stream, the listener answers with one frame of the message codec's
// framing (varint length + JSON, see message.AppendRawFrame) listing the
// agents it is connected to, and closes the stream.
const PeerExchangeProtocolID = protocol.ID("/p2p-ai-agents/pex/1.0.0")

const (
	pexMaxPeers   = 32
	pexMaxAddrs   = 8
	pexMaxBytes   = 64 << 10
	pexTimeout    = 5 * time.Second
	pexRoundPeers = 3
	// pexIdentifyWait bounds how long a reply waits for pending identifies.
	pexIdentifyWait = 2 * time.Second
	// pexFirstRound is the first period of the background exchange, which
	// then doubles up to PeerExchangeInterval: young nodes converge fast.
	pexFirstRound = 2 * time.Second
	// pexFollowUp is the delay of the second exchange with a new peer.
	pexFollowUp = 300 * time.Millisecond
)

type pexPeer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

type pexMessage struct {
	Peers []pexPeer `json:"peers"`
}

// servePeerExchange answers with the connected peers that are themselves
// agents (they speak peer exchange), other than the asker.
func (h *Host) servePeerExchange(s network.Stream) {
	defer s.Close()
	_ = s.SetWriteDeadline(time.Now().Add(pexTimeout))
	asker := s.Conn().RemotePeer()
	ps := h.lh.Peerstore()
	h.awaitIdentify(asker)
	msg := pexMessage{Peers: []pexPeer{}}
	// A random sample of at most pexMaxPeers: the reply stays bounded
	// whatever the size of the mesh, and different askers learn different
	// peers, which spreads knowledge faster than always the same first few.
	peers := h.lh.Network().Peers()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	for _, p := range peers {
		if p == asker {
			continue
		}
		if ok, _ := ps.SupportsProtocols(p, PeerExchangeProtocolID); len(ok) == 0 {
			continue
		}
		addrs := ps.Addrs(p)
		if len(addrs) == 0 {
			continue
		}
		pp := pexPeer{ID: p.String()}
		for _, a := range addrs[:min(len(addrs), pexMaxAddrs)] {
			pp.Addrs = append(pp.Addrs, a.String())
		}
		msg.Peers = append(msg.Peers, pp)
		if len(msg.Peers) == pexMaxPeers {
			break
		}
	}
	h.log.Debug("peer exchange served", "peer", asker.String(), "shared", len(msg.Peers))
	body, err := json.Marshal(msg)
	if err == nil {
		body, err = message.AppendRawFrame(nil, body, pexMaxBytes)
	}
	if err != nil {
		h.log.Debug("peer exchange reply not encoded", "peer", asker.String(), "err", err)
		_ = s.Reset()
		return
	}
	if _, err := s.Write(body); err != nil {
		h.log.Debug("peer exchange reply failed", "peer", asker.String(), "err", err)
		_ = s.Reset()
	}
}

// awaitIdentify waits (briefly) until every connection but the asker's has
// been identified: a peer that connected just before the asker is only
// known as an agent, with its listen addresses, once identify completes,
// and leaving it out would cost the asker a whole exchange period.
func (h *Host) awaitIdentify(asker peer.ID) {
	ids, ok := h.lh.(interface{ IDService() identify.IDService })
	if !ok {
		return
	}
	t := time.NewTimer(pexIdentifyWait)
	defer t.Stop()
	for _, c := range h.lh.Network().Conns() {
		if c.RemotePeer() == asker {
			continue
		}
		select {
		case <-ids.IDService().IdentifyWait(c):
		case <-t.C:
			return
		case <-h.ctx.Done():
			return
		}
	}
}

// exchangeWithNewPeer exchanges peers with a newly identified agent, and
// once more shortly after: a node identified within moments of starting
// may still have announced its protocols without peer exchange (identify
// serves a snapshot that lags SetStreamHandler until its push), so the
// first answer can miss a peer that connected at the same time.
func (h *Host) exchangeWithNewPeer(p peer.ID) {
	h.exchangePeers(p)
	if !h.sleep(pexFollowUp, nil) {
		return
	}
	if h.ConnectedPeers() < h.cfg.ConnLow && h.lh.Network().Connectedness(p) == network.Connected {
		h.exchangePeers(p)
	}
}

// exchangePeers asks p for its agents and dials the ones this host lacks.
func (h *Host) exchangePeers(p peer.ID) {
	select {
	case h.dials <- struct{}{}:
	case <-h.ctx.Done():
		return
	}
	peers, err := h.requestPeers(p)
	<-h.dials
	if err != nil {
		h.log.Debug("peer exchange failed", "peer", p.String(), "err", err)
		return
	}
	h.log.Debug("peer exchange", "peer", p.String(), "learnt", len(peers))
	for _, ai := range peers {
		if ai.ID == h.lh.ID() || h.lh.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		h.wg.Go(func() { h.dialDiscovered(ai, "pex") })
	}
}

func (h *Host) requestPeers(p peer.ID) ([]peer.AddrInfo, error) {
	ctx, cancel := context.WithTimeout(h.ctx, pexTimeout)
	defer cancel()
	s, err := h.lh.NewStream(network.WithNoDial(ctx, "peer exchange"), p, PeerExchangeProtocolID)
	if err != nil {
		return nil, fmt.Errorf("open peer exchange stream: %w", err)
	}
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(pexTimeout))
	body, err := message.ReadRawFrame(bufio.NewReader(s), pexMaxBytes)
	if err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("read peer exchange reply: %w", err)
	}
	var msg pexMessage
	if err := json.Unmarshal(body, &msg); err != nil {
		return nil, fmt.Errorf("%w: peer exchange reply: %w", message.ErrMalformed, err)
	}
	out := make([]peer.AddrInfo, 0, min(len(msg.Peers), pexMaxPeers))
	for _, pp := range msg.Peers[:min(len(msg.Peers), pexMaxPeers)] {
		if ai, ok := DialHint(pp.ID, pp.Addrs[:min(len(pp.Addrs), pexMaxAddrs)]); ok {
			out = append(out, ai)
		}
	}
	return out, nil
}

// peerExchangeLoop periodically asks a few random agents for their peers,
// so knowledge spreads beyond direct neighbours of the bootstrap peer.
func (h *Host) peerExchangeLoop() {
	period := min(pexFirstRound, h.cfg.PeerExchangeInterval)
	for {
		wait := period/2 + rand.N(period/2+1)
		period = min(2*period, h.cfg.PeerExchangeInterval)
		if !h.sleep(wait, nil) {
			return
		}
		if h.ConnectedPeers() >= h.cfg.ConnLow {
			continue
		}
		var agents []peer.ID
		for _, p := range h.lh.Network().Peers() {
			if ok, _ := h.lh.Peerstore().SupportsProtocols(p, PeerExchangeProtocolID); len(ok) > 0 {
				agents = append(agents, p)
			}
		}
		rand.Shuffle(len(agents), func(i, j int) { agents[i], agents[j] = agents[j], agents[i] })
		for _, p := range agents[:min(len(agents), pexRoundPeers)] {
			h.exchangePeers(p)
		}
	}
}
