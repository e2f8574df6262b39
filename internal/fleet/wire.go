// Package fleet is the info protocol (DESIGN.md section 11) by which every
// node tells its peers about itself, and the view of the fleet a node builds
// from the answers: what GET /sd and the network view are made of.
//
// Trust: the remote end of an info stream is authenticated by libp2p, and an
// answer is recorded only under that peer's ID. Its claims are only about
// itself: its name, version, metrics URL and load, and its own edges (the
// peers it is connected to, with their latency). The addresses it gives for
// some of its peers are dial hints, never entries: a node enters the view
// only by answering the info protocol itself.
package fleet

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// ProtocolID is the info protocol: the asker writes one request frame
// (message.AppendRawFrame framing, JSON body), the answerer one answer frame,
// and the stream is closed.
const ProtocolID = protocol.ID("/p2p-ai-agents/info/1.0.0")

// Bounds of the protocol: an answer over MaxAnswerBytes, or with a field over
// its bound, is refused whole.
const (
	MaxAnswerBytes  = 96 << 10
	maxRequestBytes = 256
	MaxEdges        = 512
	MaxHints        = 8
	maxHintAddrs    = 2
	maxNameLen      = 256
	maxVersionLen   = 128
	maxStateLen     = 32
	maxCaps         = 64
	maxCapLen       = 64
	maxURLLen       = 512
	maxAddrLen      = 256
)

// ErrRefused marks an answer that was refused (oversized or malformed).
var ErrRefused = errors.New("info answer refused")

// request is what the asker sends: Edges asks for the full list of the
// answerer's peers (the network view), Hints for a small random sample of
// its peers with addresses (asked on the first query and then once per
// hintsEvery). Background refreshes ask for neither, so they cost a
// bounded number of bytes whatever the size of the mesh.
type request struct {
	Edges bool `json:"edges,omitempty"`
	Hints bool `json:"hints,omitempty"`
}

// Answer is what a node says about itself.
type Answer struct {
	Name         string   `json:"name"`
	Version      string   `json:"version"`
	State        string   `json:"state"`
	Capabilities []string `json:"capabilities"`
	// MetricsURL is where this node's metrics are scraped; empty when
	// metrics are disabled.
	MetricsURL        string  `json:"metrics_url"`
	CPUPercent        float64 `json:"cpu_percent"`
	MemoryBytes       float64 `json:"memory_bytes"`
	MessagesPerSecond float64 `json:"messages_per_second"`
	TasksRunning      int     `json:"tasks_running"`
	// Peers are its edges: present when the request asked for them.
	Peers []Edge `json:"peers,omitempty"`
	// Hints are a few of its agent peers with addresses, to be dialled and
	// asked directly; never taken as facts about those peers.
	Hints []Hint `json:"hints,omitempty"`
}

// Edge is one connection of the answering node.
type Edge struct {
	ID        string  `json:"id"`
	LatencyMs float64 `json:"latency_ms"`
}

// Hint is a peer of the answering node with addresses to dial it at.
type Hint struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// readAnswer reads and validates one answer frame.
func readAnswer(r io.Reader) (*Answer, error) {
	body, err := message.ReadRawFrame(bufio.NewReader(r), MaxAnswerBytes)
	if err != nil {
		return nil, err
	}
	return decodeAnswer(body)
}

// decodeAnswer parses and validates an answer body; errors wrap
// message.ErrMalformed.
func decodeAnswer(body []byte) (*Answer, error) {
	var a Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("%w: info answer: %w", message.ErrMalformed, err)
	}
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("%w: info answer: %w", message.ErrMalformed, err)
	}
	return &a, nil
}

func checkString(field, s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%s is %d bytes, over %d", field, len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not UTF-8", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s holds a control character", field)
		}
	}
	return nil
}

func finiteNonNegative(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("%s %v is not a finite number >= 0", field, v)
	}
	return nil
}

// validate checks every bound of an answer.
func (a *Answer) validate() error {
	for _, c := range []struct {
		field, s string
		max      int
	}{{"name", a.Name, maxNameLen}, {"version", a.Version, maxVersionLen}, {"state", a.State, maxStateLen}, {"metrics_url", a.MetricsURL, maxURLLen}} {
		if err := checkString(c.field, c.s, c.max); err != nil {
			return err
		}
	}
	if a.MetricsURL != "" {
		u, err := url.Parse(a.MetricsURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
			return fmt.Errorf("metrics_url %q is not an http(s) URL with a host and no credentials", a.MetricsURL)
		}
	}
	if len(a.Capabilities) > maxCaps {
		return fmt.Errorf("%d capabilities, over %d", len(a.Capabilities), maxCaps)
	}
	for _, c := range a.Capabilities {
		if err := checkString("capability", c, maxCapLen); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		field string
		v     float64
	}{{"cpu_percent", a.CPUPercent}, {"memory_bytes", a.MemoryBytes}, {"messages_per_second", a.MessagesPerSecond}, {"tasks_running", float64(a.TasksRunning)}} {
		if err := finiteNonNegative(f.field, f.v); err != nil {
			return err
		}
	}
	if len(a.Peers) > MaxEdges {
		return fmt.Errorf("%d edges, over %d", len(a.Peers), MaxEdges)
	}
	for _, e := range a.Peers {
		if _, err := peer.Decode(e.ID); err != nil {
			return fmt.Errorf("edge %q: %w", e.ID, err)
		}
		if err := finiteNonNegative("latency_ms", e.LatencyMs); err != nil {
			return err
		}
	}
	if len(a.Hints) > MaxHints {
		return fmt.Errorf("%d hints, over %d", len(a.Hints), MaxHints)
	}
	for _, h := range a.Hints {
		if _, err := peer.Decode(h.ID); err != nil {
			return fmt.Errorf("hint %q: %w", h.ID, err)
		}
		if len(h.Addrs) > maxHintAddrs {
			return fmt.Errorf("hint %s has %d addresses, over %d", h.ID, len(h.Addrs), maxHintAddrs)
		}
		for _, s := range h.Addrs {
			if len(s) > maxAddrLen {
				return fmt.Errorf("hint address of %d bytes, over %d", len(s), maxAddrLen)
			}
		}
	}
	return nil
}

// hintAddrInfo turns a validated hint into something to dial (addresses
// that do not parse, or that name a peer, are dropped: see p2p.DialHint).
func hintAddrInfo(h Hint) (peer.AddrInfo, bool) { return p2p.DialHint(h.ID, h.Addrs) }
