package p2p

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// ErrBadPeer reports a peer string that is neither a peer ID nor a
// multiaddr ending in /p2p/<ID>; the CLI maps it to exit code 2.
var ErrBadPeer = errors.New("invalid peer")

// ParsePeer accepts a bare peer ID ("12D3KooW...") or a full multiaddr
// ending in /p2p/<ID>. Errors wrap ErrBadPeer.
func ParsePeer(s string) (peer.AddrInfo, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return peer.AddrInfo{}, fmt.Errorf("%w: empty", ErrBadPeer)
	}
	if !strings.HasPrefix(s, "/") {
		id, err := peer.Decode(s)
		if err != nil {
			return peer.AddrInfo{}, fmt.Errorf("%w: %q is not a peer ID: %w", ErrBadPeer, s, err)
		}
		return peer.AddrInfo{ID: id}, nil
	}
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("%w: %q is not a multiaddr: %w", ErrBadPeer, s, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("%w: %q must end in /p2p/<peer ID>: %w", ErrBadPeer, s, err)
	}
	return *ai, nil
}

// DialHint turns a peer ID and addresses that another peer gave for it
// (peer exchange, the info protocol's dial hints) into something to dial.
// Addresses that do not parse, or that name a peer (they would be dialled
// as id), are dropped; ok is false when id does not decode or no address
// is left.
func DialHint(id string, addrs []string) (ai peer.AddrInfo, ok bool) {
	pid, err := peer.Decode(id)
	if err != nil {
		return peer.AddrInfo{}, false
	}
	ai.ID = pid
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		if _, last := ma.SplitLast(a); last != nil && last.Code() == ma.P_P2P {
			continue
		}
		ai.Addrs = append(ai.Addrs, a)
	}
	return ai, len(ai.Addrs) > 0
}

// Resolve turns target, a peer ID or a full multiaddr ending in
// /p2p/<ID> (see ParsePeer), into the peer to talk to. Given a multiaddr,
// it connects to it first (force-direct: the swarm's dial backoff is
// ignored); a bare ID is left to be dialled at the addresses this host
// knows by the first stream to it. A target naming this host resolves to
// its ID without a dial: whether that is allowed is the caller's call.
// Errors wrap ErrBadPeer or message.ErrPeerUnreachable.
func (h *Host) Resolve(ctx context.Context, target string) (peer.ID, error) {
	ai, err := ParsePeer(target)
	if err != nil {
		return "", err
	}
	if ai.ID == h.ID() || len(ai.Addrs) == 0 {
		return ai.ID, nil
	}
	if err := message.Connect(ctx, h.lh, ai); err != nil {
		return "", err
	}
	return ai.ID, nil
}
