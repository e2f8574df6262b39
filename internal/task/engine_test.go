package task

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptest "github.com/libp2p/go-libp2p/core/test"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
)

// node is an engine with its own store and metrics.
type node struct {
	id    peer.ID
	store storage.Store
	tm    taskMetrics
	e     *Engine
}

func newNode(t *testing.T, tr Transport, opts Options) *node {
	t.Helper()
	n := &node{id: libp2ptest.RandPeerIDFatal(t), store: openStore(t), tm: newTaskMetrics()}
	n.e = NewEngine(n.store, n.tm.m, tr, n.id, opts)
	t.Cleanup(func() { _ = n.e.Close(context.Background()) })
	return n
}

func (n *node) submitWait(t *testing.T, req SubmitRequest) Record {
	t.Helper()
	ctx := testCtx(t)
	rec, err := n.e.Submit(ctx, req)
	if err != nil {
		t.Fatalf("submit %s: %v", req.Type, err)
	}
	if rec.State != StateQueued || !validID(rec.ID) || rec.Origin != n.id.String() || rec.Attempts != 0 {
		t.Fatalf("submit returned %+v, want a queued record", rec)
	}
	return awaitFinal(t, n.e, rec.ID)
}

func wantTotals(t *testing.T, who string, tm taskMetrics, want map[string]float64) {
	t.Helper()
	if got := tm.totals(t); !maps.Equal(got, want) {
		t.Fatalf("%s tasks_total = %v, want %v", who, got, want)
	}
}

// testExecutor is an executor of our own for engine tests.
type testExecutor struct {
	typ string
	run func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)
}

func (x testExecutor) Type() string { return x.typ }
func (x testExecutor) Execute(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
	return x.run(ctx, in)
}

var chunkInput = json.RawMessage(`{"text":"one two three four five","size":2,"overlap":1}`)

func chunkResult(t *testing.T) json.RawMessage {
	out, err := ChunkExecutor{}.Execute(context.Background(), chunkInput)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEngineLocalSubmitWait(t *testing.T) {
	n := newNode(t, nil, Options{})
	if got := n.e.Types(); !slices.Equal(got, []string{TypeAdd, TypeSearch, TypeChunk, TypeEmbed}) {
		t.Fatalf("Types() = %q", got)
	}
	rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput})
	if rec.State != StateSucceeded || string(rec.Result) != string(chunkResult(t)) || rec.Peer != n.id.String() ||
		rec.Attempts != 1 || rec.Error != "" || rec.Code != "" || rec.Type != TypeChunk {
		t.Fatalf("record %+v", rec)
	}
	if rec.StartedAt.Before(rec.CreatedAt) || rec.FinishedAt.Before(rec.StartedAt) {
		t.Fatalf("times out of order: created %v started %v finished %v", rec.CreatedAt, rec.StartedAt, rec.FinishedAt)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"text.chunk/succeeded": 1})
	if count, sum := n.tm.durationCount(t, TypeChunk); count != 1 || sum <= 0 {
		t.Fatalf("task_duration_seconds{text.chunk} count %d sum %v, want 1 and > 0", count, sum)
	}
	if count, _ := n.tm.durationCount(t, TypeEmbed); count != 0 {
		t.Fatalf("task_duration_seconds{text.embed} count %d, want 0", count)
	}
	stored, err := n.e.Get(testCtx(t), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, stored), mustJSON(t, rec); string(a) != string(b) {
		t.Fatalf("stored record %s\nwaited record %s", a, b)
	}
}

func TestEngineBadInputFailsAtExecution(t *testing.T) {
	n := newNode(t, nil, Options{})
	rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: json.RawMessage(`{"text":5}`)})
	if rec.State != StateFailed || rec.Code != CodeBadInput || !strings.HasPrefix(rec.Error, "bad task input: ") || rec.Result != nil {
		t.Fatalf("record %+v", rec)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"text.chunk/failed": 1})
	if count, _ := n.tm.durationCount(t, TypeChunk); count != 1 {
		t.Fatalf("duration count %d, want 1", count)
	}
}

func TestEngineSubmitRejects(t *testing.T) {
	n := newNode(t, nil, Options{})
	ctx := testCtx(t)
	for _, tc := range []struct {
		req  SubmitRequest
		want error
	}{
		{SubmitRequest{Type: "text.summarise", Input: json.RawMessage(`{}`)}, ErrUnknownType},
		{SubmitRequest{Type: TypeChunk, Input: json.RawMessage(`[]`)}, ErrBadInput},
		{SubmitRequest{Type: TypeChunk, Input: json.RawMessage(`"text"`)}, ErrBadInput},
		{SubmitRequest{Type: TypeChunk, Input: json.RawMessage(`{"text":`)}, ErrBadInput},
		{SubmitRequest{Type: TypeChunk}, ErrBadInput},
		{SubmitRequest{Type: TypeChunk, Input: chunkInput, Peer: libp2ptest.RandPeerIDFatal(t)}, ErrNoPeer},
	} {
		if _, err := n.e.Submit(ctx, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("Submit(%s, %s): err = %v, want %v", tc.req.Type, tc.req.Input, err, tc.want)
		}
	}
	if err := n.e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.e.Submit(ctx, SubmitRequest{Type: TypeChunk, Input: chunkInput}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: err = %v, want ErrClosed", err)
	}
	wantTotals(t, "local", n.tm, map[string]float64{})
}

func TestEnginePanicRecovered(t *testing.T) {
	boom := testExecutor{typ: "test.panic", run: func(context.Context, json.RawMessage) (json.RawMessage, error) { panic("boom") }}
	n := newNode(t, nil, Options{Executors: []Executor{boom}})
	if !slices.Contains(n.e.Types(), "test.panic") {
		t.Fatalf("Types() = %q", n.e.Types())
	}
	rec := n.submitWait(t, SubmitRequest{Type: "test.panic", Input: json.RawMessage(`{}`)})
	if rec.State != StateFailed || rec.Code != CodePanic || rec.Error != "executor panicked: boom" {
		t.Fatalf("record %+v", rec)
	}
	// The engine keeps working.
	if rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput}); rec.State != StateSucceeded {
		t.Fatalf("after a panic: %+v", rec)
	}
	if rec := n.e.Execute(testCtx(t), Request{Type: "test.panic", Input: json.RawMessage(`{}`)}); rec.Code != CodePanic {
		t.Fatalf("Execute of a panicking executor: %+v", rec)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"unknown/failed": 2, "text.chunk/succeeded": 1})
}

// blocking returns an executor that signals started and then waits for
// release or ctx.
func blocking(typ string, started chan<- struct{}, release <-chan struct{}) testExecutor {
	return testExecutor{typ: typ, run: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		if started != nil {
			started <- struct{}{}
		}
		select {
		case <-release:
			return json.RawMessage(`{"released":true}`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
}

func TestEngineExecuteForRemote(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	n := newNode(t, nil, Options{Executors: []Executor{
		blocking("test.block", started, release),
	}})
	ctx := testCtx(t)
	id := newID()
	rec := n.e.Execute(ctx, Request{ID: id, Type: TypeChunk, Input: chunkInput})
	if rec.ID != id || rec.State != StateSucceeded || rec.Peer != n.id.String() || string(rec.Result) != string(chunkResult(t)) || rec.Attempts != 1 {
		t.Fatalf("Execute: %+v", rec)
	}
	if rec := n.e.Execute(ctx, Request{Type: "nope", Input: json.RawMessage(`{}`)}); rec.State != StateFailed || rec.Code != CodeUnknownType || !validID(rec.ID) {
		t.Fatalf("Execute of an unknown type: %+v", rec)
	}
	if rec := n.e.Execute(ctx, Request{Type: TypeEmbed, Input: json.RawMessage(`not json`)}); rec.Code != CodeBadInput {
		t.Fatalf("Execute with non-object input: %+v", rec)
	}
	// The submitter gives up: the executor is stopped, outcome cancelled.
	for _, typ := range []string{"test.block", "test.block"} {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan Record, 1)
		go func() { done <- n.e.Execute(cctx, Request{Type: typ, Input: json.RawMessage(`{}`)}) }()
		<-started
		cancel()
		if rec := <-done; rec.State != StateFailed || rec.Code != CodeCancelled || rec.Error != "cancelled: context canceled" {
			t.Fatalf("%s after cancel: %+v", typ, rec)
		}
	}
	// The submitter's deadline travels in the request.
	if rec := n.e.Execute(ctx, Request{Type: "test.block", Input: json.RawMessage(`{}`), TimeoutMS: 20}); rec.Code != CodeCancelled {
		t.Fatalf("Execute past timeout_ms: %+v", rec)
	}
	<-started
	wantTotals(t, "executing node", n.tm, map[string]float64{
		"text.chunk/succeeded": 1, "unknown/failed": 1, "text.embed/failed": 1, "unknown/cancelled": 3,
	})
}

func TestEngineRecordsSurviveRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	self := libp2ptest.RandPeerIDFatal(t)
	ctx := testCtx(t)

	raw, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e1 := NewEngine(storage.Validate(raw, 0), nil, nil, self, Options{})
	rec, err := e1.Submit(ctx, SubmitRequest{Type: TypeAdd, Input: json.RawMessage(`{"collection":"notes","id":"n1","text":"Pebble keeps the records on disk."}`)})
	if err != nil {
		t.Fatal(err)
	}
	final := awaitFinal(t, e1, rec.ID)
	if final.State != StateSucceeded {
		t.Fatalf("final: %+v", final)
	}
	if err := e1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	// A new engine on the reopened store.
	n2 := &node{id: self, store: openStoreAt(t, dir), tm: newTaskMetrics()}
	n2.e = NewEngine(n2.store, n2.tm.m, nil, self, Options{})
	got, err := n2.e.Get(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, got), mustJSON(t, final); string(a) != string(b) {
		t.Fatalf("after restart %s\nbefore %s", a, b)
	}
	// So do the index data.
	res := n2.submitWait(t, SubmitRequest{Type: TypeSearch, Input: json.RawMessage(`{"collection":"notes","query":"records on disk"}`)})
	var out SearchOutput
	if err := json.Unmarshal(res.Result, &out); err != nil || len(out.Results) != 1 || out.Results[0].ID != "n1" {
		t.Fatalf("search after restart: %s (%v)", res.Result, err)
	}
}

func TestEngineGetNotFound(t *testing.T) {
	n := newNode(t, nil, Options{})
	for _, id := range []string{newID(), "", "../../etc", strings.Repeat("z", 32)} {
		_, err := n.e.Get(testCtx(t), id)
		if !errors.Is(err, ErrNotFound) || !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Get(%q): err = %v, want ErrNotFound", id, err)
		}
	}
}

func putRecord(t *testing.T, s storage.Store, rec Record) {
	t.Helper()
	if err := s.Put(testCtx(t), RecordPrefix+rec.ID, mustJSON(t, rec), storage.Strong); err != nil {
		t.Fatal(err)
	}
}

func TestEngineRecover(t *testing.T) {
	n := newNode(t, nil, Options{})
	other := libp2ptest.RandPeerIDFatal(t).String()
	mine := Record{ID: newID(), Type: TypeChunk, State: StateRunning, Origin: n.id.String(), Attempts: 1}
	theirs := Record{ID: newID(), Type: TypeChunk, State: StateRunning, Origin: other, Attempts: 1}
	done := Record{ID: newID(), Type: TypeChunk, State: StateSucceeded, Origin: n.id.String(), Result: json.RawMessage(`{}`)}
	for _, r := range []Record{mine, theirs, done} {
		putRecord(t, n.store, r)
	}
	if got, err := n.e.Recover(testCtx(t)); err != nil || got != 1 {
		t.Fatalf("Recover = %d, %v; want 1", got, err)
	}
	for _, tc := range []struct {
		id    string
		state State
		code  string
	}{{mine.ID, StateFailed, CodeInterrupted}, {theirs.ID, StateRunning, ""}, {done.ID, StateSucceeded, ""}} {
		got, err := n.e.Get(testCtx(t), tc.id)
		if err != nil || got.State != tc.state || got.Code != tc.code {
			t.Errorf("record %s after Recover: %+v, %v; want %s %q", tc.id, got, err, tc.state, tc.code)
		}
	}
}

func TestEngineCloseDrains(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	n := newNode(t, nil, Options{Executors: []Executor{blocking("test.block", started, release)}})
	ctx := testCtx(t)
	rec, err := n.e.Submit(ctx, SubmitRequest{Type: "test.block", Input: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	closed := make(chan error, 1)
	go func() { closed <- n.e.Close(ctx) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a task in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, err := n.e.Get(ctx, rec.ID); err != nil || got.State != StateSucceeded {
		t.Fatalf("drained task: %+v, %v", got, err)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"unknown/succeeded": 1})
}

func TestEngineCloseCancelsAtDeadline(t *testing.T) {
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	n := newNode(t, nil, Options{Executors: []Executor{
		blocking("test.block", started, release),
	}})
	ctx := testCtx(t)
	var ids []string
	for _, typ := range []string{"test.block", "test.block"} {
		rec, err := n.e.Submit(ctx, SubmitRequest{Type: typ, Input: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
		<-started
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := n.e.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: err = %v, want DeadlineExceeded", err)
	}
	for _, id := range ids {
		got, err := n.e.Get(ctx, id)
		if err != nil || got.State != StateFailed || got.Code != CodeClosed || got.Error != "cancelled, node stopping: context canceled" {
			t.Fatalf("task cancelled by Close: %+v, %v", got, err)
		}
	}
	wantTotals(t, "local", n.tm, map[string]float64{"unknown/cancelled": 2})
	if rec := n.e.Execute(ctx, Request{Type: TypeChunk, Input: chunkInput}); rec.Code != CodeClosed {
		t.Fatalf("Execute after Close: %+v", rec)
	}
}

// fakeTransport is a test double of our own Transport interface: calls go
// to a handler, normally another engine's Execute.
type fakeTransport struct {
	mu     sync.Mutex
	offer  map[string][]peer.ID
	calls  []Request
	peers  []peer.ID
	called chan peer.ID // receives each called peer when not nil
	handle func(ctx context.Context, p peer.ID, req Request) (Record, error)
}

func (f *fakeTransport) Call(ctx context.Context, p peer.ID, req Request) (Record, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	f.peers = append(f.peers, p)
	h := f.handle
	f.mu.Unlock()
	if f.called != nil {
		f.called <- p
	}
	return h(ctx, p, req)
}

func (f *fakeTransport) PeersOffering(typ string) []peer.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.offer[typ])
}

func (f *fakeTransport) requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeTransport) calledPeers() []peer.ID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

// mesh builds n remote nodes and a transport routing calls to their engines.
func mesh(t *testing.T, n int, types ...string) (*fakeTransport, []*node) {
	t.Helper()
	tr := &fakeTransport{offer: map[string][]peer.ID{}}
	var remotes []*node
	byID := map[peer.ID]*node{}
	for range n {
		r := newNode(t, nil, Options{})
		remotes = append(remotes, r)
		byID[r.id] = r
		for _, typ := range types {
			tr.offer[typ] = append(tr.offer[typ], r.id)
		}
	}
	tr.handle = func(ctx context.Context, p peer.ID, req Request) (Record, error) {
		r, ok := byID[p]
		if !ok {
			return Record{}, fmt.Errorf("%w: %s", ErrNoPeer, p)
		}
		return r.e.Execute(ctx, req), nil
	}
	return tr, remotes
}

func TestDispatchPicksFewestInFlight(t *testing.T) {
	tr, remotes := mesh(t, 3, TypeChunk)
	a, b, c := remotes[0].id, remotes[1].id, remotes[2].id
	release := make(chan struct{})
	route := tr.handle
	tr.handle = func(ctx context.Context, p peer.ID, req Request) (Record, error) {
		<-release
		return route(ctx, p, req)
	}
	tr.called = make(chan peer.ID, 8)
	n := newNode(t, tr, Options{})
	ctx := testCtx(t)
	var ids []string
	var order []peer.ID
	for range 5 {
		rec, err := n.e.Submit(ctx, SubmitRequest{Type: TypeChunk, Input: chunkInput})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
		order = append(order, <-tr.called) // the call is in flight before the next submission
	}
	// In flight before each pick: {}, {a}, {a,b}, {a,b,c}, {a:2,b,c}.
	if want := []peer.ID{a, b, c, a, b}; !slices.Equal(order, want) {
		t.Fatalf("dispatch order %v, want %v", order, want)
	}
	close(release)
	for i, id := range ids {
		rec := awaitFinal(t, n.e, id)
		if rec.State != StateSucceeded || rec.Peer != order[i].String() || rec.Attempts != 1 || string(rec.Result) != string(chunkResult(t)) {
			t.Fatalf("task %d: %+v", i, rec)
		}
	}
	// Metrics are recorded on the executing nodes only.
	wantTotals(t, "submitter", n.tm, map[string]float64{})
	for i, want := range []float64{2, 2, 1} {
		wantTotals(t, fmt.Sprintf("remote %d", i), remotes[i].tm, map[string]float64{"text.chunk/succeeded": want})
	}
	for _, req := range tr.requests() {
		if req.TimeoutMS != DefaultTimeout.Milliseconds() || req.Type != TypeChunk || string(req.Input) != string(chunkInput) || !slices.Contains(ids, req.ID) {
			t.Fatalf("request sent %+v", req)
		}
	}
}

// statesLog records the task record states written to a store.
type statesLog struct {
	storage.Store
	mu     sync.Mutex
	states []string
}

func (s *statesLog) Put(ctx context.Context, key string, v []byte, c storage.Consistency) error {
	if strings.HasPrefix(key, RecordPrefix) {
		var r Record
		_ = json.Unmarshal(v, &r)
		s.mu.Lock()
		s.states = append(s.states, fmt.Sprintf("%s/%d", r.State, r.Attempts))
		s.mu.Unlock()
	}
	return s.Store.Put(ctx, key, v, c)
}

func TestDispatchRetriesOnAnotherPeer(t *testing.T) {
	tr, remotes := mesh(t, 2, TypeChunk)
	a, b := remotes[0].id, remotes[1].id
	route := tr.handle
	tr.handle = func(ctx context.Context, p peer.ID, req Request) (Record, error) {
		if p == a {
			return Record{}, errors.New("stream reset")
		}
		return route(ctx, p, req)
	}
	log := &statesLog{Store: openStore(t)}
	tm := newTaskMetrics()
	e := NewEngine(log, tm.m, tr, libp2ptest.RandPeerIDFatal(t), Options{})
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	rec, err := e.Submit(testCtx(t), SubmitRequest{Type: TypeChunk, Input: chunkInput})
	if err != nil {
		t.Fatal(err)
	}
	rec = awaitFinal(t, e, rec.ID)
	if rec.State != StateSucceeded || rec.Peer != b.String() || rec.Attempts != 2 || string(rec.Result) != string(chunkResult(t)) {
		t.Fatalf("record %+v", rec)
	}
	if got := tr.calledPeers(); !slices.Equal(got, []peer.ID{a, b}) {
		t.Fatalf("called %v, want [a b]", got)
	}
	// Every state change was stored.
	if want := []string{"queued/0", "running/1", "running/2", "succeeded/2"}; !slices.Equal(log.states, want) {
		t.Fatalf("stored states %q, want %q", log.states, want)
	}
	wantTotals(t, "submitter", tm, map[string]float64{})
	wantTotals(t, "peer a", remotes[0].tm, map[string]float64{})
	wantTotals(t, "peer b", remotes[1].tm, map[string]float64{"text.chunk/succeeded": 1})
}

func TestDispatchLocalFallback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		offered  int // remote peers offering text.chunk, all failing
		attempts int
		calls    int
	}{
		{"no transport", -1, 1, 0},
		{"no peer offers the type", 0, 1, 0},
		{"the only peer fails, retried locally", 1, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr Transport
			ft, _ := mesh(t, max(tc.offered, 0), TypeChunk)
			ft.handle = func(context.Context, peer.ID, Request) (Record, error) {
				return Record{}, fmt.Errorf("%w: dial backoff", ErrNoPeer)
			}
			if tc.offered >= 0 {
				tr = ft
			}
			n := newNode(t, tr, Options{})
			rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput})
			if rec.State != StateSucceeded || rec.Peer != n.id.String() || rec.Attempts != tc.attempts || string(rec.Result) != string(chunkResult(t)) {
				t.Fatalf("record %+v", rec)
			}
			if got := len(ft.calledPeers()); got != tc.calls {
				t.Fatalf("%d calls, want %d", got, tc.calls)
			}
			wantTotals(t, "local", n.tm, map[string]float64{"text.chunk/succeeded": 1})
		})
	}
}

func TestDispatchTimeoutRetriedThenFails(t *testing.T) {
	tr, remotes := mesh(t, 2, TypeChunk)
	a, b := remotes[0].id, remotes[1].id
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	// Peers that never answer: the attempts end at the engine's deadline.
	tr.handle = func(ctx context.Context, _ peer.ID, _ Request) (Record, error) {
		select {
		case <-hang:
			return Record{}, errors.New("too late")
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
	}
	n := newNode(t, tr, Options{Timeout: 50 * time.Millisecond})
	start := time.Now()
	rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput})
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("took %v for two 50ms attempts", elapsed)
	}
	want := fmt.Sprintf("attempt 1 on peer %s: timed out after 50ms; attempt 2 on peer %s: timed out after 50ms", a, b)
	if rec.State != StateFailed || rec.Code != CodeTimeout || rec.Error != want || rec.Attempts != 2 || rec.Peer != b.String() {
		t.Fatalf("record %+v\nwant error %q", rec, want)
	}
	for _, req := range tr.requests() {
		if req.TimeoutMS != 50 {
			t.Fatalf("request timeout_ms %d, want 50", req.TimeoutMS)
		}
	}
	wantTotals(t, "submitter", n.tm, map[string]float64{})
}

func TestDispatchRemoteFailureNotRetried(t *testing.T) {
	t.Run("remote bad input", func(t *testing.T) {
		tr, remotes := mesh(t, 2, TypeChunk)
		n := newNode(t, tr, Options{})
		rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: json.RawMessage(`{"text":"a b","size":1,"overlap":1}`)})
		if rec.State != StateFailed || rec.Code != CodeBadInput || rec.Attempts != 1 || rec.Peer != remotes[0].id.String() ||
			!strings.HasPrefix(rec.Error, "attempt 1 on peer "+remotes[0].id.String()+": bad task input: overlap 1") {
			t.Fatalf("record %+v", rec)
		}
		if got := tr.calledPeers(); len(got) != 1 {
			t.Fatalf("called %v, want one call", got)
		}
		wantTotals(t, "executing peer", remotes[0].tm, map[string]float64{"text.chunk/failed": 1})
	})
	t.Run("transport reports bad input", func(t *testing.T) {
		tr, _ := mesh(t, 2, TypeChunk)
		tr.handle = func(context.Context, peer.ID, Request) (Record, error) {
			return Record{}, fmt.Errorf("peer replied error: %w: input too large", ErrBadInput)
		}
		n := newNode(t, tr, Options{})
		if rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput}); rec.Code != CodeBadInput || rec.Attempts != 1 {
			t.Fatalf("record %+v", rec)
		}
	})
	t.Run("remote without the executor is retried", func(t *testing.T) {
		tr, remotes := mesh(t, 1, "test.only-here")
		n := newNode(t, tr, Options{Executors: []Executor{testExecutor{typ: "test.only-here", run: func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`{"local":true}`), nil
		}}}})
		rec := n.submitWait(t, SubmitRequest{Type: "test.only-here", Input: json.RawMessage(`{}`)})
		if rec.State != StateSucceeded || rec.Attempts != 2 || rec.Peer != n.id.String() || string(rec.Result) != `{"local":true}` {
			t.Fatalf("record %+v", rec)
		}
		wantTotals(t, "peer", remotes[0].tm, map[string]float64{"unknown/failed": 1})
	})
}

func TestDispatchExplicitPeer(t *testing.T) {
	tr, remotes := mesh(t, 2, TypeChunk)
	b := remotes[1].id
	n := newNode(t, tr, Options{})
	rec := n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput, Peer: b})
	if rec.State != StateSucceeded || rec.Peer != b.String() || rec.Attempts != 1 {
		t.Fatalf("record %+v", rec)
	}
	if got := tr.calledPeers(); !slices.Equal(got, []peer.ID{b}) {
		t.Fatalf("called %v, want [b]", got)
	}
	// A failed attempt is retried on the same peer: the task must run there.
	route, failed := tr.handle, false
	tr.handle = func(ctx context.Context, p peer.ID, req Request) (Record, error) {
		if !failed {
			failed = true
			return Record{}, errors.New("stream reset")
		}
		return route(ctx, p, req)
	}
	rec = n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput, Peer: b})
	if rec.State != StateSucceeded || rec.Peer != b.String() || rec.Attempts != 2 {
		t.Fatalf("record %+v", rec)
	}
	if got := tr.calledPeers(); !slices.Equal(got, []peer.ID{b, b, b}) {
		t.Fatalf("called %v, want [b b b]", got)
	}
	// Naming this node runs locally.
	rec = n.submitWait(t, SubmitRequest{Type: TypeChunk, Input: chunkInput, Peer: n.id})
	if rec.State != StateSucceeded || rec.Peer != n.id.String() || len(tr.calledPeers()) != 3 {
		t.Fatalf("record %+v", rec)
	}
}

func TestSearchFansOut(t *testing.T) {
	tr, remotes := mesh(t, 2, TypeSearch)
	gone := libp2ptest.RandPeerIDFatal(t)
	tr.offer[TypeSearch] = append(tr.offer[TypeSearch], gone) // offers, never answers
	n := newNode(t, tr, Options{})
	// The corpus is spread across the mesh: 4 documents here, 3 on each remote.
	holder := map[string]*node{}
	for i, d := range corpus {
		h := []*node{n, n, n, n, remotes[0], remotes[0], remotes[0], remotes[1], remotes[1], remotes[1]}[i]
		holder[d.id] = h
		text := d.text
		if _, err := (IndexAddExecutor{Store: h.store}).Execute(testCtx(t), mustJSON(t, AddInput{Collection: "kb", ID: d.id, Text: &text, Size: ptr(16), Overlap: ptr(4)})); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []struct{ query, want string }{
		{"vaccine immunity against a virus", "medicine"},            // remote 1
		{"distributed hash table for peer discovery", "networking"}, // remote 0
		{"lava and ash from an eruption", "volcanoes"},              // here
	} {
		in := mustJSON(t, SearchInput{Collection: "kb", Query: q.query, K: ptr(3)})
		rec := n.submitWait(t, SubmitRequest{Type: TypeSearch, Input: in})
		if rec.State != StateSucceeded || rec.Peer != n.id.String() || rec.Attempts != 1 {
			t.Fatalf("record %+v", rec)
		}
		var out SearchOutput
		if err := json.Unmarshal(rec.Result, &out); err != nil {
			t.Fatal(err)
		}
		wantPeers := []string{remotes[0].id.String(), remotes[1].id.String(), n.id.String()}
		if !slices.Equal(out.Peers, wantPeers) || len(out.Failed) != 1 || out.Failed[0].Peer != gone.String() || out.Collection != "kb" {
			t.Fatalf("peers %v failed %+v", out.Peers, out.Failed)
		}
		// The merge is the best 3 of every node's own top 3.
		var all []SearchResult
		for _, h := range []*node{n, remotes[0], remotes[1]} {
			for _, r := range search(t, h.store, SearchInput{Collection: "kb", Query: q.query, K: ptr(3)}).Results {
				r.Peer = h.id.String()
				all = append(all, r)
			}
		}
		slices.SortFunc(all, func(a, b SearchResult) int { return cmp.Compare(b.Score, a.Score) })
		all = all[:min(3, len(all))]
		if len(all) == 0 || !slices.Equal(out.Results, all) || out.Results[0].ID != q.want || out.Results[0].Peer != holder[q.want].id.String() {
			t.Fatalf("query %q: results %+v\nwant %+v", q.query, out.Results, all)
		}
	}
	for i, who := range []*node{n, remotes[0], remotes[1]} {
		wantTotals(t, fmt.Sprintf("node %d", i), who.tm, map[string]float64{"index.search/succeeded": 3})
	}
	// Bad input fails at once, counted where it ran.
	rec := n.submitWait(t, SubmitRequest{Type: TypeSearch, Input: json.RawMessage(`{"collection":"kb","query":"x","k":0}`)})
	if rec.State != StateFailed || rec.Code != CodeBadInput {
		t.Fatalf("bad search: %+v", rec)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"index.search/succeeded": 3, "index.search/failed": 1})
}
