package p2p

import (
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Capability protocols are announced through identify, so a peer's
// capabilities are known as soon as it is identified and updated by
// identify push when they change.
const (
	capPrefix = "/p2p-ai-agents/cap/"
	capSuffix = "/1.0.0"
)

// CapabilityProtocol returns the protocol ID that announces capability name.
func CapabilityProtocol(name string) protocol.ID {
	return protocol.ID(capPrefix + name + capSuffix)
}

func validCapability(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("p2p: capability %q: must be 1 to 64 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("p2p: capability %q: only a-z, 0-9, '.', '-' and '_' are allowed", name)
		}
	}
	return nil
}

// Advertise announces capabilities (e.g. "text.chunk") to peers: each is
// registered as a protocol whose streams are reset, so identify (and
// identify push, for peers already connected) carries it. Invalid names are
// rejected with an error and none of the names are registered.
func (h *Host) Advertise(capabilities ...string) error {
	for _, c := range capabilities {
		if err := validCapability(c); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range capabilities {
		if _, ok := h.caps[c]; ok {
			continue
		}
		h.caps[c] = struct{}{}
		h.lh.SetStreamHandler(CapabilityProtocol(c), func(s network.Stream) { _ = s.Reset() })
	}
	return nil
}

// Withdraw stops announcing capabilities.
func (h *Host) Withdraw(capabilities ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range capabilities {
		if _, ok := h.caps[c]; ok {
			delete(h.caps, c)
			h.lh.RemoveStreamHandler(CapabilityProtocol(c))
		}
	}
}

// Capabilities returns this host's advertised capabilities, sorted.
func (h *Host) Capabilities() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.caps))
	for c := range h.caps {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// PeerCapabilities returns the capabilities p announced, sorted, as last
// seen by identify.
func (h *Host) PeerCapabilities(p peer.ID) []string {
	protos, err := h.lh.Peerstore().GetProtocols(p)
	if err != nil {
		return nil
	}
	return capabilitiesOf(protos)
}

// PeersOffering lists the connected peers that announce capability name.
func (h *Host) PeersOffering(name string) []peer.ID {
	proto := CapabilityProtocol(name)
	var out []peer.ID
	for _, p := range h.lh.Network().Peers() {
		if ok, _ := h.lh.Peerstore().SupportsProtocols(p, proto); len(ok) > 0 {
			out = append(out, p)
		}
	}
	return out
}

func capabilitiesOf(protos []protocol.ID) []string {
	var out []string
	for _, p := range protos {
		s := string(p)
		if strings.HasPrefix(s, capPrefix) && strings.HasSuffix(s, capSuffix) && len(s) > len(capPrefix)+len(capSuffix) {
			out = append(out, s[len(capPrefix):len(s)-len(capSuffix)])
		}
	}
	slices.Sort(out)
	return out
}
