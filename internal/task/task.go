// Package task holds the node's AI work (DESIGN.md section 9): the executors
// (text.chunk, text.embed, index.add, index.search) behind one small
// interface, and the Engine that accepts submissions, dispatches them to a
// peer or runs them locally and persists every task record in the Store.
//
// The files follow the concerns: task.go the types and interfaces,
// engine.go the engine's lifecycle and records, dispatch.go the choice of
// peer, retries and the fan-out of Merger tasks, execute.go local
// execution (admission, limits, panics), instrument.go the task metrics,
// recorded by the Instrument decorator the engine puts around every
// executor it registers; chunk.go, embed.go, index.go and search.go the
// executors, search.go also the merge of a fanned-out index.search.
package task

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// Task types offered by every node.
const (
	TypeChunk  = "text.chunk"
	TypeEmbed  = "text.embed"
	TypeAdd    = "index.add"
	TypeSearch = "index.search"
)

// Sentinel errors, wrapped with %w and tested with errors.Is.
var (
	// ErrUnknownType means no executor is registered for the task type.
	ErrUnknownType = errors.New("unknown task type")
	// ErrBadInput means the task input is not acceptable (the API maps it to 400).
	ErrBadInput = errors.New("bad task input")
	// ErrNotFound means no task record exists for the id. It wraps
	// storage.ErrNotFound, so either sentinel matches.
	ErrNotFound = fmt.Errorf("task %w", storage.ErrNotFound)
	// ErrClosed means the engine has stopped accepting tasks.
	ErrClosed = errors.New("task engine closed")
	// ErrNoPeer means no peer could take the task (none given, none connected
	// or none reachable). Transports wrap it when asked to call a peer that
	// is not connected.
	ErrNoPeer = errors.New("no peer available")
)

// Executor runs one task type. Execute must honour ctx cancellation (the
// engine calls it directly and waits for it to return) and wrap input
// validation errors with ErrBadInput. It returns a JSON value.
type Executor interface {
	Type() string
	Execute(ctx context.Context, input json.RawMessage) (json.RawMessage, error)
}

// Merger is implemented by executors whose tasks are spread over the mesh,
// each node answering from what it holds (index.search). A task of such a
// type submitted without a peer runs at once on this node and on every
// connected peer offering the type, and Merge makes one result of their
// answers. Without peers offering the type it runs like any other task.
type Merger interface {
	Executor
	// CheckInput validates the input before any peer is asked; an error
	// (wrapping ErrBadInput) keeps the task here, where it fails.
	CheckInput(input json.RawMessage) error
	// Merge combines the parts, the peers' answers in the order they were
	// asked and then this node's, into the task's result; or fails the task
	// with a failure code (a Code constant) and an error.
	Merge(ctx context.Context, input json.RawMessage, parts []Part) (result json.RawMessage, code string, err error)
}

// Part is one node's answer to a fanned-out task: its Result, or the
// failure Code and Err of its attempt.
type Part struct {
	Peer   peer.ID
	Result json.RawMessage
	Code   string
	Err    error
}

// Transport carries task requests to other peers; the node adapts its p2p
// message service to it.
type Transport interface {
	// Call sends a task request to peer p and returns the remote task record.
	// An error means no record came back (unreachable, stream error, or the
	// ctx deadline: timeout); an error wrapping ErrBadInput is not retried.
	// Call must honour ctx: the engine waits for it to return.
	Call(ctx context.Context, p peer.ID, req Request) (Record, error)
	// PeersOffering lists connected peers that offer the task type (excluding self).
	PeersOffering(typ string) []peer.ID
}

// Request is the payload of a task.request message: what a submitting node
// asks an executing node to run.
type Request struct {
	// ID is the submitter's task id, for correlation in logs and records.
	ID   string `json:"id,omitempty"`
	Type string `json:"type"`
	// Input is the task input, a JSON object.
	Input json.RawMessage `json:"input"`
	// TimeoutMS is how long the submitter will wait; the executing node stops
	// the task after it (outcome cancelled). Zero means no limit of its own.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// State is where a task is in its life.
type State string

// Task states. Succeeded and Failed are final.
const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
)

// Final reports whether no further state change will happen.
func (s State) Final() bool { return s == StateSucceeded || s == StateFailed }

// Failure codes in Record.Code: why a task failed, for callers that branch
// on it (and the wire error code the node may use).
const (
	CodeBadInput    = "bad_input"    // the input was rejected by the executor
	CodeUnknownType = "unknown_type" // the executing node has no such executor
	CodePanic       = "panic"        // the executor panicked (recovered)
	CodeTimeout     = "timeout"      // the attempt exceeded Options.Timeout
	CodeCancelled   = "cancelled"    // the submitter gave up
	CodeClosed      = "closed"       // the executing node was stopping
	CodeUnavailable = "unavailable"  // no peer answered (unreachable, stream error)
	CodeInterrupted = "interrupted"  // the submitting node stopped before the task ended
	CodeError       = "error"        // any other executor error (storage, ...)
)

// Record is a task as stored under tasks/<id>, returned by the control API
// and carried in task.result messages.
type Record struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	State      State     `json:"state"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Peer is the peer ID of the node executing (or that executed) the task.
	Peer string `json:"peer,omitempty"`
	// Origin is the peer ID of the node the task was submitted to.
	Origin   string          `json:"origin,omitempty"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	// Code classifies a failure; one of the Code constants.
	Code string `json:"code,omitempty"`
	// TraceID is the id of the trace that followed the task, when it was
	// sampled (DESIGN.md section 10).
	TraceID string `json:"trace_id,omitempty"`
}

// decodeInput decodes a JSON object into v, rejecting unknown fields and
// trailing data; every failure wraps ErrBadInput.
func decodeInput(input json.RawMessage, v any) error {
	if !isObject(input) {
		return fmt.Errorf("%w: input must be a JSON object", ErrBadInput)
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the input object", ErrBadInput)
	}
	return nil
}

// isObject reports whether b is one valid JSON object.
func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{' && json.Valid(b)
}
