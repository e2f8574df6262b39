package p2p

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

const (
	peerstorePermanentTTL = peerstore.PermanentAddrTTL
	// dialTimeout bounds one discovery or bootstrap dial.
	dialTimeout = 10 * time.Second
	// bootstrapRecheck is how often a connected bootstrap peer is checked
	// even without a disconnect notification.
	bootstrapRecheck = 30 * time.Second
)

// keepConnected dials a bootstrap peer until connected, backing off
// exponentially (with jitter) between failures, and dials again as soon as
// the connection is lost.
func (h *Host) keepConnected(ai peer.AddrInfo, lost <-chan struct{}) {
	backoff := h.cfg.BootstrapBackoffMin
	for {
		if h.lh.Network().Connectedness(ai.ID) != network.Connected {
			// Our own backoff replaces the swarm's per-address dial backoff,
			// which would otherwise refuse redials to a restarted peer.
			ctx, cancel := context.WithTimeout(network.WithForceDirectDial(h.ctx, "bootstrap"), dialTimeout)
			err := h.lh.Connect(ctx, ai)
			cancel()
			if h.ctx.Err() != nil {
				return
			}
			if err != nil {
				h.log.Debug("bootstrap dial failed", "peer", ai.ID.String(), "retry_in", backoff, "err", err)
				// Full jitter in [backoff/2, backoff) keeps restarted
				// meshes from redialling in lockstep.
				wait := backoff/2 + rand.N(backoff/2+1)
				backoff = min(2*backoff, h.cfg.BootstrapBackoffMax)
				if !h.sleep(wait, nil) {
					return
				}
				continue
			}
			h.log.Info("connected to bootstrap peer", "peer", ai.ID.String())
			backoff = h.cfg.BootstrapBackoffMin
		}
		if !h.sleep(bootstrapRecheck, lost) {
			return
		}
	}
}

// sleep waits d or until wake fires; it reports false when the host closes.
func (h *Host) sleep(d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.ctx.Done():
		return false
	case <-wake:
		return true
	case <-t.C:
		return true
	}
}

// watchEvents wakes bootstrap loops when their peer disconnects and starts
// a peer exchange with every newly identified peer that speaks it.
func (h *Host) watchEvents() {
	for {
		select {
		case <-h.ctx.Done():
			return
		case e, ok := <-h.sub.Out():
			if !ok {
				return
			}
			switch ev := e.(type) {
			case event.EvtPeerConnectednessChanged:
				if ev.Connectedness == network.Connected {
					continue
				}
				if wake, ok := h.lost[ev.Peer]; ok {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			case event.EvtPeerIdentificationCompleted:
				if h.cfg.DisablePeerExchange {
					continue
				}
				for _, p := range ev.Protocols {
					if p == PeerExchangeProtocolID {
						h.wg.Go(func() { h.exchangeWithNewPeer(ev.Peer) })
						break
					}
				}
			}
		}
	}
}

// dialDiscovered connects to a peer learnt from mDNS or peer exchange,
// unless it is known, connected, or the host already has ConnLow peers.
func (h *Host) dialDiscovered(ai peer.AddrInfo, source string) {
	if ai.ID == h.lh.ID() || ai.ID == "" || len(ai.Addrs) == 0 {
		return
	}
	if h.lh.Network().Connectedness(ai.ID) == network.Connected || h.ConnectedPeers() >= h.cfg.ConnLow {
		return
	}
	select {
	case h.dials <- struct{}{}:
	case <-h.ctx.Done():
		return
	}
	defer func() { <-h.dials }()
	ctx, cancel := context.WithTimeout(h.ctx, dialTimeout)
	defer cancel()
	if err := h.lh.Connect(ctx, ai); err != nil {
		h.log.Debug("dial discovered peer failed", "peer", ai.ID.String(), "source", source, "err", err)
		return
	}
	h.log.Debug("connected to discovered peer", "peer", ai.ID.String(), "source", source)
}

// mdnsNotifee connects to peers found on the local network.
type mdnsNotifee struct{ h *Host }

// HandlePeerFound implements mdns.Notifee.
func (n mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	h := n.h
	if h.ctx.Err() != nil {
		return
	}
	h.wg.Go(func() { h.dialDiscovered(ai, "mdns") })
}
