package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// blocker is an executor that runs until release is closed.
func blocker(started chan<- struct{}, release <-chan struct{}) Executor {
	return testExecutor{typ: "test.block", run: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		started <- struct{}{}
		select {
		case <-release:
			return json.RawMessage(`{}`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAdmissionRefusesBusyAtOnce(t *testing.T) {
	tm := newTaskMetrics()
	started, release := make(chan struct{}, 4), make(chan struct{})
	e := NewEngine(openStore(t), tm.m, nil, "self", Options{
		MaxConcurrent: 1, MaxQueued: 2, Executors: []Executor{blocker(started, release)},
	})
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	ctx := testCtx(t)
	req := Request{Type: "test.block", Input: json.RawMessage(`{}`)}
	results := make(chan Record, 3)
	go func() { results <- e.Execute(WithPeer(ctx, "A"), req) }()
	<-started
	go func() { results <- e.Execute(WithPeer(ctx, "B"), req) }()
	waitFor(t, "one queued", func() bool { return testutil.ToFloat64(tm.m.Queued) == 1 })
	// Peer A holds its share (half of 1+2, at least 1): refused at once.
	if rec := e.Execute(WithPeer(ctx, "A"), req); rec.Code != CodeBusy || rec.State != StateFailed {
		t.Fatalf("peer over its share: %+v", rec)
	}
	go func() { results <- e.Execute(WithPeer(ctx, "C"), req) }()
	waitFor(t, "two queued", func() bool { return testutil.ToFloat64(tm.m.Queued) == 2 })
	// Queue full: a fourth peer and a local submission are refused at once.
	if rec := e.Execute(WithPeer(ctx, "D"), req); rec.Code != CodeBusy {
		t.Fatalf("queue full: %+v", rec)
	}
	if _, err := e.Submit(ctx, SubmitRequest{Type: "test.block", Input: json.RawMessage(`{}`)}); !errors.Is(err, ErrBusy) {
		t.Fatalf("local submit with queue full: %v, want ErrBusy", err)
	}
	if got := testutil.ToFloat64(tm.m.Running); got != 1 {
		t.Fatalf("tasks_running = %v, want 1", got)
	}
	if got := testutil.ToFloat64(tm.m.Refused.WithLabelValues("unknown", "busy")); got != 3 {
		t.Fatalf("tasks_refused_total{busy} = %v, want 3", got)
	}
	close(release)
	for range 3 {
		if rec := <-results; rec.State != StateSucceeded {
			t.Fatalf("admitted task: %+v", rec)
		}
	}
	if r, q := testutil.ToFloat64(tm.m.Running), testutil.ToFloat64(tm.m.Queued); r != 0 || q != 0 {
		t.Fatalf("after: running %v queued %v, want 0 0", r, q)
	}
}

func TestOutputBoundRefusedBeforeWork(t *testing.T) {
	tm := newTaskMetrics()
	e := NewEngine(openStore(t), tm.m, nil, "self", Options{MaxMessageBytes: 1 << 20, MaxValueBytes: 8 << 20})
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	ctx := WithPeer(testCtx(t), "P")
	texts := make([]string, 200)
	for i := range texts {
		texts[i] = fmt.Sprintf("text %d", i)
	}
	cases := []struct {
		typ   string
		input any
	}{
		{TypeEmbed, map[string]any{"texts": texts, "dim": MaxDim}},
		{TypeChunk, map[string]any{"text": strings.Repeat("ab ", 40000), "size": 2, "overlap": 1}},
	}
	for _, c := range cases {
		rec := e.Execute(ctx, Request{Type: c.typ, Input: mustJSON(t, c.input)})
		if rec.State != StateFailed || rec.Code != CodeTooLarge || !strings.Contains(rec.Error, "over the limit") {
			t.Fatalf("%s: %+v", c.typ, rec)
		}
		if got := testutil.ToFloat64(tm.m.Refused.WithLabelValues(c.typ, "too_large")); got != 1 {
			t.Fatalf("%s tasks_refused_total{too_large} = %v, want 1", c.typ, got)
		}
		if got := tm.total(c.typ, "failed") + tm.total(c.typ, "succeeded"); got != 0 {
			t.Fatalf("%s was executed (tasks_total %v)", c.typ, got)
		}
	}
	// Small outputs still run.
	if rec := e.Execute(ctx, Request{Type: TypeChunk, Input: chunkInput}); rec.State != StateSucceeded {
		t.Fatalf("small chunk: %+v", rec)
	}
}

// A result the store cannot hold ends the task failed (too_large) without
// the result; Get reads it.
func TestResultTooLargeForRecordEnds(t *testing.T) {
	big := testExecutor{typ: "test.big", run: func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`), nil
	}}
	for _, tc := range []struct {
		name     string
		maxValue int // engine limit; 0: only the store refuses
	}{{"store refuses", 0}, {"engine limit", 32 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			tm := newTaskMetrics()
			store := storage.Validate(openStore(t), 32<<10)
			e := NewEngine(store, tm.m, nil, "self", Options{MaxValueBytes: tc.maxValue, Executors: []Executor{big}})
			t.Cleanup(func() { _ = e.Close(context.Background()) })
			ctx := testCtx(t)
			rec, err := e.Submit(ctx, SubmitRequest{Type: "test.big", Input: json.RawMessage(`{}`)})
			if err != nil {
				t.Fatal(err)
			}
			final := awaitFinal(t, e, rec.ID)
			if final.State != StateFailed || final.Code != CodeTooLarge || final.Result != nil {
				t.Fatalf("final: %+v", final)
			}
			stored, err := e.Get(ctx, rec.ID)
			if err != nil || stored.State != StateFailed || stored.Code != CodeTooLarge {
				t.Fatalf("get: %+v, %v", stored, err)
			}
		})
	}
}

// A record store error on the final write with a result is retried
// without it; shutdown ends a queued task with a final record.
func TestShutdownEndsQueuedTask(t *testing.T) {
	tm := newTaskMetrics()
	started, release := make(chan struct{}, 4), make(chan struct{})
	defer close(release)
	e := NewEngine(openStore(t), tm.m, nil, "self", Options{MaxConcurrent: 1, Executors: []Executor{blocker(started, release)}})
	ctx := testCtx(t)
	var ids []string
	for range 2 {
		rec, err := e.Submit(ctx, SubmitRequest{Type: "test.block", Input: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	<-started
	waitFor(t, "one queued", func() bool { return testutil.ToFloat64(tm.m.Queued) == 1 })
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_ = e.Close(cctx)
	for _, id := range ids {
		if rec := awaitFinal(t, e, id); rec.State != StateFailed {
			t.Fatalf("task %s after shutdown: %+v", id, rec)
		}
		if stored, err := e.Get(ctx, id); err != nil || stored.State != StateFailed {
			t.Fatalf("stored %s: %+v, %v", id, stored, err)
		}
	}
}

func TestRetentionRemovesOldAndExcessRecords(t *testing.T) {
	tm := newTaskMetrics()
	store := openStore(t)
	ctx := testCtx(t)
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	put := func(id string, state State, age time.Duration) {
		rec := Record{ID: id, Type: TypeChunk, State: state, CreatedAt: now.Add(-age)}
		if err := store.Put(ctx, RecordPrefix+id, mustJSON(t, rec), storage.Strong); err != nil {
			t.Fatal(err)
		}
	}
	put("old1", StateSucceeded, 3*time.Hour)
	put("old2", StateFailed, 2*time.Hour)
	put("oldrunning", StateRunning, 5*time.Hour) // never removed while not final
	for i := range 5 {
		put(fmt.Sprintf("new%d", i), StateSucceeded, time.Duration(5-i)*time.Minute)
	}
	r := &retainer{store: store, page: listPager(store), retention: time.Hour, maxRecords: 4, interval: time.Hour,
		expired: tm.m.RecordsRemoved.WithLabelValues("expired"), overLimit: tm.m.RecordsRemoved.WithLabelValues("over_limit"),
		now: func() time.Time { return now }}
	n, err := r.pass(ctx)
	if err != nil || n != 4 {
		t.Fatalf("pass removed %d, %v; want 4", n, err)
	}
	kvs, err := store.List(ctx, RecordPrefix, storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, kv := range kvs {
		left = append(left, strings.TrimPrefix(kv.Key, RecordPrefix))
	}
	if want := "new2,new3,new4,oldrunning"; strings.Join(left, ",") != want {
		t.Fatalf("left %v, want %s", left, want)
	}
	if e, o := testutil.ToFloat64(r.expired), testutil.ToFloat64(r.overLimit); e != 2 || o != 2 {
		t.Fatalf("removed expired %v over_limit %v, want 2 2", e, o)
	}
}

// The engine's background loop removes expired records.
func TestRetentionLoop(t *testing.T) {
	tm := newTaskMetrics()
	store := openStore(t)
	ctx := testCtx(t)
	rec := Record{ID: newID(), Type: TypeChunk, State: StateSucceeded, CreatedAt: time.Now().Add(-time.Hour)}
	if err := store.Put(ctx, RecordPrefix+rec.ID, mustJSON(t, rec), storage.Strong); err != nil {
		t.Fatal(err)
	}
	e := NewEngine(store, tm.m, nil, "self", Options{Retention: time.Minute, RetentionInterval: 10 * time.Millisecond})
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	waitFor(t, "record removed and counted", func() bool {
		return testutil.ToFloat64(tm.m.RecordsRemoved.WithLabelValues("expired")) == 1
	})
	if _, err := e.Get(ctx, rec.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record still there: %v", err)
	}
}
