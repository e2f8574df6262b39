package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptest "github.com/libp2p/go-libp2p/core/test"
)

// summer is a Merger of our own: each node answers {"n":1}, the merge adds
// them up. Its input must be {"ok":true}.
type summer struct {
	mu    sync.Mutex
	seen  [][]Part // the parts of every Merge
	panic bool     // Merge panics
}

// merges returns the parts of every Merge so far.
func (s *summer) merges() [][]Part {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

func (*summer) Type() string { return "test.sum" }

func (s *summer) CheckInput(input json.RawMessage) error {
	var in struct{ OK bool }
	if err := json.Unmarshal(input, &in); err != nil || !in.OK {
		return fmt.Errorf("%w: ok must be true", ErrBadInput)
	}
	return nil
}

func (s *summer) Execute(_ context.Context, input json.RawMessage) (json.RawMessage, error) {
	if err := s.CheckInput(input); err != nil {
		return nil, err
	}
	return json.RawMessage(`{"n":1}`), nil
}

func (s *summer) Merge(_ context.Context, _ json.RawMessage, parts []Part) (json.RawMessage, string, error) {
	s.mu.Lock()
	s.seen = append(s.seen, parts)
	panicking := s.panic
	s.mu.Unlock()
	if panicking {
		panic("boom")
	}
	sum := 0
	for _, p := range parts {
		var out struct{ N int }
		if p.Err == nil && json.Unmarshal(p.Result, &out) == nil {
			sum += out.N
		}
	}
	return json.RawMessage(fmt.Sprintf(`{"sum":%d}`, sum)), "", nil
}

// The engine fans out any Merger's tasks, not only index.search, and
// hands the merge every node's part in order: the peers', then its own.
func TestFanOutMerger(t *testing.T) {
	a, b := libp2ptest.RandPeerIDFatal(t), libp2ptest.RandPeerIDFatal(t)
	tr := &fakeTransport{
		offer: map[string][]peer.ID{"test.sum": {a, b}},
		handle: func(_ context.Context, p peer.ID, req Request) (Record, error) {
			if p == b {
				return Record{}, errors.New("stream reset")
			}
			return Record{ID: req.ID, Type: req.Type, State: StateSucceeded, Result: json.RawMessage(`{"n":10}`)}, nil
		},
	}
	s := &summer{}
	n := newNode(t, tr, Options{Executors: []Executor{s}})
	rec := n.submitWait(t, SubmitRequest{Type: "test.sum", Input: json.RawMessage(`{"ok":true}`)})
	if rec.State != StateSucceeded || string(rec.Result) != `{"sum":11}` || rec.Peer != n.id.String() || rec.Attempts != 1 {
		t.Fatalf("record %+v", rec)
	}
	if len(s.merges()) != 1 {
		t.Fatalf("%d merges, want 1", len(s.merges()))
	}
	parts := s.merges()[0]
	if len(parts) != 3 || parts[0].Peer != a || string(parts[0].Result) != `{"n":10}` || parts[0].Err != nil ||
		parts[1].Peer != b || parts[1].Code != CodeUnavailable || parts[1].Err == nil || parts[1].Err.Error() != "stream reset" ||
		parts[2].Peer != n.id || string(parts[2].Result) != `{"n":1}` || parts[2].Err != nil {
		t.Fatalf("parts %+v", parts)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"unknown/succeeded": 1})

	// An input the merger rejects is sent nowhere and fails here.
	calls := len(tr.calledPeers())
	rec = n.submitWait(t, SubmitRequest{Type: "test.sum", Input: json.RawMessage(`{"ok":false}`)})
	if rec.State != StateFailed || rec.Code != CodeBadInput || rec.Error != "bad task input: ok must be true" {
		t.Fatalf("bad input: %+v", rec)
	}
	if got := len(tr.calledPeers()); got != calls || len(s.merges()) != 1 {
		t.Fatalf("bad input reached %d peers and %d merges", got-calls, len(s.merges())-1)
	}

	// A peer named: no fan-out.
	rec = n.submitWait(t, SubmitRequest{Type: "test.sum", Input: json.RawMessage(`{"ok":true}`), Peer: a})
	if rec.State != StateSucceeded || string(rec.Result) != `{"n":10}` || rec.Peer != a.String() || len(s.merges()) != 1 {
		t.Fatalf("on a named peer: %+v", rec)
	}

	// A panicking merge fails the task, and the engine keeps working.
	s.mu.Lock()
	s.panic = true
	s.mu.Unlock()
	rec = n.submitWait(t, SubmitRequest{Type: "test.sum", Input: json.RawMessage(`{"ok":true}`)})
	if rec.State != StateFailed || rec.Code != CodePanic || rec.Error != "merger panicked: boom" || rec.Result != nil {
		t.Fatalf("panicking merge: %+v", rec)
	}
	if rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput}); rec.State != StateSucceeded {
		t.Fatalf("after a panic: %+v", rec)
	}
}
