package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// PingStats is the outcome of pinging one peer several times: every round
// trip in order, and their minimum, mean and maximum.
type PingStats struct {
	Peer peer.ID
	RTTs []time.Duration
	Min  time.Duration
	Avg  time.Duration
	Max  time.Duration
}

// Pinger pings peers named by ID or multiaddr through a message service
// running on a host.
type Pinger struct {
	host *Host
	svc  *message.Service
}

// NewPinger returns a pinger resolving targets with h and pinging them
// through svc.
func NewPinger(h *Host, svc *message.Service) *Pinger { return &Pinger{host: h, svc: svc} }

// Ping resolves target (a peer ID or a full multiaddr, see Host.Resolve),
// connecting to it when needed, and pings it count times (at least once),
// stopping at the first failure. This host's own peer is refused with
// ErrBadPeer. Errors wrap ErrBadPeer or message.ErrPeerUnreachable, or are
// a *message.RemoteError.
func (p *Pinger) Ping(ctx context.Context, target string, count int) (PingStats, error) {
	id, err := p.host.Resolve(ctx, target)
	if err != nil {
		return PingStats{}, err
	}
	if id == p.host.ID() {
		return PingStats{}, fmt.Errorf("%w: that is this node's own peer ID", ErrBadPeer)
	}
	count = max(count, 1)
	st := PingStats{Peer: id, RTTs: make([]time.Duration, 0, count)}
	var sum time.Duration
	for range count {
		rtt, err := p.svc.Ping(ctx, id)
		if err != nil {
			return PingStats{}, err
		}
		if len(st.RTTs) == 0 || rtt < st.Min {
			st.Min = rtt
		}
		st.Max = max(st.Max, rtt)
		sum += rtt
		st.RTTs = append(st.RTTs, rtt)
	}
	st.Avg = sum / time.Duration(count)
	return st, nil
}
