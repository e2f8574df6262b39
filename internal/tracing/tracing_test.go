package tracing_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

func newTracing(t testing.TB, ratio float64) *tracing.Tracing {
	t.Helper()
	tr, err := tracing.New(tracing.Config{SampleRatio: ratio, Node: "alpha", PeerID: "12D3KooWalpha"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr
}

func TestUnsampledAllocatesNothing(t *testing.T) {
	tr := newTracing(t, 0)
	ctx := context.Background()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: []float64{1}})
	errX := errors.New("x")
	allocs := testing.AllocsPerRun(1000, func() {
		c, s := tr.StartRoot(ctx, "root", trace.SpanKindServer, false)
		c2, s2 := tr.Start(c, "child", trace.SpanKindInternal)
		tracing.Observe(c2, h, 0.5)
		_ = tracing.Traceparent(c2)
		s2.End(nil)
		s.End(errX)
	})
	if allocs != 0 {
		t.Fatalf("unsampled root, child, observe and end: %v allocs, want 0", allocs)
	}
	var nilT *tracing.Tracing
	if _, s := nilT.StartRoot(ctx, "x", trace.SpanKindServer, true); s.Recording() {
		t.Fatal("a nil Tracing traced")
	}
}

func TestSampledTreeIsStored(t *testing.T) {
	tr := newTracing(t, 0)
	ctx, root := tr.StartRoot(context.Background(), "task.submit", trace.SpanKindServer, true)
	if !root.Recording() || len(root.TraceID()) != 32 {
		t.Fatalf("forced root not recording: %q", root.TraceID())
	}
	_, child := tr.Start(ctx, "storage put", trace.SpanKindInternal)
	child.SetAttributes(attribute.String("storage.backend", "local"))
	child.End(errors.New("disk full"))
	root.End(nil)

	id, err := tracing.ParseTraceID(root.TraceID())
	if err != nil {
		t.Fatal(err)
	}
	spans, ok := tr.Store().Spans(id)
	if !ok || len(spans) != 2 {
		t.Fatalf("stored spans: %v %+v, want 2", ok, spans)
	}
	c, r := spans[0], spans[1] // ended first, stored first
	if c.Name != "storage put" || r.Name != "task.submit" || c.ParentID != r.SpanID || r.ParentID != "" {
		t.Fatalf("tree: %+v", spans)
	}
	if c.Error != "disk full" || r.Error != "" || c.Attributes["storage.backend"] != "local" {
		t.Fatalf("error/attributes: %+v", spans)
	}
	if c.Node != "alpha" || c.PeerID != "12D3KooWalpha" || c.TraceID != root.TraceID() {
		t.Fatalf("node fields: %+v", c)
	}
}

func TestSampleRatio(t *testing.T) {
	for _, tc := range []struct {
		ratio    float64
		min, max int
	}{{0, 0, 0}, {1, 1000, 1000}, {0.1, 50, 150}} {
		tr := newTracing(t, tc.ratio)
		n := 0
		for range 1000 {
			_, s := tr.StartRoot(context.Background(), "r", trace.SpanKindServer, false)
			if s.Recording() {
				n++
			}
			s.End(nil)
		}
		if n < tc.min || n > tc.max {
			t.Errorf("ratio %v: %d of 1000 sampled, want %d..%d", tc.ratio, n, tc.min, tc.max)
		}
	}
	if _, err := tracing.New(tracing.Config{SampleRatio: 1.5}); err == nil {
		t.Error("ratio 1.5 accepted")
	}
	if _, err := tracing.New(tracing.Config{OTLPEndpoint: "localhost:4318"}); err == nil {
		t.Error("an OTLP endpoint without scheme accepted")
	}
}

func TestTraceparentRoundTrip(t *testing.T) {
	a, b := newTracing(t, 0), newTracing(t, 0)
	ctx, client := a.StartRoot(context.Background(), "msg send", trace.SpanKindClient, true)
	tp := tracing.Traceparent(ctx)
	if !strings.HasPrefix(tp, "00-"+client.TraceID()+"-") || !strings.HasSuffix(tp, "-01") {
		t.Fatalf("traceparent %q", tp)
	}
	rctx := tracing.WithTraceparent(context.Background(), tp)
	_, server := b.Start(rctx, "msg task.request", trace.SpanKindServer)
	if !server.Recording() || server.TraceID() != client.TraceID() {
		t.Fatalf("server span %v in trace %q, want %q", server.Recording(), server.TraceID(), client.TraceID())
	}
	server.End(nil)
	client.End(nil)
	id, _ := tracing.ParseTraceID(client.TraceID())
	cs, _ := a.Store().Spans(id)
	ss, _ := b.Store().Spans(id)
	if len(cs) != 1 || len(ss) != 1 || ss[0].ParentID != cs[0].SpanID {
		t.Fatalf("server span is not the child of the client span: %+v %+v", cs, ss)
	}
	for _, bad := range []string{"", "garbage", "00-" + strings.Repeat("0", 32) + "-" + strings.Repeat("1", 16) + "-01",
		"00-" + strings.Repeat("a", 32) + "-" + strings.Repeat("1", 16) + "-00", strings.Repeat("x", 4096)} {
		if c := tracing.WithTraceparent(context.Background(), bad); trace.SpanContextFromContext(c).IsValid() {
			t.Errorf("traceparent %q gave a parent", bad)
		}
	}
}

func TestExemplarOnlyWhenSampled(t *testing.T) {
	tr := newTracing(t, 0)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: []float64{1}})
	tracing.Observe(context.Background(), h, 0.5)
	ctx, s := tr.StartRoot(context.Background(), "r", trace.SpanKindServer, true)
	tracing.Observe(ctx, h, 0.25)
	s.End(nil)
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	b := m.GetHistogram().GetBucket()[0]
	if m.GetHistogram().GetSampleCount() != 2 || b.GetExemplar() == nil {
		t.Fatalf("histogram %v", m.GetHistogram())
	}
	if got := b.GetExemplar().GetLabel()[0]; got.GetName() != "trace_id" || got.GetValue() != s.TraceID() || b.GetExemplar().GetValue() != 0.25 {
		t.Fatalf("exemplar %v, want trace_id=%s value 0.25", b.GetExemplar(), s.TraceID())
	}
}

func TestStoreBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	st := tracing.NewStore(tracing.StoreConfig{MaxSpans: 10, Retention: time.Hour, Now: func() time.Time { return now }})
	tr := newTracingWithStore(t, st)
	ids := make([]string, 0)
	for i := range 6 { // 6 traces of 2 spans: the oldest are dropped to stay at 10
		ctx, r := tr.StartRoot(context.Background(), fmt.Sprint("t", i), trace.SpanKindServer, true)
		_, c := tr.Start(ctx, "c", trace.SpanKindInternal)
		c.End(nil)
		r.End(nil)
		ids = append(ids, r.TraceID())
	}
	if traces, spans := st.Len(); traces != 5 || spans != 10 {
		t.Fatalf("store holds %d traces, %d spans; want 5, 10", traces, spans)
	}
	if _, ok := st.Spans(mustID(t, ids[0])); ok {
		t.Fatal("oldest trace kept past MaxSpans")
	}
	if _, ok := st.Spans(mustID(t, ids[5])); !ok {
		t.Fatal("newest trace dropped")
	}
	now = now.Add(2 * time.Hour)
	if _, ok := st.Spans(mustID(t, ids[5])); ok {
		t.Fatal("trace returned past its retention")
	}
	_, r := tr.StartRoot(context.Background(), "late", trace.SpanKindServer, true)
	r.End(nil)
	if traces, spans := st.Len(); traces != 1 || spans != 1 || st.Dropped() != 6 {
		t.Fatalf("after retention: %d traces, %d spans, %d dropped; want 1, 1, 6", traces, spans, st.Dropped())
	}
}

// TestStoreMemory stores 10,000 traces of 6 spans (with a few attributes
// each) and checks the heap they take stays under 50 MB.
func TestStoreMemory(t *testing.T) {
	st := tracing.NewStore(tracing.StoreConfig{Node: "alpha", PeerID: "12D3KooWQy8vG4wZ"})
	tr := newTracingWithStore(t, st)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10_000 {
		ctx, r := tr.StartRoot(context.Background(), "task.submit", trace.SpanKindServer, true)
		r.SetAttributes(attribute.String("task.type", "text.chunk"), attribute.String("task.id", "0123456789abcdef"))
		for range 5 {
			_, c := tr.Start(ctx, "storage put", trace.SpanKindInternal)
			c.SetAttributes(attribute.String("storage.backend", "local"), attribute.String("storage.operation", "put"))
			c.End(nil)
		}
		r.End(nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if traces, spans := st.Len(); traces != 10_000 || spans != 60_000 {
		t.Fatalf("store holds %d traces, %d spans", traces, spans)
	}
	t.Logf("10,000 traces of 6 spans: %.1f MB of heap", float64(used)/1e6)
	if used > 50e6 {
		t.Fatalf("10,000 traces take %d bytes, want under 50 MB", used)
	}
	runtime.KeepAlive(st)
}

func TestTimeline(t *testing.T) {
	t0 := time.Unix(100, 0)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	tc := tracing.Trace{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Spans: []tracing.SpanRecord{
		{SpanID: "2", Name: "task.dispatch", Node: "alpha", PeerID: "A", Start: at(0.21), End: at(12.11), Attributes: map[string]string{"peer": "bravo"}},
		{SpanID: "1", Name: "task.submit", Node: "alpha", PeerID: "A", Start: at(0), End: at(12.4)},
		{SpanID: "3", Name: "task.execute", Node: "bravo", PeerID: "B", Start: at(1.1), End: at(10.9), Attributes: map[string]string{"task.type": "text.chunk"}, Error: "boom"},
	}, Incomplete: []string{"charlie"}}
	var b bytes.Buffer
	if err := tc.WriteTimeline(&b); err != nil {
		t.Fatal(err)
	}
	want := "trace 4bf92f3577b34da6a3ce929d0e0e4736   total 12.4 ms   nodes 2   incomplete: no spans from charlie\n" +
		"+0.00 ms   alpha  task.submit                12.4 ms\n" +
		"+0.21 ms   alpha  task.dispatch bravo        11.9 ms\n" +
		"+1.10 ms   bravo  task.execute text.chunk    9.80 ms  error: boom\n"
	if b.String() != want {
		t.Fatalf("timeline:\n%s\nwant:\n%s", b.String(), want)
	}
}

func newTracingWithStore(t testing.TB, st *tracing.Store) *tracing.Tracing {
	t.Helper()
	tr, err := tracing.New(tracing.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr
}

func mustID(t *testing.T, s string) trace.TraceID {
	t.Helper()
	id, err := tracing.ParseTraceID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAssemble follows a trace over three stores: A dispatched to B, B to
// C, and D is named but gone. C also claims a span of A's, which is
// dropped: a peer speaks only for itself.
func TestAssemble(t *testing.T) {
	t0 := time.Unix(100, 0)
	mk := func(peer, node string) *tracing.Store {
		return tracing.NewStore(tracing.StoreConfig{PeerID: peer, Node: node})
	}
	stores := map[string]*tracing.Store{"A": mk("A", "alpha"), "B": mk("B", "bravo"), "C": mk("C", "charlie")}
	ta := newTracingWithStore(t, stores["A"])
	tb := newTracingWithStore(t, stores["B"])
	tc := newTracingWithStore(t, stores["C"])

	ctx, root := ta.StartRoot(context.Background(), "task.submit", trace.SpanKindServer, true)
	dctx, d := ta.Start(ctx, "task.dispatch", trace.SpanKindClient)
	d.SetAttributes(attribute.String("peer", "B"))
	bctx, bs := tb.Start(tracing.WithTraceparent(context.Background(), tracing.Traceparent(dctx)), "msg", trace.SpanKindServer)
	_, bd := tb.Start(bctx, "task.dispatch", trace.SpanKindClient)
	bd.SetAttributes(attribute.String("peer", "C"))
	_, bd2 := tb.Start(bctx, "task.dispatch", trace.SpanKindClient)
	bd2.SetAttributes(attribute.String("peer", "D"))
	_, cs := tc.Start(tracing.WithTraceparent(context.Background(), tracing.Traceparent(bctx)), "msg", trace.SpanKindServer)
	for _, s := range []tracing.Span{cs, bd2, bd, bs, d, root} {
		s.End(nil)
	}
	id := root.TraceID()
	ask := func(_ context.Context, p, tid string) ([]tracing.SpanRecord, error) {
		st := stores[p]
		if st == nil {
			return nil, errors.New("gone")
		}
		r, err := st.Answer(tracing.GetRequest{TraceID: tid}, 1<<20)
		if p == "C" {
			r.Spans = append(r.Spans, tracing.SpanRecord{SpanID: "f", Name: "forged", PeerID: "A", Start: t0, End: t0})
		}
		return r.Spans, err
	}
	tr, err := tracing.Assemble(context.Background(), id, stores["A"], "A", ask)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range tr.Spans {
		names = append(names, s.Node+":"+s.Name)
	}
	if fmt.Sprint(names) != "[alpha:task.submit alpha:task.dispatch bravo:msg bravo:task.dispatch bravo:task.dispatch charlie:msg]" {
		t.Fatalf("spans %v", names)
	}
	if fmt.Sprint(tr.Incomplete) != "[D]" || tr.Nodes() != 3 {
		t.Fatalf("incomplete %v nodes %d, want [D] 3", tr.Incomplete, tr.Nodes())
	}
	var b bytes.Buffer
	_ = tr.WriteTimeline(&b)
	if !strings.Contains(b.String(), "task.dispatch bravo ") || !strings.Contains(b.String(), "incomplete: no spans from D") {
		t.Fatalf("timeline:\n%s", b.String())
	}
	if _, err := tracing.Assemble(context.Background(), "4bf92f3577b34da6a3ce929d0e0e4736", stores["A"], "A", ask); !errors.Is(err, tracing.ErrTraceNotFound) {
		t.Fatalf("unknown trace: %v", err)
	}
	if _, err := tracing.Assemble(context.Background(), "nope", stores["A"], "A", ask); !errors.Is(err, tracing.ErrBadTraceID) {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := stores["A"].Answer(tracing.GetRequest{TraceID: "zz"}, 0); !errors.Is(err, tracing.ErrBadTraceID) {
		t.Fatalf("Answer of a bad id: %v", err)
	}
}

func BenchmarkSpans(b *testing.B) {
	tr := newTracing(b, 0)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: []float64{1}})
	ctx, root := tr.StartRoot(context.Background(), "root", trace.SpanKindServer, true)
	defer root.End(nil)
	b.Run("unsampled-start-end", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, s := tr.Start(context.Background(), "child", trace.SpanKindInternal)
			tracing.Observe(c, h, 0.1)
			s.End(nil)
		}
	})
	b.Run("sampled-start-end", func(b *testing.B) {
		// Traces of 8 spans, as a small remote task makes.
		b.ReportAllocs()
		i := 0
		pctx, parent := tr.StartRoot(context.Background(), "root", trace.SpanKindServer, true)
		for b.Loop() {
			if i++; i%8 == 0 {
				parent.End(nil)
				pctx, parent = tr.StartRoot(context.Background(), "root", trace.SpanKindServer, true)
			}
			c, s := tr.Start(pctx, "child", trace.SpanKindInternal)
			s.SetAttributes(attribute.String("storage.backend", "local"))
			tracing.Observe(c, h, 0.1)
			s.End(nil)
		}
	})
	b.Run("traceparent-out-in", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = tracing.WithTraceparent(context.Background(), tracing.Traceparent(ctx))
		}
	})
}

// TestTraceparentAgreesWithOTel checks the direct traceparent code against
// OpenTelemetry's own propagator, both ways, on valid and invalid inputs.
func TestTraceparentAgreesWithOTel(t *testing.T) {
	tr := newTracing(t, 0)
	ctx, s := tr.StartRoot(context.Background(), "r", trace.SpanKindServer, true)
	defer s.End(nil)
	var prop propagation.TraceContext
	c := propagation.MapCarrier{}
	prop.Inject(ctx, c)
	if got := tracing.Traceparent(ctx); got != c["traceparent"] {
		t.Fatalf("Traceparent = %q, OTel writes %q", got, c["traceparent"])
	}
	for _, in := range []string{
		c["traceparent"],
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
		"", "00", "garbage",
	} {
		want := trace.SpanContextFromContext(prop.Extract(context.Background(), propagation.MapCarrier{"traceparent": in}))
		got := trace.SpanContextFromContext(tracing.WithTraceparent(context.Background(), in))
		if !want.IsSampled() {
			want = trace.SpanContext{}
		}
		if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || got.IsSampled() != want.IsSampled() {
			t.Errorf("%q: got %v/%v/%v, OTel %v/%v/%v", in, got.TraceID(), got.SpanID(), got.IsSampled(), want.TraceID(), want.SpanID(), want.IsSampled())
		}
	}
}

// TestRemoteTraceContextBounded: a peer sending sampled trace contexts in a
// loop gets at most the burst honoured at once, another peer is not
// affected, and one trace keeps at most MaxSpansPerTrace spans.
func TestRemoteTraceContextBounded(t *testing.T) {
	tr, err := tracing.New(tracing.Config{RemoteRate: 2})
	if err != nil {
		t.Fatal(err)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	honoured := 0
	for range 100 {
		if trace.SpanContextFromContext(tr.FromPeer(context.Background(), "stranger", tp)).IsSampled() {
			honoured++
		}
	}
	if honoured != 20 { // burst of 10x the rate; the loop takes far less than a second
		t.Fatalf("%d of 100 trace contexts honoured at once, want the burst of 20", honoured)
	}
	if !trace.SpanContextFromContext(tr.FromPeer(context.Background(), "other", tp)).IsSampled() {
		t.Fatal("another peer's trace context refused")
	}

	st := tracing.NewStore(tracing.StoreConfig{})
	big := newTracingWithStore(t, st)
	ctx, root := big.StartRoot(context.Background(), "root", trace.SpanKindServer, true)
	for range tracing.MaxSpansPerTrace + 500 {
		_, s := big.Start(ctx, "child", trace.SpanKindInternal)
		s.End(nil)
	}
	root.End(nil)
	if _, spans := st.Len(); spans != tracing.MaxSpansPerTrace || st.DroppedSpans() != 501 {
		t.Fatalf("one trace holds %d spans, %d dropped; want %d and 501", spans, st.DroppedSpans(), tracing.MaxSpansPerTrace)
	}
}
