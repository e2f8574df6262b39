package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Instrument classifies every way an execution can end, under the type's
// label, with one duration sample each.
func TestInstrumentRecordsOutcomes(t *testing.T) {
	tm := newTaskMetrics()
	var fail error
	x := Instrument(testExecutor{typ: TypeEmbed, run: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		switch {
		case fail == errPanicTest:
			panic("boom")
		case fail != nil:
			return nil, fail
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		return json.RawMessage(`{"ok":true}`), nil
	}}, tm.m, nil)
	if x.Type() != TypeEmbed {
		t.Fatalf("Type() = %q", x.Type())
	}
	cancelled := func(cause error) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		return ctx
	}
	timedOut, cancel := context.WithTimeoutCause(context.Background(), 0, errAttemptTimeout)
	defer cancel()
	<-timedOut.Done()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		fail error
	}{
		{"success", context.Background(), nil},
		{"error", context.Background(), errors.New("disk full")},
		{"bad input while cancelled", cancelled(nil), fmt.Errorf("%w: no text", ErrBadInput)},
		{"submitter gave up", cancelled(nil), nil},
		{"node stopping", cancelled(ErrClosed), nil},
		{"attempt timed out", timedOut, nil},
	} {
		fail = tc.fail
		res, err := x.Execute(tc.ctx, json.RawMessage(`{}`))
		if (err == nil) != (tc.name == "success") || (err == nil && string(res) != `{"ok":true}`) {
			t.Fatalf("%s: %s, %v", tc.name, res, err)
		}
	}
	fail = errPanicTest
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Fatalf("recovered %v, want the executor's panic", v)
			}
		}()
		_, _ = x.Execute(context.Background(), json.RawMessage(`{}`))
	}()
	wantTotals(t, "instrumented", tm, map[string]float64{
		"text.embed/succeeded": 1, "text.embed/failed": 4, "text.embed/cancelled": 2,
	})
	if count, _ := tm.durationCount(t, TypeEmbed); count != 7 {
		t.Fatalf("task_duration_seconds{text.embed} count %d, want 7", count)
	}
	if got := testutil.ToFloat64(tm.m.Refused.WithLabelValues(TypeEmbed, "too_large")); got != 0 {
		t.Fatalf("tasks_refused_total{too_large} = %v, want 0", got)
	}

	// A type outside the closed set is recorded as unknown.
	other := Instrument(testExecutor{typ: "test.other", run: func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{}`), nil
	}}, tm.m, nil)
	if _, err := other.Execute(context.Background(), json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := tm.total("unknown", "succeeded"); got != 1 {
		t.Fatalf("tasks_total{unknown,succeeded} = %v, want 1", got)
	}
}

var errPanicTest = errors.New("panic please")

// A result over the limit of its destination fails (too_large) and is
// counted both as failed and as refused too_large.
func TestInstrumentResultOverLimit(t *testing.T) {
	tm := newTaskMetrics()
	x := Instrument(guarded{next: ChunkExecutor{}, log: discard()}, tm.m, nil)
	res, err := x.Execute(withLimit(context.Background(), 10), chunkInput)
	if res != nil || !errors.Is(err, ErrTooLarge) || failureCode(context.Background(), err) != CodeTooLarge {
		t.Fatalf("over the limit: %s, %v", res, err)
	}
	if _, err := x.Execute(withLimit(context.Background(), 0), chunkInput); err != nil {
		t.Fatalf("without a limit: %v", err)
	}
	wantTotals(t, "instrumented", tm, map[string]float64{"text.chunk/failed": 1, "text.chunk/succeeded": 1})
	if got := testutil.ToFloat64(tm.m.Refused.WithLabelValues(TypeChunk, "too_large")); got != 1 {
		t.Fatalf("tasks_refused_total{too_large} = %v, want 1", got)
	}
}

// An executor registered through Options, replacing a built-in one, is
// measured under its type with no code of its own.
func TestEngineMeasuresRegisteredExecutors(t *testing.T) {
	own := testExecutor{typ: TypeEmbed, run: func(context.Context, json.RawMessage) (json.RawMessage, error) {
		time.Sleep(time.Millisecond)
		return json.RawMessage(`{"own":true}`), nil
	}}
	n := newNode(t, nil, Options{Executors: []Executor{own}})
	rec := n.submitWait(t, SubmitRequest{Type: TypeEmbed, Input: json.RawMessage(`{}`)})
	if rec.State != StateSucceeded || string(rec.Result) != `{"own":true}` {
		t.Fatalf("record %+v", rec)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"text.embed/succeeded": 1})
	if count, sum := n.tm.durationCount(t, TypeEmbed); count != 1 || sum < 0.001 {
		t.Fatalf("task_duration_seconds{text.embed} count %d sum %v, want 1 and >= 1ms", count, sum)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
