// Package p2p is the node's libp2p side: the host (identity, transports,
// resource and connection managers), discovery (bootstrap peers, mDNS and
// peer exchange), the capabilities peers announce, and the message service
// of protocol /p2p-ai-agents/msg/1.0.0 (DESIGN.md section 7): the frame codec
// and JSON envelope, the server that dispatches requests to handlers through
// the metrics middleware with bounded in-flight work, and the client that
// keeps one stream per peer and matches responses to requests by id.
//
// The sender of a message is always the authenticated remote peer of its
// stream, never a field of the message. Malformed, unknown and oversized
// messages get an error reply and are counted; they never crash or block the
// node.
package p2p
