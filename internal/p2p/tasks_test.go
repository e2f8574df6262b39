package p2p

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newEngine is a real task engine over a real local store, reaching peers
// through tr (nil: none).
func newEngine(t *testing.T, self peer.ID, tr task.Transport) *task.Engine {
	t.Helper()
	s, err := local.Open(filepath.Join(t.TempDir(), "store"), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	e := task.NewEngine(storage.Validate(s, 0), nil, tr, self, task.Options{Timeout: 10 * time.Second})
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

func TestPingerStats(t *testing.T) {
	a, b, c := newTestNode(t), newTestNode(t), newTestNode(t)
	connect(t, a, b)
	p := NewPinger(a.h, a.svc)
	ctx := testCtx(t)

	st, err := p.Ping(ctx, b.h.ID().String(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if st.Peer != b.h.ID() || len(st.RTTs) != 3 {
		t.Fatalf("stats = %+v, want 3 round trips to %s", st, b.h.ID())
	}
	var sum time.Duration
	for _, rtt := range st.RTTs {
		if rtt <= 0 {
			t.Fatalf("round trip %v in %v", rtt, st.RTTs)
		}
		sum += rtt
	}
	if st.Min != slices.Min(st.RTTs) || st.Max != slices.Max(st.RTTs) || st.Avg != sum/3 {
		t.Fatalf("min/avg/max = %v/%v/%v of %v", st.Min, st.Avg, st.Max, st.RTTs)
	}

	// A full multiaddr connects first.
	st, err = p.Ping(ctx, c.h.Addrs()[0], 1)
	if err != nil || st.Peer != c.h.ID() || len(st.RTTs) != 1 || st.Min != st.RTTs[0] || st.Avg != st.RTTs[0] || st.Max != st.RTTs[0] {
		t.Fatalf("ping by address = %+v, %v", st, err)
	}

	stranger := newTestNode(t).h.ID() // no address known to a
	for _, tc := range []struct {
		target string
		want   error
	}{
		{"not-a-peer", ErrBadPeer},
		{a.h.ID().String(), ErrBadPeer},
		{a.h.Addrs()[0], ErrBadPeer},
		{stranger.String(), message.ErrPeerUnreachable},
	} {
		if _, err := p.Ping(ctx, tc.target, 2); !errors.Is(err, tc.want) {
			t.Errorf("Ping(%s) = %v, want %v", tc.target, err, tc.want)
		}
	}
}

// TestTaskHandlerRefusesMalformedRequest: a payload that is no task
// request is answered with code bad_input and counted as malformed.
func TestTaskHandlerRefusesMalformedRequest(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	b.svc.Handle(message.TypeTaskRequest, TaskHandler(newEngine(t, b.h.ID(), nil)))
	connect(t, a, b)
	_, err := a.svc.Request(testCtx(t), b.h.ID(), message.TypeTaskRequest, json.RawMessage(`[1,2]`))
	var re *message.RemoteError
	if !errors.As(err, &re) || re.Code != task.CodeBadInput {
		t.Fatalf("malformed task request: %v, want a remote error %s", err, task.CodeBadInput)
	}
	// B counts the error after writing the reply, so a may see it first.
	p2ptest.Eventually(t, 5*time.Second, "errors{task.request, malformed} = 1", func() bool {
		return testutil.ToFloat64(b.m.Errors.WithLabelValues(message.TypeTaskRequest, "malformed")) == 1
	})
	if got := testutil.ToFloat64(b.m.Errors.WithLabelValues(message.TypeTaskRequest, "malformed")); got != 1 {
		t.Fatalf("errors{task.request, malformed} = %v, want 1", got)
	}

	// A well-formed request runs, and its record names the sender.
	resp, err := a.svc.Request(testCtx(t), b.h.ID(), message.TypeTaskRequest,
		task.Request{ID: "0123456789abcdef0123456789abcdef", Type: task.TypeChunk, Input: json.RawMessage(`{"text":"a b c"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var rec task.Record
	if err := resp.DecodePayload(&rec); err != nil {
		t.Fatal(err)
	}
	if resp.Type != message.TypeTaskResult || rec.State != task.StateSucceeded || rec.Origin != a.h.ID().String() || rec.Peer != b.h.ID().String() {
		t.Fatalf("task.result %s: %+v", resp.Type, rec)
	}
}

// TestTaskTransportTranslatesRefusals: the refusals of the peer's message
// layer become what the engine branches on.
func TestTaskTransportTranslatesRefusals(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	tr := NewTaskTransport(a.h, a.svc)
	req := task.Request{ID: "id1", Type: task.TypeChunk, Input: json.RawMessage(`{"text":"x"}`)}
	ctx := testCtx(t)

	b.svc.Handle(message.TypeTaskRequest, func(context.Context, peer.ID, *message.Envelope) (*message.Envelope, error) {
		return nil, &message.RemoteError{Code: task.CodeBadInput, Message: "no"}
	})
	if _, err := tr.Call(ctx, b.h.ID(), req); !errors.Is(err, task.ErrBadInput) {
		t.Errorf("peer refusing bad input: %v, want %v", err, task.ErrBadInput)
	}

	b.svc.Handle(message.TypeTaskRequest, nil) // b takes no task requests
	rec, err := tr.Call(ctx, b.h.ID(), req)
	if err != nil || rec.State != task.StateFailed || rec.Code != task.CodeUnknownType || rec.ID != "id1" || rec.Peer != b.h.ID().String() {
		t.Errorf("peer without a task handler: %+v, %v; want a failed record with code %s", rec, err, task.CodeUnknownType)
	}

	stranger := newTestNode(t).h.ID()
	if _, err := tr.Call(ctx, stranger, req); !errors.Is(err, task.ErrNoPeer) {
		t.Errorf("unreachable peer: %v, want %v", err, task.ErrNoPeer)
	}
}

// TestRemoteBadInputIsNotRetried: a task the peer refuses as bad input
// fails with code bad_input after one attempt.
func TestRemoteBadInputIsNotRetried(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	var calls atomic.Int32
	b.svc.Handle(message.TypeTaskRequest, func(context.Context, peer.ID, *message.Envelope) (*message.Envelope, error) {
		calls.Add(1)
		return nil, &message.RemoteError{Code: task.CodeBadInput, Message: "input refused"}
	})
	e := newEngine(t, a.h.ID(), NewTaskTransport(a.h, a.svc))
	ctx := testCtx(t)
	sub, err := e.Submit(ctx, task.SubmitRequest{Type: task.TypeChunk, Input: json.RawMessage(`{"text":"x"}`), Peer: b.h.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var rec task.Record
	p2ptest.Eventually(t, 20*time.Second, "the task to end", func() bool {
		rec, err = e.Get(ctx, sub.ID)
		return err == nil && rec.State.Final()
	})
	if rec.State != task.StateFailed || rec.Code != task.CodeBadInput || rec.Attempts != 1 || calls.Load() != 1 {
		t.Fatalf("record %+v after %d calls; want failed, code %s, 1 attempt", rec, calls.Load(), task.CodeBadInput)
	}
}
