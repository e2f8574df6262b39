package p2p

import (
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

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
