package message

import (
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrPeerUnreachable reports a peer that could not be dialled, has no
	// known address, or refused the message protocol.
	ErrPeerUnreachable = errors.New("peer unreachable")
	// ErrFrameTooLarge reports a frame whose declared length exceeds the
	// configured maximum; it is detected on the length prefix, before the
	// body is allocated.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrMalformed reports a frame or envelope that could not be decoded.
	ErrMalformed = errors.New("malformed message")
	// ErrServiceClosed is returned by Request after Close has been called.
	ErrServiceClosed = errors.New("message service closed")
	// ErrStreamClosed reports a request whose stream ended before its
	// response arrived.
	ErrStreamClosed = errors.New("message stream closed")
)

// Error codes carried in the payload of "error" messages.
const (
	CodeMalformed          = "malformed"
	CodeTooLarge           = "too_large"
	CodeUnknownType        = "unknown_type"
	CodeUnsupportedVersion = "unsupported_version"
	CodeHandler            = "handler_error"
	CodeInternal           = "internal"
	CodeTimeout            = "timeout"
	CodeUnavailable        = "unavailable"
)

// RemoteError is the Go form of an "error" response: the remote peer
// received the request and refused or failed it. A handler may also return
// a *RemoteError to choose the code and message sent to the peer.
type RemoteError struct {
	Code    string
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string {
	if e.Message == "" {
		return "remote error: " + e.Code
	}
	return fmt.Sprintf("remote error %s: %s", e.Code, e.Message)
}

// messageError is an inbound-message failure with the metric reason it is
// counted under and the code replied to the peer.
type messageError struct {
	reason string // one of ErrorReasons()
	code   string
	msg    string
	err    error
	stack  []byte // of a recovered panic
}

func (e *messageError) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	if e.msg != "" {
		return e.reason + ": " + e.msg
	}
	return e.reason
}

func (e *messageError) Unwrap() error { return e.err }

// Errors without a cause are allocated once so the failure path of common
// rejections does not allocate.
var (
	errUnknownType = &messageError{reason: ReasonUnknownType, code: CodeUnknownType, msg: "no handler for this message type"}
	errBadVersion  = &messageError{reason: ReasonMalformed, code: CodeUnsupportedVersion, msg: "envelope version must be 1"}
)

// noAddressError reports a peer this node has no connection to and no
// address for: nothing could be dialled.
func noAddressError(p peer.ID) error {
	return fmt.Errorf("%w: %s: no known address (give a full multiaddr)", ErrPeerUnreachable, p)
}

// lineError is an error whose message was flattened to one line; errors.Is
// and errors.As still see the original.
type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.err }

// singleLine returns err, wrapped so that its message is one line when it
// was not.
func singleLine(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if !strings.ContainsAny(msg, "\r\n") {
		return err
	}
	return &lineError{msg: oneline.Flatten(msg), err: err}
}
