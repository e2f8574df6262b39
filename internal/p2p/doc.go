// Package p2p is the node's libp2p host: identity, transports, resource
// and connection managers, discovery (bootstrap peers redialled with
// backoff, mDNS, and the peer-exchange protocol /p2p-ai-agents/pex/1.0.0),
// the capabilities peers announce through identify, and the resolution of
// a peer ID or multiaddr to a peer to talk to (ParsePeer, Host.Resolve).
//
// The message service that runs on the host is package message
// (internal/p2p/message); peer exchange reuses its frame codec.
package p2p
