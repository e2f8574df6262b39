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
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
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
}

// SubmitRequest is a task submitted to this node.
type SubmitRequest struct {
	Type string `json:"type"`
	// Input is the task input, a JSON object.
	Input json.RawMessage `json:"input"`
	// Peer, when set, is the peer that must run the task.
	Peer peer.ID `json:"peer,omitempty"`
}

// Engine runs tasks: it accepts submissions, dispatches each to a peer or
// runs it locally, persists every state change under tasks/<id>, executes
// requests from remote peers, and records tasks_total and
// task_duration_seconds for every execution on this node. It is safe for
// concurrent use.
type Engine struct {
	store    storage.Store
	tr       Transport
	self     peer.ID
	timeout  time.Duration
	log      *slog.Logger
	execs    map[string]Executor
	types    []string
	met      map[string]*typeMetrics // by metric label (closed set + unknown)
	adm      *admission
	lim      limits
	retained chan struct{} // closed when the retention loop has stopped

	base   context.Context // cancelled (cause ErrClosed) when Close gives up waiting
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	pending  map[string]*pending // task id -> tasks submitted here and not yet final
	inflight map[peer.ID]int     // remote calls in flight, by peer
}

// pending is a task submitted here that has not reached a final state.
type pending struct {
	done  chan struct{} // closed once final is set and persisted
	final Record
}

// typeMetrics are the label children of one task type, resolved once.
type typeMetrics struct {
	succeeded, failed, cancelled prometheus.Counter
	duration                     prometheus.Observer
	busy, tooLarge               prometheus.Counter
}

// NewEngine returns an engine over store (records and index data), recording
// into m, reaching peers through tr (nil: everything runs locally) and
// identifying itself as self.
func NewEngine(store storage.Store, m *metrics.Tasks, tr Transport, self peer.ID, opts Options) *Engine {
	if m == nil {
		m = metrics.NewTasks(prometheus.NewRegistry())
	}
	e := &Engine{
		store:    store,
		tr:       tr,
		self:     self,
		timeout:  cmp.Or(opts.Timeout, DefaultTimeout),
		log:      opts.Logger,
		execs:    make(map[string]Executor),
		met:      make(map[string]*typeMetrics),
		pending:  make(map[string]*pending),
		inflight: make(map[peer.ID]int),
		lim:      newLimits(opts.MaxMessageBytes, opts.MaxValueBytes),
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
	for _, x := range append(builtin, opts.Executors...) {
		e.execs[x.Type()] = x
	}
	for t := range e.execs {
		e.types = append(e.types, t)
	}
	slices.Sort(e.types)
	e.retained = make(chan struct{})
	r := &retainer{
		store: store, page: listPager(store),
		retention: cmp.Or(opts.Retention, DefaultRetention), maxRecords: cmp.Or(opts.MaxRecords, DefaultMaxRecords),
		interval: cmp.Or(opts.RetentionInterval, DefaultRetentionInterval),
		expired:  m.RecordsRemoved.WithLabelValues("expired"), overLimit: m.RecordsRemoved.WithLabelValues("over_limit"),
		now: time.Now,
	}
	go r.run(e.base, e.retained, func(err error) { e.log.Warn("task retention pass failed", "err", err) })
	for _, t := range append(slices.Clone(metrics.TaskTypes), metrics.Unknown) {
		e.met[t] = &typeMetrics{
			succeeded: m.Total.WithLabelValues(t, "succeeded"),
			failed:    m.Total.WithLabelValues(t, "failed"),
			cancelled: m.Total.WithLabelValues(t, "cancelled"),
			duration:  m.Duration.WithLabelValues(t),
			busy:      m.Refused.WithLabelValues(t, "busy"),
			tooLarge:  m.Refused.WithLabelValues(t, "too_large"),
		}
	}
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
		e.met[metrics.TaskType(req.Type)].busy.Inc()
		return Record{}, ErrBusy
	}
	rec := Record{
		ID:        newID(),
		Type:      req.Type,
		State:     StateQueued,
		CreatedAt: time.Now().UTC(),
		Origin:    e.self.String(),
	}
	p := &pending{done: make(chan struct{})}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return Record{}, ErrClosed
	}
	e.pending[rec.ID] = p
	e.wg.Add(1)
	e.mu.Unlock()
	if err := e.persist(ctx, rec); err != nil {
		e.mu.Lock()
		delete(e.pending, rec.ID)
		e.mu.Unlock()
		e.wg.Done()
		return Record{}, err
	}
	go e.run(p, rec, req)
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

// Wait returns the record of task id once it is final, or the last stored
// record and ctx's error when ctx ends first. Tasks running in this engine
// are awaited on their notification channel; others (another node sharing
// the store) are re-read from the store with a growing delay.
func (e *Engine) Wait(ctx context.Context, id string) (Record, error) {
	e.mu.Lock()
	p := e.pending[id]
	e.mu.Unlock()
	if p != nil {
		select {
		case <-p.done:
			return p.final, nil
		case <-ctx.Done():
			rec, _ := e.Get(context.WithoutCancel(ctx), id)
			return rec, ctx.Err()
		}
	}
	delay := 20 * time.Millisecond
	var last Record
	for {
		rec, err := e.Get(ctx, id)
		switch {
		case err != nil && ctx.Err() != nil:
			return last, ctx.Err()
		case err != nil || rec.State.Final():
			return rec, err
		}
		last = rec
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return rec, ctx.Err()
		}
		delay = min(2*delay, time.Second)
	}
}

// Execute runs req in this process on behalf of a remote peer and returns
// the final record; the node registers it as the task.request handler. It
// never panics: a panicking executor fails its task. Cancelling ctx (the
// submitter gave up) stops the executor with outcome cancelled. The record
// is not stored here: the submitting node keeps it.
func (e *Engine) Execute(ctx context.Context, req Request) Record {
	id := req.ID
	if !validID(id) {
		id = newID()
	}
	now := time.Now().UTC()
	rec := Record{ID: id, Type: req.Type, CreatedAt: now, StartedAt: now, Peer: e.self.String(), Attempts: 1}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return finish(rec, nil, CodeClosed, ErrClosed)
	}
	e.wg.Add(1)
	e.mu.Unlock()
	defer e.wg.Done()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(e.base, func() { cancel(context.Cause(e.base)) })
	defer stop()
	if req.TimeoutMS > 0 {
		var c context.CancelFunc
		ctx, c = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
		defer c()
	}
	res, code, err := e.execute(ctx, req.Type, req.Input, cmp.Or(peerOf(ctx), "remote"), e.lim.remote)
	return finish(rec, res, code, err)
}

// Close stops accepting tasks and waits for those in flight until ctx is
// done; then it cancels them (their records end failed, code closed),
// waits for them to record that, and returns ctx's error.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		e.cancel(ErrClosed)
		<-e.retained
		return nil
	case <-ctx.Done():
		e.cancel(ErrClosed)
		<-done
		<-e.retained
		return fmt.Errorf("task: close: %w", ctx.Err())
	}
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

// run drives one submitted task to a final state.
func (e *Engine) run(p *pending, rec Record, req SubmitRequest) {
	defer e.wg.Done()
	ctx := e.base
	if req.Type == TypeSearch && req.Peer == "" && e.tr != nil {
		if peers := e.offering(TypeSearch); len(peers) > 0 {
			rec = e.fanOut(ctx, rec, req, peers)
			e.complete(p, rec)
			return
		}
	}
	rec = e.dispatch(ctx, rec, req)
	e.complete(p, rec)
}

// complete persists the final record and wakes waiters.
func (e *Engine) complete(p *pending, rec Record) {
	rec = e.persistFinal(rec)
	p.final = rec
	close(p.done)
	e.mu.Lock()
	delete(e.pending, rec.ID)
	e.mu.Unlock()
	e.log.Info("task finished", "id", rec.ID, "type", rec.Type, "state", rec.State, "peer", rec.Peer,
		"attempts", rec.Attempts, "code", rec.Code, "duration", rec.FinishedAt.Sub(rec.StartedAt))
}

// dispatch runs a task on the requested peer (this node when it names
// itself), else on the least busy peer offering its type, else locally. A
// remote attempt that fails for want of an answer is retried once: on the
// requested peer again, else on another offering peer, else locally.
func (e *Engine) dispatch(ctx context.Context, rec Record, req SubmitRequest) Record {
	wire := Request{ID: rec.ID, Type: req.Type, Input: req.Input, TimeoutMS: e.timeout.Milliseconds()}
	var tried []peer.ID
	var failures []string
	maxAttempts := 2
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		target := req.Peer
		if attempt == 3 {
			target = e.self // every peer asked was busy: run here
		}
		if target == "" {
			target = e.pick(req.Type, tried)
		}
		rec.Attempts = attempt
		rec.State = StateRunning
		if rec.StartedAt.IsZero() {
			rec.StartedAt = time.Now().UTC()
		}
		if target == "" || target == e.self {
			rec.Peer = e.self.String()
			e.persistRunning(rec)
			actx, cancel := context.WithTimeoutCause(ctx, e.timeout, errAttemptTimeout)
			res, code, err := e.execute(actx, req.Type, req.Input, "", e.lim.local)
			cancel()
			if err != nil && len(failures) > 0 {
				err = fmt.Errorf("%s; attempt %d locally: %w", strings.Join(failures, "; "), attempt, err)
			}
			return finish(rec, res, code, err)
		}
		rec.Peer = target.String()
		e.persistRunning(rec)
		tried = append(tried, target)
		remote, err := e.call(ctx, target, wire)
		if err == nil && remote.State == StateSucceeded {
			return finish(rec, remote.Result, "", nil)
		}
		retry, code, msg := classify(remote, err)
		failures = append(failures, fmt.Sprintf("attempt %d on peer %s: %s", attempt, target, msg))
		if code == CodeBusy && req.Peer == "" {
			maxAttempts = 3
		}
		if !retry || attempt == maxAttempts || ctx.Err() != nil {
			if ctx.Err() != nil {
				code = CodeClosed
			}
			return finish(rec, nil, code, errors.New(strings.Join(failures, "; ")))
		}
		e.log.Warn("task attempt failed, retrying", "id", rec.ID, "type", rec.Type, "peer", target, "err", msg)
	}
	panic("unreachable")
}

// classify decides whether a failed remote attempt is worth retrying
// elsewhere, and with which code and message it failed.
func classify(remote Record, err error) (retry bool, code, msg string) {
	switch {
	case errors.Is(err, errAttemptTimeout):
		return true, CodeTimeout, err.Error()
	case errors.Is(err, ErrBadInput):
		return false, CodeBadInput, err.Error()
	case err != nil:
		return true, CodeUnavailable, err.Error()
	case remote.State != StateFailed:
		return true, CodeUnavailable, fmt.Sprintf("peer answered with a %q record", remote.State)
	case remote.Code == CodeUnknownType || remote.Code == CodeClosed || remote.Code == CodeBusy:
		return true, remote.Code, remote.Error
	case remote.Code == CodeCancelled:
		// The peer stopped at our deadline (or lost our stream) first.
		return true, CodeTimeout, remote.Error
	}
	return false, cmp.Or(remote.Code, CodeError), remote.Error
}

// call sends one attempt to p with the attempt timeout. It returns when the
// deadline passes even if the transport does not honour ctx.
func (e *Engine) call(ctx context.Context, p peer.ID, req Request) (Record, error) {
	e.mu.Lock()
	e.inflight[p]++
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.inflight[p]--; e.inflight[p] <= 0 {
			delete(e.inflight, p)
		}
		e.mu.Unlock()
	}()
	actx, cancel := context.WithTimeoutCause(ctx, e.timeout, errAttemptTimeout)
	defer cancel()
	type answer struct {
		rec Record
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		rec, err := e.tr.Call(actx, p, req)
		ch <- answer{rec, err}
	}()
	var a answer
	select {
	case a = <-ch:
	case <-actx.Done():
		a.err = actx.Err()
	}
	if a.err != nil && actx.Err() != nil {
		if errors.Is(context.Cause(actx), errAttemptTimeout) {
			return Record{}, fmt.Errorf("%w after %v", errAttemptTimeout, e.timeout)
		}
		return Record{}, fmt.Errorf("%w: %w", context.Cause(actx), a.err)
	}
	return a.rec, a.err
}

// offering returns the connected peers other than self that offer typ.
func (e *Engine) offering(typ string) []peer.ID {
	if e.tr == nil {
		return nil
	}
	peers := e.tr.PeersOffering(typ)
	return slices.DeleteFunc(slices.Clone(peers), func(p peer.ID) bool { return p == e.self || p == "" })
}

// pick returns the offering peer not yet tried with the fewest calls in
// flight from this node (first listed on a tie), or "" when there is none.
func (e *Engine) pick(typ string, tried []peer.ID) peer.ID {
	var best peer.ID
	bestN := -1
	peers := e.offering(typ)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range peers {
		if slices.Contains(tried, p) {
			continue
		}
		if n := e.inflight[p]; bestN < 0 || n < bestN {
			best, bestN = p, n
		}
	}
	return best
}

// fanOut runs an index.search on this node and on every peer offering it,
// concurrently, and merges their results into one top-k. Peers that fail
// are listed in the output; the task fails only when no node answered.
func (e *Engine) fanOut(ctx context.Context, rec Record, req SubmitRequest, peers []peer.ID) Record {
	var in SearchInput
	k, err := in.parse(req.Input)
	if err != nil {
		// Counted as a local execution that failed on its input.
		res, code, err := e.execute(ctx, req.Type, req.Input, "", e.lim.local)
		return finish(rec, res, code, err)
	}
	rec.State, rec.Peer, rec.Attempts, rec.StartedAt = StateRunning, e.self.String(), 1, time.Now().UTC()
	e.persistRunning(rec)

	type answer struct {
		peer   peer.ID
		result json.RawMessage
		code   string
		err    error
	}
	answers := make([]answer, len(peers)+1)
	var wg sync.WaitGroup
	wire := Request{ID: rec.ID, Type: req.Type, Input: req.Input, TimeoutMS: e.timeout.Milliseconds()}
	for i, p := range peers {
		wg.Go(func() {
			a := answer{peer: p}
			remote, err := e.call(ctx, p, wire)
			if err == nil && remote.State == StateSucceeded {
				a.result = remote.Result
			} else {
				_, a.code, a.err = classifyErr(remote, err)
			}
			answers[i] = a
		})
	}
	wg.Go(func() {
		actx, cancel := context.WithTimeoutCause(ctx, e.timeout, errAttemptTimeout)
		defer cancel()
		a := answer{peer: e.self}
		a.result, a.code, a.err = e.execute(actx, req.Type, req.Input, "", e.lim.local)
		answers[len(peers)] = a
	})
	wg.Wait()

	local := answers[len(peers)]
	if local.code == CodeBadInput {
		return finish(rec, nil, local.code, local.err)
	}
	var (
		out      = SearchOutput{Collection: in.Collection, Results: []SearchResult{}}
		seen     = make(map[[3]string]bool)
		lastCode string
	)
	for _, a := range answers {
		var part SearchOutput
		if a.err == nil {
			if err := json.Unmarshal(a.result, &part); err != nil {
				a.code, a.err = CodeError, fmt.Errorf("undecodable result: %w", err)
			}
		}
		if a.err != nil {
			out.Failed = append(out.Failed, PeerError{Peer: a.peer.String(), Error: oneline.Flatten(a.err.Error())})
			lastCode = a.code
			continue
		}
		out.Peers = append(out.Peers, a.peer.String())
		for _, r := range part.Results {
			key := [3]string{r.ID, fmt.Sprint(r.Chunk), r.Text}
			if seen[key] {
				continue // the same chunk from nodes sharing a store
			}
			seen[key] = true
			r.Peer = a.peer.String()
			out.Results = append(out.Results, r)
		}
	}
	if len(out.Peers) == 0 {
		msgs := make([]string, len(out.Failed))
		for i, f := range out.Failed {
			msgs[i] = "peer " + f.Peer + ": " + f.Error
		}
		return finish(rec, nil, lastCode, errors.New(strings.Join(msgs, "; ")))
	}
	slices.SortStableFunc(out.Results, func(a, b SearchResult) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Chunk, b.Chunk), cmp.Compare(a.Peer, b.Peer))
	})
	if len(out.Results) > k {
		out.Results = out.Results[:k]
	}
	res, err := json.Marshal(out)
	if err != nil {
		return finish(rec, nil, CodeError, err)
	}
	return finish(rec, res, "", nil)
}

// classifyErr is classify returning an error for the fan-out's failure list.
func classifyErr(remote Record, err error) (bool, string, error) {
	retry, code, msg := classify(remote, err)
	return retry, code, errors.New(msg)
}

// execute runs typ on input in this process and records the task metrics.
// The executor runs in its own goroutine so that a cancelled ctx returns at
// once even if the executor ignores it; a panic is recovered. It returns
// the result, or a failure code and error.
func (e *Engine) execute(ctx context.Context, typ string, input json.RawMessage, who string, limit int) (json.RawMessage, string, error) {
	m := e.met[metrics.TaskType(typ)]
	if x, ok := e.execs[typ]; ok && isObject(input) {
		if err := checkBound(x, input, limit); errors.Is(err, ErrTooLarge) {
			m.tooLarge.Inc()
			return nil, CodeTooLarge, err
		}
	}
	release, err := e.adm.acquire(ctx, who)
	if errors.Is(err, ErrBusy) {
		m.busy.Inc()
		return nil, CodeBusy, err
	}
	if err != nil {
		return nil, CodeCancelled, fmt.Errorf("cancelled while queued: %w", err)
	}
	defer release()
	start := time.Now()
	res, code, err := e.executeUnmeasured(ctx, typ, input)
	if err == nil && limit > 0 && len(res) > limit {
		m.tooLarge.Inc()
		res, code, err = nil, CodeTooLarge, fmt.Errorf("%w: %s output is %d bytes, over the limit of %d", ErrTooLarge, typ, len(res), limit)
	}
	switch {
	case err == nil:
		m.succeeded.Inc()
	case code == CodeCancelled || code == CodeClosed:
		m.cancelled.Inc()
	default:
		m.failed.Inc()
	}
	m.duration.Observe(time.Since(start).Seconds())
	return res, code, err
}

func (e *Engine) executeUnmeasured(ctx context.Context, typ string, input json.RawMessage) (json.RawMessage, string, error) {
	x, ok := e.execs[typ]
	if !ok {
		return nil, CodeUnknownType, fmt.Errorf("%w: %q", ErrUnknownType, typ)
	}
	if !isObject(input) {
		return nil, CodeBadInput, fmt.Errorf("%w: input must be a JSON object", ErrBadInput)
	}
	type outcome struct {
		res    json.RawMessage
		err    error
		panicV any
	}
	ch := make(chan outcome, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				e.log.Error("task executor panicked", "type", typ, "panic", v, "stack", string(debug.Stack()))
				ch <- outcome{panicV: v}
			}
		}()
		res, err := x.Execute(ctx, input)
		ch <- outcome{res: res, err: err}
	}()
	var o outcome
	select {
	case o = <-ch:
	case <-ctx.Done():
		o.err = ctx.Err()
	}
	switch {
	case o.panicV != nil:
		return nil, CodePanic, fmt.Errorf("executor panicked: %v", o.panicV)
	case o.err == nil && !json.Valid(o.res):
		return nil, CodeError, errors.New("executor returned invalid JSON")
	case o.err == nil:
		return o.res, "", nil
	case errors.Is(o.err, ErrBadInput):
		return nil, CodeBadInput, o.err
	case ctx.Err() != nil:
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, errAttemptTimeout):
			return nil, CodeTimeout, fmt.Errorf("%w after %v", errAttemptTimeout, e.timeout)
		case errors.Is(cause, ErrClosed):
			return nil, CodeClosed, fmt.Errorf("cancelled, node stopping: %w", o.err)
		}
		return nil, CodeCancelled, fmt.Errorf("cancelled: %w", o.err)
	}
	return nil, CodeError, o.err
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
func (e *Engine) persistRunning(rec Record) {
	if err := e.persist(e.base, rec); err != nil {
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
