package task

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptest "github.com/libp2p/go-libp2p/core/test"
)

// dialErr has the shape of a go-libp2p dial error: one failed address per line.
const dialErr = "failed to dial 12D3KooWGhost: all dials failed\n" +
	"  * [/ip4/127.0.0.1/tcp/1] dial tcp 127.0.0.1:1: connect: connection refused\n" +
	"  * [/ip4/127.0.0.1/udp/1/quic-v1] timeout: no recent network activity"

// TestRecordErrorsAreOneLine checks every place a record's error comes
// from: failed remote attempts (joined), a local executor, and the
// per-peer failures of a fanned-out search.
func TestRecordErrorsAreOneLine(t *testing.T) {
	const typ = "test.multiline"
	multi := testExecutor{typ: typ, run: func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return nil, errors.New("line one\n  line two")
	}}
	gone := libp2ptest.RandPeerIDFatal(t)
	tr := &fakeTransport{
		offer: map[string][]peer.ID{TypeChunk: {gone}, TypeSearch: {gone}},
		handle: func(context.Context, peer.ID, Request) (Record, error) {
			return Record{}, errors.New(dialErr)
		},
	}
	n := newNode(t, tr, Options{Executors: []Executor{multi}})

	check := func(what, msg string, want ...string) {
		t.Helper()
		if strings.ContainsAny(msg, "\r\n") {
			t.Errorf("%s: error spans lines: %q", what, msg)
		}
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: error %q lacks %q", what, msg, w)
			}
		}
	}

	// Two remote attempts on the requested peer, both failing to dial.
	rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput, Peer: gone})
	if rec.State != StateFailed || rec.Attempts != 2 || rec.Code != CodeUnavailable {
		t.Fatalf("remote: %+v", rec)
	}
	check("remote", rec.Error, "attempt 1 on peer", "attempt 2 on peer", "[/ip4/127.0.0.1/tcp/1]", "[/ip4/127.0.0.1/udp/1/quic-v1]")
	if stored, err := n.e.Get(testCtx(t), rec.ID); err != nil || stored.Error != rec.Error {
		t.Fatalf("stored record %+v, %v", stored, err)
	}

	// A remote attempt, then the local fallback, whose executor fails.
	tr.offer[typ] = []peer.ID{gone}
	rec = n.submitWait(t, SubmitRequest{Type: typ, Input: json.RawMessage(`{}`)})
	if rec.State != StateFailed || rec.Peer != n.id.String() {
		t.Fatalf("local: %+v", rec)
	}
	check("local", rec.Error, "[/ip4/127.0.0.1/tcp/1]", "attempt 2 locally: line one; line two")

	// Executed for a remote peer: the record it sends back.
	rec = n.e.Execute(testCtx(t), Request{ID: newID(), Type: typ, Input: json.RawMessage(`{}`)})
	check("execute", rec.Error, "line one; line two")

	// A fanned-out search: the unreachable peer is listed with a one-line error.
	rec = n.submitWait(t, SubmitRequest{Type: TypeSearch, Input: json.RawMessage(`{"collection":"kb","query":"x"}`)})
	if rec.State != StateSucceeded {
		t.Fatalf("search: %+v", rec)
	}
	var out SearchOutput
	if err := json.Unmarshal(rec.Result, &out); err != nil || len(out.Failed) != 1 {
		t.Fatalf("search result %s: %v", rec.Result, err)
	}
	check("search", out.Failed[0].Error, "[/ip4/127.0.0.1/tcp/1]")
}
