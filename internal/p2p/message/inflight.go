package message

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// CodeBusy is the wire error code of a request refused because the node
// holds too many inbound requests (bytes across all peers, or handlers of
// one peer); the requester may try another peer.
const CodeBusy = "busy"

// Defaults of the inbound bounds.
const (
	// DefaultMaxInflightBytes bounds the bytes of inbound request frames
	// held by running handlers, across all peers.
	DefaultMaxInflightBytes = 64 << 20
	// DefaultMaxHandlersPerPeer bounds the handlers running for one peer,
	// across its streams.
	DefaultMaxHandlersPerPeer = 64
)

var errBusy = &messageError{reason: ReasonBusy, code: CodeBusy, msg: "node busy: too many requests in flight"}

// inflight accounts the inbound requests being handled: their frame bytes
// in total and their number per peer.
type inflight struct {
	maxBytes, maxPerPeer int

	mu     sync.Mutex
	bytes  int
	byPeer map[peer.ID]int
}

func newInflight(maxBytes, maxPerPeer int) *inflight {
	return &inflight{maxBytes: maxBytes, maxPerPeer: maxPerPeer, byPeer: make(map[peer.ID]int)}
}

// reserve admits a request of n bytes from p, or reports false when either
// bound would be exceeded. release must follow an admitted request.
func (f *inflight) reserve(p peer.ID, n int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bytes+n > f.maxBytes || f.byPeer[p] >= f.maxPerPeer {
		return false
	}
	f.bytes += n
	f.byPeer[p]++
	return true
}

func (f *inflight) release(p peer.ID, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bytes -= n
	if f.byPeer[p]--; f.byPeer[p] <= 0 {
		delete(f.byPeer, p)
	}
}
