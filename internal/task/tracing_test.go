package task

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

func newTracer(t *testing.T, name string, ratio float64) *tracing.Tracing {
	t.Helper()
	tr, err := tracing.New(tracing.Config{SampleRatio: ratio, Node: name, PeerID: name})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// spanTree returns the spans of trace id in store as "name[attr]<-parent
// name", sorted.
func spanTree(t *testing.T, id string, stores ...*tracing.Store) []string {
	t.Helper()
	tid, err := tracing.ParseTraceID(id)
	if err != nil {
		t.Fatal(err)
	}
	var all []tracing.SpanRecord
	for _, s := range stores {
		spans, _ := s.Spans(tid)
		all = append(all, spans...)
	}
	names := map[string]string{}
	for _, s := range all {
		names[s.SpanID] = s.Node + ":" + s.Name
	}
	var out []string
	for _, s := range all {
		label := s.Node + ":" + s.Name
		if v := s.Attributes["task.type"]; v != "" {
			label += "[" + v + "]"
		}
		if s.Error != "" {
			label += "!"
		}
		out = append(out, label+"<-"+names[s.ParentID])
	}
	slices.Sort(out)
	return out
}

// TestTaskTraced submits a forced-trace task on A that runs on B through a
// transport that carries the trace context the way the wire does (the
// traceparent string): one trace, B's spans children of A's dispatch span.
func TestTaskTraced(t *testing.T) {
	ta, tb := newTracer(t, "A", 0), newTracer(t, "B", 0)
	b := newNode(t, nil, Options{Tracing: tb})
	tr := &fakeTransport{offer: map[string][]peer.ID{TypeChunk: {b.id}}}
	tr.handle = func(ctx context.Context, _ peer.ID, req Request) (Record, error) {
		wire := tracing.Traceparent(ctx)
		return b.e.Execute(tracing.WithTraceparent(context.Background(), wire), req), nil
	}
	a := newNode(t, tr, Options{Tracing: ta})

	rec := a.submitWait(t, SubmitRequest{Type: TypeChunk, Input: mustJSON(t, map[string]any{"text": "one two three"}), Trace: true})
	if rec.State != StateSucceeded || len(rec.TraceID) != 32 {
		t.Fatalf("record %+v, want succeeded with a trace id", rec)
	}
	// task.submit ends just after the final record is stored.
	var got []string
	want := []string{
		"A:task.dispatch<-A:task.submit",
		"A:task.submit[text.chunk]<-",
		"B:task.execute[text.chunk]<-A:task.dispatch",
		"B:task.queue<-A:task.dispatch",
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got = spanTree(t, rec.TraceID, ta.Store(), tb.Store())
		if slices.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("spans\n%v\nwant\n%v", got, want)
	}

	// Not forced, ratio 0: no trace, no trace id, nothing stored.
	before, _ := ta.Store().Len()
	rec = a.submitWait(t, SubmitRequest{Type: TypeChunk, Input: mustJSON(t, map[string]any{"text": "x"})})
	if after, _ := ta.Store().Len(); rec.TraceID != "" || after != before {
		t.Fatalf("unsampled task: trace id %q, traces %d -> %d", rec.TraceID, before, after)
	}
}

// TestTaskTracedFailure: a task that fails locally ends its spans failed.
func TestTaskTracedFailure(t *testing.T) {
	ta := newTracer(t, "A", 1)
	a := newNode(t, nil, Options{Tracing: ta})
	rec := a.submitWait(t, SubmitRequest{Type: TypeChunk, Input: mustJSON(t, map[string]any{"text": "x", "size": -1})})
	if rec.State != StateFailed || rec.TraceID == "" {
		t.Fatalf("record %+v, want failed and traced (ratio 1)", rec)
	}
	want := fmt.Sprint([]string{"A:task.execute[text.chunk]!<-A:task.submit", "A:task.queue<-A:task.submit", "A:task.submit[text.chunk]!<-"})
	deadline := time.Now().Add(5 * time.Second)
	for fmt.Sprint(spanTree(t, rec.TraceID, ta.Store())) != want {
		if time.Now().After(deadline) {
			t.Fatalf("spans %v, want %s", spanTree(t, rec.TraceID, ta.Store()), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkTracedTask is TestTaskTraced's path (A dispatches text.chunk to
// B through a transport that carries the traceparent) timed untraced and
// traced: what the spans of one remote task cost, without the network.
func BenchmarkTracedTask(b *testing.B) {
	for _, traced := range []bool{false, true} {
		b.Run(fmt.Sprintf("traced=%v", traced), func(b *testing.B) {
			ta, err := tracing.New(tracing.Config{Node: "A", PeerID: "A"})
			if err != nil {
				b.Fatal(err)
			}
			tb, _ := tracing.New(tracing.Config{Node: "B", PeerID: "B"})
			bs := openStore(b)
			be := NewEngine(bs, nil, nil, "B", Options{Tracing: tb})
			defer be.Close(context.Background())
			tr := &fakeTransport{offer: map[string][]peer.ID{TypeChunk: {"B"}}}
			tr.handle = func(ctx context.Context, _ peer.ID, req Request) (Record, error) {
				return be.Execute(tracing.WithTraceparent(context.Background(), tracing.Traceparent(ctx)), req), nil
			}
			ae := NewEngine(openStore(b), nil, tr, "A", Options{Tracing: ta})
			defer ae.Close(context.Background())
			input := json.RawMessage(`{"text":"one two three four five","size":2,"overlap":0}`)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				rec, err := ae.Submit(ctx, SubmitRequest{Type: TypeChunk, Input: input, Peer: "B", Trace: traced})
				if err != nil {
					b.Fatal(err)
				}
				for !rec.State.Final() {
					time.Sleep(20 * time.Microsecond)
					if rec, err = ae.Get(ctx, rec.ID); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
