// Package tracing follows one request or task through every node it touches
// (DESIGN.md section 10): an OpenTelemetry tracer provider per node, the
// sampling decision made once at the root of a trace, W3C trace context in
// and out of the wire envelope, exemplars on duration histograms, and a
// bounded store of this node's finished spans that the node serves to
// peers assembling a timeline.
//
// Tracing costs nothing on the paths it does not sample: Start creates a
// span only when the context already carries a sampled one, and StartRoot
// draws the sampling decision itself before creating anything, so an
// unsampled operation allocates nothing and pays one context lookup. A nil
// *Tracing is valid and never traces.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/peerlimit"
)

// Defaults of the tracing.* configuration keys.
const (
	DefaultSampleRatio = 0.01
	DefaultMaxSpans    = 100_000
	DefaultRetention   = 48 * time.Hour
	// DefaultRemoteRate is how many messages a second one peer may have
	// traced here by sending a sampled trace context (bursts of 10x).
	DefaultRemoteRate = 10
)

// ErrBadTraceID reports a trace id that is not 32 hex digits (or all zero).
var ErrBadTraceID = errors.New("trace id must be 32 hex digits, not all zero")

// Config configures a node's tracing.
type Config struct {
	// SampleRatio is the share of new traces that are sampled (0 to 1).
	SampleRatio float64
	// MaxSpans bounds the spans kept in the store (0: DefaultMaxSpans).
	MaxSpans int
	// Retention is how long finished spans are kept (0: DefaultRetention).
	Retention time.Duration
	// OTLPEndpoint, when set, is the base URL of an OTLP/HTTP collector
	// (http://host:4318); spans go there as well as to the store. A URL
	// without a path gets the standard /v1/traces.
	OTLPEndpoint string
	// Node and PeerID name this node in the spans it stores and exports.
	Node, PeerID string
	// Version is the node's version, exported as service.version.
	Version string
	// Store receives the finished spans (nil: a new Store bounded by
	// MaxSpans and Retention).
	Store *Store
	// RemoteRate bounds, per peer and per second, the messages whose
	// sampled trace context this node honours (0: DefaultRemoteRate);
	// beyond it a message is handled untraced. A peer cannot make the node
	// record spans faster than this.
	RemoteRate float64
}

// Tracing is a node's tracer, span store and sampling policy.
type Tracing struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	store  *Store
	ratio  float64
	remote *peerlimit.Limits
}

// New builds the tracing of one node. It does not connect anywhere: the
// OTLP exporter dials on its first export.
func New(cfg Config) (*Tracing, error) {
	if cfg.SampleRatio < 0 || cfg.SampleRatio > 1 {
		return nil, fmt.Errorf("tracing: sample ratio %v is not between 0 and 1", cfg.SampleRatio)
	}
	store := cfg.Store
	if store == nil {
		store = NewStore(StoreConfig{MaxSpans: cfg.MaxSpans, Retention: cfg.Retention, Node: cfg.Node, PeerID: cfg.PeerID})
	}
	res := resource.NewSchemaless(
		semconv.ServiceName("p2p-agent"),
		semconv.ServiceVersion(cfg.Version),
		semconv.ServiceInstanceID(cfg.PeerID),
		attribute.String("node.name", cfg.Node),
	)
	opts := []sdktrace.TracerProviderOption{
		// Whether to trace is decided by StartRoot before a root span is
		// created; everything below a sampled span is sampled too.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
		sdktrace.WithResource(res),
		sdktrace.WithSpanProcessor(store),
	}
	if cfg.OTLPEndpoint != "" {
		u, err := otlpURL(cfg.OTLPEndpoint)
		if err != nil {
			return nil, err
		}
		exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u))
		if err != nil {
			return nil, fmt.Errorf("tracing: otlp exporter %s: %w", u, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	remote := cfg.RemoteRate
	if remote <= 0 {
		remote = DefaultRemoteRate
	}
	return &Tracing{
		tp: tp, tracer: tp.Tracer("github.com/p2p-ai-agents/p2p-agent"), store: store, ratio: cfg.SampleRatio,
		remote: peerlimit.New(remote, int(10*remote), 0),
	}, nil
}

// otlpURL checks an OTLP/HTTP base URL and appends /v1/traces when it has
// no path.
func otlpURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("tracing: otlp endpoint %q is not an http(s)://host:port URL", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// Store returns the node's span store (nil for a nil Tracing).
func (t *Tracing) Store() *Store {
	if t == nil {
		return nil
	}
	return t.store
}

// Shutdown flushes the exporter, if any, and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing shutdown: %w", err)
	}
	return nil
}

// Span is a span that may be absent: every method is a no-op on the zero
// value, which is what the unsampled paths get.
type Span struct{ s trace.Span }

// Recording reports whether the span records (it is sampled).
func (s Span) Recording() bool { return s.s != nil }

// TraceID returns the trace id as 32 hex digits, or "" for no span.
func (s Span) TraceID() string {
	if s.s == nil {
		return ""
	}
	return s.s.SpanContext().TraceID().String()
}

// SetAttributes adds attributes to a recording span.
func (s Span) SetAttributes(kv ...attribute.KeyValue) {
	if s.s != nil {
		s.s.SetAttributes(kv...)
	}
}

// End ends the span, marking it failed with err when err is not nil.
func (s Span) End(err error) {
	if s.s == nil {
		return
	}
	if err != nil {
		s.s.SetStatus(codes.Error, err.Error())
	}
	s.s.End()
}

// Start starts a span named name as a child of the sampled span in ctx. When
// ctx carries no sampled span it returns ctx and a zero Span, allocating
// nothing.
func (t *Tracing) Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, Span) {
	if t == nil || !trace.SpanContextFromContext(ctx).IsSampled() {
		return ctx, Span{}
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(kind))
	return ctx, Span{s: s}
}

// StartRoot starts a span where a trace may begin (an API request, a task
// submission): as a child when ctx carries a sampled span, else as a new
// root when force is set or with probability SampleRatio. Otherwise it
// returns ctx and a zero Span, allocating nothing.
func (t *Tracing) StartRoot(ctx context.Context, name string, kind trace.SpanKind, force bool) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	if trace.SpanContextFromContext(ctx).IsSampled() {
		return t.Start(ctx, name, kind)
	}
	if !force && (t.ratio <= 0 || rand.Float64() >= t.ratio) {
		return ctx, Span{}
	}
	ctx, s := t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithNewRoot())
	return ctx, Span{s: s}
}

// Carry returns dst with the span of src as its current span when that span
// is sampled, else dst: work that outlives a request (a task running in the
// background) keeps the request's trace.
func Carry(dst, src context.Context) context.Context {
	sp := trace.SpanFromContext(src)
	if !sp.SpanContext().IsSampled() {
		return dst
	}
	return trace.ContextWithSpan(dst, sp)
}

// FromPeer returns ctx with the remote parent of traceparent, received from
// peer, when it is valid and sampled and peer is within its rate
// (Config.RemoteRate); otherwise ctx unchanged, and the message is handled
// untraced. A nil Tracing honours nothing.
func (t *Tracing) FromPeer(ctx context.Context, peer, traceparent string) context.Context {
	if t == nil || traceparent == "" {
		return ctx
	}
	rctx := WithTraceparent(ctx, traceparent)
	if rctx == ctx || !t.remote.Allow(peer, time.Now()) {
		return ctx
	}
	return rctx
}

// TraceID returns the id of the sampled trace in ctx, or "".
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return ""
	}
	return sc.TraceID().String()
}

// ParseTraceID checks a trace id given by a user or a peer.
func ParseTraceID(s string) (trace.TraceID, error) {
	id, err := trace.TraceIDFromHex(strings.ToLower(s))
	if err != nil || !id.IsValid() {
		return trace.TraceID{}, fmt.Errorf("%w: %q", ErrBadTraceID, s)
	}
	return id, nil
}
