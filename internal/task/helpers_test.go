package task

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
)

// openStoreAt opens a real local (Pebble) store in dir, guarded by the
// shared validation, and closes it at the end of the test.
func openStoreAt(t testing.TB, dir string) storage.Store {
	t.Helper()
	s, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatalf("open local store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return storage.Validate(s, 0)
}

// openStore opens a fresh real local store.
func openStore(t testing.TB) storage.Store {
	t.Helper()
	return openStoreAt(t, filepath.Join(t.TempDir(), "store"))
}

// testCtx is a context that ends before the test's own deadline would.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// taskMetrics is a fresh registry with the task families.
type taskMetrics struct {
	reg *prometheus.Registry
	m   *metrics.Tasks
}

func newTaskMetrics() taskMetrics {
	reg := prometheus.NewRegistry()
	return taskMetrics{reg: reg, m: metrics.NewTasks(reg, MetricLabels())}
}

// total returns tasks_total{type,outcome}.
func (tm taskMetrics) total(typ, outcome string) float64 {
	return testutil.ToFloat64(tm.m.Total.WithLabelValues(typ, outcome))
}

// totals returns every non-zero tasks_total series as "type/outcome" -> value.
func (tm taskMetrics) totals(t testing.TB) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, typ := range append(append([]string(nil), BuiltinTypes()...), metrics.Unknown) {
		for _, o := range MetricLabels().Outcomes {
			if v := tm.total(typ, o); v != 0 {
				out[typ+"/"+o] = v
			}
		}
	}
	return out
}

// durationCount returns the sample count and sum of task_duration_seconds{type}.
func (tm taskMetrics) durationCount(t testing.TB, typ string) (uint64, float64) {
	t.Helper()
	mfs, err := tm.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "task_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	t.Fatalf("task_duration_seconds{type=%q} not found", typ)
	return 0, 0
}

// awaitFinal polls the stored record of task id until it is final.
func awaitFinal(t testing.TB, e *Engine, id string) Record {
	t.Helper()
	ctx := testCtx(t)
	for {
		rec, err := e.Get(ctx, id)
		if err != nil {
			t.Fatalf("task %s: %v", id, err)
		}
		if rec.State.Final() {
			return rec
		}
		select {
		case <-ctx.Done():
			t.Fatalf("task %s not final: %+v", id, rec)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
