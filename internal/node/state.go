// Package node is the composition root: it builds one node's registry,
// identity, store, p2p host, message service, task engine and servers from a
// validated configuration, passes each its dependencies, and runs the
// lifecycle initializing -> active -> stopping -> stopped.
package node

import "sync/atomic"

// State is a lifecycle state of the node.
type State int32

// Lifecycle states, in the order a node passes through them.
const (
	Initializing State = iota
	Active
	Stopping
	Stopped
)

var stateNames = [...]string{"initializing", "active", "stopping", "stopped"}

// String returns the state's name as shown by `p2p-agent status`.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// stateBox holds the current state for concurrent readers.
type stateBox struct{ v atomic.Int32 }

func (b *stateBox) Load() State   { return State(b.v.Load()) }
func (b *stateBox) Store(s State) { b.v.Store(int32(s)) }
