package tracing

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// SpanRecord is one finished span as a node stores it and sends it to
// peers (the trace.spans message and GET /api/v1/traces/{id}).
type SpanRecord struct {
	TraceID    string            `json:"trace_id,omitempty"`
	SpanID     string            `json:"span_id"`
	ParentID   string            `json:"parent_span_id,omitempty"`
	Name       string            `json:"name"`
	PeerID     string            `json:"peer_id"`
	Node       string            `json:"node"`
	Start      time.Time         `json:"start"`
	End        time.Time         `json:"end"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Error      string            `json:"error,omitempty"`
}

// Duration is End - Start.
func (s SpanRecord) Duration() time.Duration { return s.End.Sub(s.Start) }

// StoreConfig bounds a Store.
type StoreConfig struct {
	MaxSpans  int           // 0: DefaultMaxSpans
	Retention time.Duration // 0: DefaultRetention
	// Node and PeerID are written into every stored span.
	Node, PeerID string
	// Now is the clock (nil: time.Now), for tests of retention.
	Now func() time.Time
}

// Store keeps this node's finished spans, grouped by trace, within
// MaxSpans spans and Retention: when either is exceeded, whole traces are
// dropped oldest first. It is an OpenTelemetry SpanProcessor, so every span
// the node ends is stored without the code that made it knowing.
type Store struct {
	cfg StoreConfig

	mu     sync.Mutex
	traces map[trace.TraceID]*storedTrace
	order  []trace.TraceID // by first span stored, oldest first
	head   int             // order[:head] are already dropped
	spans  int
	// dropped counts traces removed to stay within the bounds, and
	// droppedSpans the spans refused by MaxSpansPerTrace.
	dropped, droppedSpans uint64
}

type storedTrace struct {
	first time.Time // when its first span was stored
	spans []SpanRecord
}

var _ sdktrace.SpanProcessor = (*Store)(nil)

// NewStore returns an empty store.
func NewStore(cfg StoreConfig) *Store {
	if cfg.MaxSpans <= 0 {
		cfg.MaxSpans = DefaultMaxSpans
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, traces: make(map[trace.TraceID]*storedTrace)}
}

// OnStart does nothing: only finished spans are stored.
func (*Store) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd stores a finished, sampled span.
func (s *Store) OnEnd(ro sdktrace.ReadOnlySpan) {
	sc := ro.SpanContext()
	if !sc.IsSampled() {
		return
	}
	rec := SpanRecord{
		SpanID: sc.SpanID().String(),
		Name:   ro.Name(),
		PeerID: s.cfg.PeerID,
		Node:   s.cfg.Node,
		Start:  ro.StartTime(),
		End:    ro.EndTime(),
	}
	if p := ro.Parent(); p.IsValid() {
		rec.ParentID = p.SpanID().String()
	}
	if attrs := ro.Attributes(); len(attrs) > 0 {
		rec.Attributes = make(map[string]string, len(attrs))
		for _, kv := range attrs {
			rec.Attributes[string(kv.Key)] = kv.Value.String()
		}
	}
	if st := ro.Status(); st.Code == codes.Error {
		rec.Error = st.Description
		if rec.Error == "" {
			rec.Error = "error"
		}
	}
	s.add(sc.TraceID(), rec)
}

// MaxSpansPerTrace bounds the spans kept of one trace: a peer choosing the
// trace id of the messages it sends cannot grow one trace until it fills the
// store. Spans beyond it are dropped (and counted in Dropped).
const MaxSpansPerTrace = 1000

func (s *Store) add(id trace.TraceID, rec SpanRecord) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.traces[id]
	if t != nil && len(t.spans) >= MaxSpansPerTrace {
		s.droppedSpans++
		return
	}
	if t == nil {
		t = &storedTrace{first: now, spans: make([]SpanRecord, 0, 8)}
		s.traces[id] = t
		s.order = append(s.order, id)
	}
	t.spans = append(t.spans, rec)
	s.spans++
	s.trimLocked(now)
}

// trimLocked drops whole traces, oldest first, while the store holds more
// than MaxSpans spans or its oldest trace is past Retention. The trace just
// added is kept even when it alone exceeds MaxSpans.
func (s *Store) trimLocked(now time.Time) {
	for s.head < len(s.order)-1 {
		oldest := s.traces[s.order[s.head]]
		if s.spans <= s.cfg.MaxSpans && now.Sub(oldest.first) <= s.cfg.Retention {
			break
		}
		s.spans -= len(oldest.spans)
		delete(s.traces, s.order[s.head])
		s.order[s.head] = trace.TraceID{}
		s.head++
		s.dropped++
	}
	// Compact the order slice once half of it is dropped entries.
	if s.head > 1024 && s.head*2 > len(s.order) {
		s.order = slices.Clone(s.order[s.head:])
		s.head = 0
	}
}

// Spans returns copies of the stored spans of trace id, oldest first, and
// whether the store has the trace. Spans past Retention are not returned.
func (s *Store) Spans(id trace.TraceID) ([]SpanRecord, bool) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.traces[id]
	if t == nil || now.Sub(t.first) > s.cfg.Retention {
		return nil, false
	}
	out := slices.Clone(t.spans)
	for i := range out {
		out[i].TraceID = id.String()
	}
	return out, true
}

// Len returns the number of stored traces and spans.
func (s *Store) Len() (traces, spans int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.traces), s.spans
}

// Dropped returns how many traces were removed to stay within the bounds.
func (s *Store) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// DroppedSpans returns how many spans MaxSpansPerTrace refused.
func (s *Store) DroppedSpans() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.droppedSpans
}

// Shutdown does nothing: the store lives as long as its node.
func (*Store) Shutdown(context.Context) error { return nil }

// ForceFlush does nothing: spans are stored as they end.
func (*Store) ForceFlush(context.Context) error { return nil }
