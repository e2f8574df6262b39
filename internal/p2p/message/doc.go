// Package message is the message service of protocol
// /p2p-ai-agents/msg/1.0.0 (DESIGN.md section 7): the frame codec and JSON
// envelope, the server that dispatches requests to handlers through the
// metrics middleware with bounded in-flight work, the client that keeps streams
// per peer (up to ServiceConfig.ExclusiveStreams used by one request at a
// time, then one shared stream whose responses are matched to requests by
// id), and the
// protocol's errors and error codes. It runs on any libp2p host.Host; the
// node's own host is package p2p.
//
// The sender of a message is always the authenticated remote peer of its
// stream, never a field of the message. Malformed, unknown and oversized
// messages get an error reply and are counted; they never crash or block the
// node.
package message
