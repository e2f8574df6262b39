package storage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// noopStore does nothing and allocates nothing, so that what is measured
// around it is the decorator alone.
type noopStore struct {
	value []byte
	kvs   []storage.KV
	err   error // returned by every operation
}

func (n *noopStore) Get(context.Context, string, storage.Consistency) ([]byte, error) {
	if n.err != nil {
		return nil, n.err
	}
	return n.value, nil
}
func (n *noopStore) Put(context.Context, string, []byte, storage.Consistency) error { return n.err }
func (n *noopStore) Delete(context.Context, string, storage.Consistency) error      { return n.err }
func (n *noopStore) List(context.Context, string, storage.Consistency) ([]storage.KV, error) {
	return n.kvs, n.err
}
func (n *noopStore) ListPage(context.Context, string, string, int, storage.Consistency) ([]storage.KV, string, error) {
	return n.kvs, "", n.err
}
func (n *noopStore) Close() error { return nil }

// histogram returns the sample count and sum of the duration histogram
// child for operation and backend.
func histogram(t *testing.T, reg *prometheus.Registry, operation, backend string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "storage_operation_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "operation") == operation && label(m, "backend") == backend {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	t.Fatalf("no duration histogram for operation=%s backend=%s", operation, backend)
	return 0, 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func counter(m *metrics.Storage, vec string, operation, backend string) float64 {
	switch vec {
	case "ops":
		return testutil.ToFloat64(m.Operations.WithLabelValues(operation, backend))
	default:
		return testutil.ToFloat64(m.Errors.WithLabelValues(operation, backend))
	}
}

// TestInstrumentRealLocalStore drives a real Pebble store through the
// decorators the node uses and checks every counter and histogram exactly.
func TestInstrumentRealLocalStore(t *testing.T) {
	backend, err := local.Open(filepath.Join(t.TempDir(), "store"), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.NewStorage(reg, config.Backends())
	s := storage.Instrument(storage.Validate(backend, 0), m, "local")
	defer s.Close()

	// Every family is there, at zero, before the first operation.
	if n := testutil.CollectAndCount(m.Operations); n != 4 {
		t.Fatalf("%d operation series before any operation, want 4", n)
	}
	for _, op := range storage.OperationNames() {
		if got := counter(m, "ops", op, "local"); got != 0 {
			t.Fatalf("%s starts at %v", op, got)
		}
	}

	ctx := context.Background()
	const (
		puts    = 7
		gets    = 5 // of which missing are of absent keys
		missing = 2
		deletes = 3
		lists   = 4
	)
	for i := 0; i < puts; i++ {
		if err := s.Put(ctx, fmt.Sprintf("k%d", i), []byte("v"), storage.Consistency(i%4)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < gets; i++ {
		key := fmt.Sprintf("k%d", i)
		if i < missing {
			key = fmt.Sprintf("absent%d", i)
		}
		_, err := s.Get(ctx, key, storage.Strong)
		if i < missing && !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Get(%s): %v, want ErrNotFound", key, err)
		}
		if i >= missing && err != nil {
			t.Fatalf("Get(%s): %v", key, err)
		}
	}
	for i := 0; i < deletes; i++ {
		if err := s.Delete(ctx, fmt.Sprintf("k%d", i), storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < lists; i++ {
		kvs, err := s.List(ctx, "k", storage.Strong)
		if err != nil || len(kvs) != puts-deletes {
			t.Fatalf("List: %d entries, %v", len(kvs), err)
		}
	}
	if err := s.Put(ctx, "bad\x00key", []byte("v"), storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("invalid key: %v", err)
	}
	// Each page of a paged read is one "list" operation: pages of one
	// entry over puts-deletes entries, the last with no next cursor.
	seen := 0
	if err := storage.Each(ctx, s, "k", storage.Strong, 1, func(storage.KV) error { seen++; return nil }); err != nil || seen != puts-deletes {
		t.Fatalf("Each: %d entries, %v", seen, err)
	}
	if _, _, err := s.ListPage(ctx, "k", "", 0, storage.Strong); !errors.Is(err, storage.ErrInvalidPage) {
		t.Fatalf("limit 0: %v", err)
	}

	want := map[string]struct {
		ops, errs float64
	}{
		"put":    {puts + 1, 1},
		"get":    {gets, 0},
		"delete": {deletes, 0},
		"list":   {lists + puts - deletes + 1, 1},
	}
	for op, w := range want {
		if got := counter(m, "ops", op, "local"); got != w.ops {
			t.Errorf("storage_operations_total{operation=%q,backend=\"local\"} = %v, want %v", op, got, w.ops)
		}
		if got := counter(m, "errors", op, "local"); got != w.errs {
			t.Errorf("storage_operation_errors_total{operation=%q,backend=\"local\"} = %v, want %v", op, got, w.errs)
		}
		count, sum := histogram(t, reg, op, "local")
		if float64(count) != w.ops {
			t.Errorf("duration histogram %s: %d samples, want %v", op, count, w.ops)
		}
		if !(sum > 0) || sum > 10 {
			t.Errorf("duration histogram %s: sum %v s, want > 0 and plausible", op, sum)
		}
	}
	// Nothing was recorded under the other backend.
	if n := testutil.CollectAndCount(m.Operations); n != 4 {
		t.Errorf("%d operation series, want 4 (local only)", n)
	}
}

// TestInstrumentDurationsInSeconds checks that durations are recorded in
// seconds and not rounded: a 3 ms operation records about 0.003, and a
// sub-millisecond one records more than zero.
func TestInstrumentDurationsInSeconds(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewStorage(reg, config.Backends())
	slow := storage.Instrument(&sleepStore{d: 3 * time.Millisecond}, m, "redis")
	if err := slow.Put(context.Background(), "k", nil, storage.Strong); err != nil {
		t.Fatal(err)
	}
	count, sum := histogram(t, reg, "put", "redis")
	if count != 1 || sum < 0.003 || sum > 1 {
		t.Fatalf("3ms put recorded count=%d sum=%v s", count, sum)
	}
	fast := storage.Instrument(&noopStore{}, m, "redis")
	if _, err := fast.Get(context.Background(), "k", storage.Strong); err != nil {
		t.Fatal(err)
	}
	count, sum = histogram(t, reg, "get", "redis")
	if count != 1 || !(sum > 0) || sum >= 0.001 {
		t.Fatalf("no-op get recorded count=%d sum=%v s, want one sample in (0, 1ms)", count, sum)
	}
}

type sleepStore struct {
	noopStore
	d time.Duration
}

func (s *sleepStore) Put(context.Context, string, []byte, storage.Consistency) error {
	time.Sleep(s.d) // the duration being measured, not synchronisation
	return nil
}

func TestInstrumentErrorsAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewStorage(reg, config.Backends())
	ctx := context.Background()
	down := storage.Instrument(&noopStore{err: fmt.Errorf("%w: connection refused", storage.ErrUnavailable)}, m, "redis")
	_, _ = down.Get(ctx, "k", storage.Strong)
	_ = down.Put(ctx, "k", nil, storage.Strong)
	_ = down.Delete(ctx, "k", storage.Strong)
	_, _ = down.List(ctx, "", storage.Strong)
	notFound := storage.Instrument(&noopStore{err: fmt.Errorf("wrapped: %w", storage.ErrNotFound)}, m, "redis")
	_, _ = notFound.Get(ctx, "k", storage.Strong)
	weird := storage.Instrument(&noopStore{}, m, "sqlite")
	_ = weird.Put(ctx, "k", nil, storage.Strong)

	for _, op := range storage.OperationNames() {
		wantOps := 1.0
		if op == "get" {
			wantOps = 2
		}
		if got := counter(m, "ops", op, "redis"); got != wantOps {
			t.Errorf("ops %s = %v, want %v", op, got, wantOps)
		}
		if got := counter(m, "errors", op, "redis"); got != 1 {
			t.Errorf("errors %s = %v, want 1 (not-found is not an error)", op, got)
		}
	}
	if got := counter(m, "ops", "put", metrics.Unknown); got != 1 {
		t.Errorf("backend outside the closed set: ops{backend=unknown} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Operations.WithLabelValues("put", "sqlite")); got != 0 {
		t.Errorf("a backend label outside the closed set was created")
	}
}

// TestInstrumentDoesNotAllocate proves that recording allocates nothing:
// around a store that allocates nothing, the decorator allocates nothing.
func TestInstrumentDoesNotAllocate(t *testing.T) {
	m := metrics.NewStorage(prometheus.NewRegistry(), config.Backends())
	value := []byte("preallocated")
	kvs := []storage.KV{{Key: "k", Value: value}}
	// With a tracer: unsampled operations must not allocate either.
	tr, err := tracing.New(tracing.Config{SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := storage.InstrumentTraced(&noopStore{value: value, kvs: kvs}, m, "local", tr)
	missing := storage.InstrumentTraced(&noopStore{err: storage.ErrNotFound}, m, "local", tr)
	failing := storage.Instrument(&noopStore{err: storage.ErrUnavailable}, m, "local")
	ctx := context.Background()
	tests := map[string]func(){
		"get":           func() { _, _ = s.Get(ctx, "k", storage.Strong) },
		"put":           func() { _ = s.Put(ctx, "k", value, storage.Strong) },
		"delete":        func() { _ = s.Delete(ctx, "k", storage.Eventual) },
		"list":          func() { _, _ = s.List(ctx, "k", storage.Strong) },
		"list-page":     func() { _, _, _ = s.ListPage(ctx, "k", "k/1", 100, storage.Strong) },
		"list-page-err": func() { _, _, _ = failing.ListPage(ctx, "k", "", 1, storage.Strong) },
		"get-notfound":  func() { _, _ = missing.Get(ctx, "k", storage.Strong) },
		"put-error":     func() { _ = failing.Put(ctx, "k", value, storage.Strong) },
	}
	for name, fn := range tests {
		if allocs := testing.AllocsPerRun(1000, fn); allocs != 0 {
			t.Errorf("%s: %v allocations per operation, want 0", name, allocs)
		}
	}
}

// TestInstrumentTraced: an operation under a sampled span gets a child span
// named after it, failed when the operation failed (a missing key is not a
// failure), and its duration carries the trace id as an exemplar.
func TestInstrumentTraced(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewStorage(reg, config.Backends())
	tr, err := tracing.New(tracing.Config{Node: "alpha", PeerID: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ok := storage.InstrumentTraced(&noopStore{value: []byte("v")}, m, "redis", tr)
	missing := storage.InstrumentTraced(&noopStore{err: storage.ErrNotFound}, m, "redis", tr)
	failing := storage.InstrumentTraced(&noopStore{err: storage.ErrUnavailable}, m, "redis", tr)

	ctx, root := tr.StartRoot(context.Background(), "root", trace.SpanKindServer, true)
	_ = ok.Put(ctx, "k", []byte("v"), storage.Strong)
	_, _ = missing.Get(ctx, "k", storage.Strong)
	_, _, _ = failing.ListPage(ctx, "", "", 10, storage.Strong)
	root.End(nil)
	_, _ = ok.Get(context.Background(), "k", storage.Strong) // unsampled: no span

	id, _ := tracing.ParseTraceID(root.TraceID())
	spans, _ := tr.Store().Spans(id)
	type got struct{ name, parent, backend, err string }
	var gots []got
	for _, sp := range spans {
		gots = append(gots, got{sp.Name, sp.ParentID, sp.Attributes["storage.backend"], sp.Error})
	}
	rootID := spans[len(spans)-1].SpanID
	want := []got{
		{"storage put", rootID, "redis", ""},
		{"storage get", rootID, "redis", ""},
		{"storage list", rootID, "redis", storage.ErrUnavailable.Error()},
		{"root", "", "", ""},
	}
	if fmt.Sprint(gots) != fmt.Sprint(want) {
		t.Fatalf("spans %v, want %v", gots, want)
	}
	if n, _ := tr.Store().Len(); n != 1 {
		t.Fatalf("%d traces stored, want 1 (the unsampled get made none)", n)
	}
	var dm dto.Metric
	if err := m.Duration.WithLabelValues("put", "redis").Write(&dm); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range dm.GetHistogram().GetBucket() {
		if e := b.GetExemplar(); e != nil && e.GetLabel()[0].GetValue() == root.TraceID() {
			found = true
		}
	}
	if !found {
		t.Fatalf("no exemplar with trace_id %s on the put duration", root.TraceID())
	}
}

// TestInstrumentConcurrentExactTotals: 16 goroutines x 10,000 operations
// give exact totals, with nothing lost to races.
func TestInstrumentConcurrentExactTotals(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewStorage(reg, config.Backends())
	s := storage.Instrument(&noopStore{value: []byte("v")}, m, "local")
	failing := storage.Instrument(&noopStore{err: storage.ErrUnavailable}, m, "local")
	const goroutines, perGoroutine = 16, 10000
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perGoroutine; i++ {
				switch i % 5 {
				case 0:
					_, _ = s.Get(ctx, "k", storage.Strong)
				case 1:
					_ = s.Put(ctx, "k", nil, storage.Strong)
				case 2:
					_ = s.Delete(ctx, "k", storage.Strong)
				case 3:
					_, _ = s.List(ctx, "", storage.Strong)
				case 4:
					_ = failing.Put(ctx, "k", nil, storage.Strong)
				}
			}
		}()
	}
	wg.Wait()
	per := float64(goroutines * perGoroutine / 5)
	want := map[string][2]float64{
		"get":    {per, 0},
		"put":    {2 * per, per},
		"delete": {per, 0},
		"list":   {per, 0},
	}
	var total float64
	for op, w := range want {
		if got := counter(m, "ops", op, "local"); got != w[0] {
			t.Errorf("ops %s = %v, want %v", op, got, w[0])
		}
		if got := counter(m, "errors", op, "local"); got != w[1] {
			t.Errorf("errors %s = %v, want %v", op, got, w[1])
		}
		if count, _ := histogram(t, reg, op, "local"); float64(count) != w[0] {
			t.Errorf("histogram %s count = %d, want %v", op, count, w[0])
		}
		total += counter(m, "ops", op, "local")
	}
	if total != goroutines*perGoroutine {
		t.Errorf("total operations %v, want %d", total, goroutines*perGoroutine)
	}
}

func TestInstrumentPassesThrough(t *testing.T) {
	m := metrics.NewStorage(prometheus.NewRegistry(), config.Backends())
	value := []byte("value")
	kvs := []storage.KV{{Key: "a", Value: value}}
	inner := &noopStore{value: value, kvs: kvs}
	s := storage.Instrument(inner, m, "local")
	v, err := s.Get(context.Background(), "k", storage.Strong)
	if err != nil || &v[0] != &value[0] {
		t.Fatalf("Get did not return the backend's value: %q, %v", v, err)
	}
	got, err := s.List(context.Background(), "", storage.Strong)
	if err != nil || len(got) != 1 || got[0].Key != "a" {
		t.Fatalf("List = %v, %v", got, err)
	}
	if u, ok := s.(interface{ Unwrap() storage.Store }); !ok || u.Unwrap() != inner {
		t.Fatal("Unwrap does not return the wrapped store")
	}
}
