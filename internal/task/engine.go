package task

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// DefaultTimeout bounds one attempt of a task when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// RecordPrefix is the key prefix of task records: tasks/<id>.
const RecordPrefix = "tasks/"

// persistTimeout bounds one record write, which must happen even when the
// task's own context has ended.
const persistTimeout = 5 * time.Second

// errAttemptTimeout is the cancellation cause of an attempt that ran out of time.
var errAttemptTimeout = errors.New("timed out")

// Options configure an Engine.
type Options struct {
	// Timeout bounds each attempt, remote or local (default 30s).
	Timeout time.Duration
	// Logger receives task lifecycle logs (default: discarded).
	Logger *slog.Logger
	// Executors are registered after the built-in ones, replacing any of the
	// same type. Tests use it to add executors of their own.
	Executors []Executor
	// MaxConcurrent bounds the tasks executing at once (default
	// DefaultMaxConcurrent); MaxQueued bounds those waiting for a slot
	// (default DefaultMaxQueued, -1 for none). Beyond them tasks are refused
	// at once with code busy.
	MaxConcurrent int
	MaxQueued     int
	// MaxConcurrentSearches bounds the index.search scans running at once,
	// so memory stays bounded whatever the concurrency (default
	// DefaultMaxConcurrentSearches).
	MaxConcurrentSearches int
	// MaxMessageBytes bounds a result sent to a peer and MaxValueBytes a
	// stored record (0: no limit); executors refuse inputs whose output
	// would exceed them (code too_large).
	MaxMessageBytes int
	MaxValueBytes   int
	// Retention and MaxRecords bound the task records kept (defaults
	// DefaultRetention and DefaultMaxRecords); see retention.go.
	Retention  time.Duration
	MaxRecords int
	// RetentionInterval is the time between retention passes (default
	// DefaultRetentionInterval).
	RetentionInterval time.Duration
	// Tracing, when set, traces sampled tasks: task.submit for the life of
	// a submitted task, task.dispatch for each remote attempt, task.queue
	// for the wait for a slot and task.execute for each execution here.
	Tracing *tracing.Tracing
}

// SubmitRequest is a task submitted to this node.
type SubmitRequest struct {
	Type string `json:"type"`
	// Input is the task input, a JSON object.
	Input json.RawMessage `json:"input"`
	// Peer, when set, is the peer that must run the task.
	Peer peer.ID `json:"peer,omitempty"`
	// Trace forces the task to be traced (task submit --trace), whatever
	// tracing.sample_ratio says.
	Trace bool `json:"trace,omitempty"`
}

// Engine runs tasks: it accepts submissions, dispatches each to a peer or
// runs it locally (dispatch.go), persists every state change under
// tasks/<id>, executes requests from remote peers (execute.go), and records
// tasks_total and task_duration_seconds for every execution on this node
// (every executor is registered measured, instrument.go). It is safe for
// concurrent use.
type Engine struct {
	store   storage.Store
	tr      Transport
	self    peer.ID
	timeout time.Duration
	log     *slog.Logger
	execs   map[string]registered
	types   []string
	met     *metrics.Tasks
	unknown *instrumented // measures executions of types without an executor
	adm     *admission
	lim     limits
	trc     *tracing.Tracing

	base          context.Context // cancelled (cause ErrClosed) when Close gives up waiting
	cancel        context.CancelCauseFunc
	stopRetention context.CancelFunc
	// wg tracks every goroutine and call the engine runs: the retention
	// loop, submitted tasks and Execute calls. Close waits for it.
	wg sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	pending  map[string]struct{} // ids of tasks submitted here and not yet final
	inflight map[peer.ID]int     // remote calls in flight, by peer
}

// NewEngine returns an engine over store (records and index data), recording
// into m, reaching peers through tr (nil: everything runs locally) and
// identifying itself as self.
func NewEngine(store storage.Store, m *metrics.Tasks, tr Transport, self peer.ID, opts Options) *Engine {
	if m == nil {
		m = metrics.NewTasks(prometheus.NewRegistry(), MetricLabels())
	}
	e := &Engine{
		store:    store,
		tr:       tr,
		self:     self,
		timeout:  cmp.Or(opts.Timeout, DefaultTimeout),
		log:      opts.Logger,
		execs:    make(map[string]registered),
		met:      m,
		pending:  make(map[string]struct{}),
		inflight: make(map[peer.ID]int),
		lim:      newLimits(opts.MaxMessageBytes, opts.MaxValueBytes),
		trc:      opts.Tracing,
	}
	maxQueued := cmp.Or(opts.MaxQueued, DefaultMaxQueued)
	if maxQueued < 0 {
		maxQueued = 0
	}
	e.adm = newAdmission(cmp.Or(opts.MaxConcurrent, DefaultMaxConcurrent()), maxQueued, m.Running, m.Queued)
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.base, e.cancel = context.WithCancelCause(context.Background())
	builtin := []Executor{ChunkExecutor{}, EmbedExecutor{}, IndexAddExecutor{Store: store}, IndexSearchExecutor{Store: store, Limiter: NewSearchLimiter(cmp.Or(opts.MaxConcurrentSearches, DefaultMaxConcurrentSearches))}}
	e.unknown = instrument(unknownExecutor(metrics.Unknown), m, e.trc)
	for _, x := range append(builtin, opts.Executors...) {
		e.register(x)
	}
	for t := range e.execs {
		e.types = append(e.types, t)
	}
	slices.Sort(e.types)
	r := &retainer{
		store: store, page: listPager(store),
		retention: cmp.Or(opts.Retention, DefaultRetention), maxRecords: cmp.Or(opts.MaxRecords, DefaultMaxRecords),
		interval: cmp.Or(opts.RetentionInterval, DefaultRetentionInterval),
		expired:  m.RecordsRemoved.WithLabelValues(removedExpired), overLimit: m.RecordsRemoved.WithLabelValues(removedOverLimit),
		now: time.Now,
	}
	var rctx context.Context
	rctx, e.stopRetention = context.WithCancel(e.base)
	e.wg.Go(func() { r.run(rctx, func(err error) { e.log.Warn("task retention pass failed", "err", err) }) })
	return e
}

// Types returns the task types this node executes, sorted: the capabilities
// it advertises to peers.
func (e *Engine) Types() []string { return slices.Clone(e.types) }

// Submit validates a task, stores its queued record and starts it in the
// background. It returns ErrUnknownType, ErrBadInput (input not a JSON
// object), ErrNoPeer (a peer given but no transport) or ErrClosed.
func (e *Engine) Submit(ctx context.Context, req SubmitRequest) (Record, error) {
	if _, ok := e.execs[req.Type]; !ok {
		return Record{}, fmt.Errorf("%w: %q", ErrUnknownType, req.Type)
	}
	if !isObject(req.Input) {
		return Record{}, fmt.Errorf("%w: input must be a JSON object", ErrBadInput)
	}
	if req.Peer != "" && req.Peer != e.self && e.tr == nil {
		return Record{}, fmt.Errorf("%w: peer %s requested but this node has no transport", ErrNoPeer, req.Peer)
	}
	if e.adm.full() && (req.Peer == "" || req.Peer == e.self) && len(e.offering(req.Type)) == 0 {
		e.execs[req.Type].run.refuse(reasonBusy)
		return Record{}, ErrBusy
	}
	rec := Record{
		ID:        newID(),
		Type:      req.Type,
		State:     StateQueued,
		CreatedAt: time.Now().UTC(),
		Origin:    e.self.String(),
	}
	// The span lives as long as the task; its context goes to run.
	tctx, span := e.trc.StartRoot(ctx, "task.submit", trace.SpanKindInternal, req.Trace)
	if span.Recording() {
		rec.TraceID = span.TraceID()
		span.SetAttributes(attribute.String("task.type", req.Type), attribute.String("task.id", rec.ID))
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		span.End(ErrClosed)
		return Record{}, ErrClosed
	}
	e.pending[rec.ID] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	if err := e.persist(tctx, rec); err != nil {
		e.mu.Lock()
		delete(e.pending, rec.ID)
		e.mu.Unlock()
		e.wg.Done()
		span.End(err)
		return Record{}, err
	}
	go e.run(tracing.Carry(e.base, tctx), span, rec, req)
	return rec, nil
}

// Get returns the stored record of task id; ErrNotFound when there is none.
func (e *Engine) Get(ctx context.Context, id string) (Record, error) {
	if !validID(id) {
		return Record{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	b, err := e.store.Get(ctx, RecordPrefix+id, storage.Strong)
	if errors.Is(err, storage.ErrNotFound) {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Record{}, fmt.Errorf("task: get %s: %w", id, err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, fmt.Errorf("task: decode record %s: %w", id, err)
	}
	return rec, nil
}

// Close stops accepting tasks, stops the retention loop and waits for the
// tasks and Execute calls in flight until ctx is done; then it cancels them
// (their records end failed, code closed), waits for every executor and
// transport call to return and the records to be written, and returns
// ctx's error. Nothing the engine started runs after Close returns.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.stopRetention()
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		e.cancel(ErrClosed)
		return nil
	case <-ctx.Done():
		e.cancel(ErrClosed)
		<-done
		return fmt.Errorf("task: close: %w", ctx.Err())
	}
}

// enter registers an Execute call with the wait group; false once the
// engine is closed.
func (e *Engine) enter() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.wg.Add(1)
	return true
}

// Recover marks the stored records of tasks submitted to this node that are
// not final, and not running in this engine, as failed (code interrupted):
// they were cut off when the node last stopped. The node calls it once at
// start. It returns how many records it changed.
func (e *Engine) Recover(ctx context.Context) (int, error) {
	n := 0
	err := storage.Each(ctx, e.store, RecordPrefix, storage.Strong, 0, func(kv storage.KV) error {
		var rec Record
		if json.Unmarshal(kv.Value, &rec) != nil || rec.State.Final() || rec.Origin != e.self.String() {
			return nil
		}
		e.mu.Lock()
		_, running := e.pending[rec.ID]
		e.mu.Unlock()
		if running {
			return nil
		}
		rec = finish(rec, nil, CodeInterrupted, errors.New("interrupted: the node stopped before the task finished"))
		if err := e.persist(ctx, rec); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("task: recover: %w", err)
	}
	return n, nil
}

// run drives one submitted task to a final state: fanned out when its
// executor is a Merger and peers offer it, else dispatched.
//
// ctx is the engine's base context, carrying the task.submit span, which
// ends with the task.
func (e *Engine) run(ctx context.Context, span tracing.Span, rec Record, req SubmitRequest) {
	defer e.wg.Done()
	if m, peers := e.fanOutPeers(req); len(peers) > 0 {
		rec = e.fanOut(ctx, rec, req, m, peers)
	} else {
		rec = e.dispatch(ctx, rec, req)
	}
	rec = e.complete(ctx, rec)
	if rec.State == StateFailed {
		span.SetAttributes(attribute.String("task.code", rec.Code))
		span.End(errors.New(rec.Error))
	} else {
		span.End(nil)
	}
}

// complete persists the final record, forgets the task and returns the
// record as stored.
func (e *Engine) complete(ctx context.Context, rec Record) Record {
	rec = e.persistFinal(ctx, rec)
	e.mu.Lock()
	delete(e.pending, rec.ID)
	e.mu.Unlock()
	e.log.Info("task finished", "id", rec.ID, "type", rec.Type, "state", rec.State, "peer", rec.Peer,
		"attempts", rec.Attempts, "code", rec.Code, "duration", rec.FinishedAt.Sub(rec.StartedAt))
	return rec
}

// finish sets rec's final state from a result or a failure.
func finish(rec Record, res json.RawMessage, code string, err error) Record {
	rec.FinishedAt = time.Now().UTC()
	if rec.StartedAt.IsZero() {
		rec.StartedAt = rec.FinishedAt
	}
	if err != nil {
		rec.State, rec.Result, rec.Error, rec.Code = StateFailed, nil, oneline.Flatten(err.Error()), cmp.Or(code, CodeError)
		return rec
	}
	rec.State, rec.Result, rec.Error, rec.Code = StateSucceeded, res, "", ""
	return rec
}

// persistRunning stores an intermediate state; a failure is logged, not fatal.
func (e *Engine) persistRunning(ctx context.Context, rec Record) {
	if err := e.persist(ctx, rec); err != nil {
		e.log.Warn("task record not stored", "id", rec.ID, "state", rec.State, "err", err)
	}
}

// persist writes rec under tasks/<id> at Strong consistency. It proceeds
// when ctx is cancelled (a final state must still be written), bounded by
// persistTimeout.
func (e *Engine) persist(ctx context.Context, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("task: encode record %s: %w", rec.ID, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), persistTimeout)
	defer cancel()
	if err := e.store.Put(ctx, RecordPrefix+rec.ID, b, storage.Strong); err != nil {
		return fmt.Errorf("task: store record %s: %w", rec.ID, err)
	}
	return nil
}

// newID returns a random task id: 16 bytes, hex-encoded.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// validID reports whether id has the form newID produces.
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}
