// Package api is the node's control API (DESIGN.md section 6): an HTTP/JSON
// server on api.listen that the CLI talks to, and the client the CLI uses.
package api

import (
	"encoding/json"
	"time"
)

// Status is the answer of GET /api/v1/status.
type Status struct {
	PeerID         string    `json:"peer_id"`
	Name           string    `json:"name"`
	State          string    `json:"state"`
	Version        string    `json:"version"`
	StartedAt      time.Time `json:"started_at"`
	UptimeSeconds  float64   `json:"uptime_seconds"`
	Uptime         string    `json:"uptime"`
	Addresses      []string  `json:"addresses"`
	StorageBackend string    `json:"storage_backend"`
	Peers          int       `json:"peers"`
	MetricsURL     string    `json:"metrics_url,omitempty"`
	APIURL         string    `json:"api_url,omitempty"`
}

// Peer is one connected peer in GET /api/v1/peers.
type Peer struct {
	ID           string   `json:"id"`
	Address      string   `json:"address"`
	Direction    string   `json:"direction"`
	LatencyMs    float64  `json:"latency_ms"`
	AgentVersion string   `json:"agent_version,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// PingRequest is the body of POST /api/v1/ping.
type PingRequest struct {
	Peer  string `json:"peer"`
	Count int    `json:"count"`
}

// PingResult is the answer of POST /api/v1/ping; round trips in milliseconds.
type PingResult struct {
	Peer   string    `json:"peer"`
	RTTsMs []float64 `json:"rtts_ms"`
	MinMs  float64   `json:"min_ms"`
	AvgMs  float64   `json:"avg_ms"`
	MaxMs  float64   `json:"max_ms"`
}

// KVItem is one entry of GET /api/v1/kv?prefix=.
type KVItem struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// DefaultListLimit is the page size of GET /api/v1/kv when ?limit= is absent.
const DefaultListLimit = 1000

// KVList is one page of GET /api/v1/kv?prefix=&limit=&after=: at most limit
// entries in ascending key order. Next, when set, is the after= of the
// following page; it is empty on the last page.
type KVList struct {
	Prefix string   `json:"prefix"`
	Count  int      `json:"count"`
	Next   string   `json:"next,omitempty"`
	Items  []KVItem `json:"items"`
}

// KVPut is the answer of PUT /api/v1/kv/{key}.
type KVPut struct {
	Bytes       int    `json:"bytes"`
	Consistency string `json:"consistency"`
	Key         string `json:"key"`
}

// KVDeleted is the answer of DELETE /api/v1/kv/{key}.
type KVDeleted struct {
	Deleted bool   `json:"deleted"`
	Key     string `json:"key"`
}

// TaskRequest is the body of POST /api/v1/tasks; the answer is the
// task.Record of the queued task (202), and GET /api/v1/tasks/{id} answers
// the task.Record of the task. Peer is a peer ID or a full multiaddr; an
// absent Input is the empty object.
type TaskRequest struct {
	Type  string          `json:"type"`
	Input json.RawMessage `json:"input"`
	Peer  string          `json:"peer,omitempty"`
	// Trace forces the task to be traced whatever tracing.sample_ratio says.
	Trace bool `json:"trace,omitempty"`
}

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}
