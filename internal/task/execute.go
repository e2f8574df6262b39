package task

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/trace"
)

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
	if !e.enter() {
		return finish(rec, nil, CodeClosed, ErrClosed)
	}
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

// execute runs typ on input in this process, charged to who ("" for this
// node) and with results bounded by limit (0: none). It refuses an input
// whose output bound exceeds limit and a task without an execution slot,
// then calls the executor, which honours ctx, directly. It returns the
// result, or a failure code and error. The executor registered for typ is
// measured (Instrument) and guarded (a panic or an invalid result fails the
// task); the refusals are recorded on it.
func (e *Engine) execute(ctx context.Context, typ string, input json.RawMessage, who string, limit int) (json.RawMessage, string, error) {
	x := e.executor(typ)
	if isObject(input) {
		if err := checkBound(x.x, input, limit); errors.Is(err, ErrTooLarge) {
			x.run.refuse(reasonTooLarge)
			return nil, CodeTooLarge, err
		}
	}
	qctx, qspan := e.trc.Start(ctx, "task.queue", trace.SpanKindInternal)
	release, err := e.adm.acquire(qctx, who)
	qspan.End(err)
	if errors.Is(err, ErrBusy) {
		x.run.refuse(reasonBusy)
		return nil, CodeBusy, err
	}
	if err != nil {
		return nil, CodeCancelled, fmt.Errorf("cancelled while queued: %w", err)
	}
	defer release()
	res, err := x.run.Execute(withLimit(ctx, limit), input)
	if err == nil {
		return res, "", nil
	}
	code := failureCode(ctx, err)
	switch code {
	case CodeTimeout:
		err = fmt.Errorf("%w after %v", errAttemptTimeout, e.timeout)
	case CodeClosed:
		err = fmt.Errorf("cancelled, node stopping: %w", err)
	case CodeCancelled:
		err = fmt.Errorf("cancelled: %w", err)
	}
	return nil, code, err
}

// registered is an executor as the engine runs it: run is x guarded and
// measured.
type registered struct {
	x   Executor
	run *instrumented
}

// register wraps x to run it: guarded, then measured, so that every
// executor is measured without anyone having to remember to.
func (e *Engine) register(x Executor) {
	e.execs[x.Type()] = registered{x: x, run: instrument(guarded{next: x, log: e.log}, e.met, e.trc)}
}

// executor returns the registered executor of typ; for a type without one,
// a measured stand-in (label unknown) that fails with ErrUnknownType.
func (e *Engine) executor(typ string) registered {
	if x, ok := e.execs[typ]; ok {
		return x
	}
	run := *e.unknown // label children resolved once
	run.next = unknownExecutor(typ)
	return registered{x: run.next, run: &run}
}

// unknownExecutor stands in for a task type this node has no executor for.
type unknownExecutor string

func (u unknownExecutor) Type() string { return string(u) }

func (u unknownExecutor) Execute(context.Context, json.RawMessage) (json.RawMessage, error) {
	return nil, &coded{CodeUnknownType, fmt.Errorf("%w: %q", ErrUnknownType, string(u))}
}

// coded is an error whose failure code is fixed by whoever made it, not
// derived from its chain.
type coded struct {
	code string
	err  error
}

func (c *coded) Error() string { return c.err.Error() }
func (c *coded) Unwrap() error { return c.err }

// failureCode classifies an error of an executor that ran with ctx: a
// coded error's own code; bad_input for ErrBadInput; when ctx has ended,
// timeout (the attempt's time ran out), closed (the node is stopping) or
// cancelled (the submitter gave up); error otherwise. It is "" for nil.
func failureCode(ctx context.Context, err error) string {
	var c *coded
	switch {
	case err == nil:
		return ""
	case errors.As(err, &c):
		return c.code
	case errors.Is(err, ErrBadInput):
		return CodeBadInput
	case ctx.Err() != nil:
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, errAttemptTimeout):
			return CodeTimeout
		case errors.Is(cause, ErrClosed):
			return CodeClosed
		}
		return CodeCancelled
	}
	return CodeError
}

// limitKey is the context key of the result limit of an execution.
type limitKey struct{}

// withLimit returns ctx carrying the largest result (bytes) the execution
// may return; 0 means none.
func withLimit(ctx context.Context, limit int) context.Context {
	return context.WithValue(ctx, limitKey{}, limit)
}

// guarded enforces the executor contract around an executor: the input is
// a JSON object, the result valid JSON within the limit of ctx, and a panic
// fails the task (code panic) instead of the node.
type guarded struct {
	next Executor
	log  *slog.Logger
}

func (g guarded) Type() string { return g.next.Type() }

func (g guarded) Execute(ctx context.Context, input json.RawMessage) (res json.RawMessage, err error) {
	if !isObject(input) {
		return nil, &coded{CodeBadInput, fmt.Errorf("%w: input must be a JSON object", ErrBadInput)}
	}
	defer func() {
		if v := recover(); v != nil {
			g.log.Error("task executor panicked", "type", g.next.Type(), "panic", v, "stack", string(debug.Stack()))
			res, err = nil, &coded{CodePanic, fmt.Errorf("executor panicked: %v", v)}
		}
	}()
	res, err = g.next.Execute(ctx, input)
	switch {
	case err != nil:
		return nil, err
	case !json.Valid(res):
		return nil, &coded{CodeError, errors.New("executor returned invalid JSON")}
	}
	if limit, _ := ctx.Value(limitKey{}).(int); limit > 0 && len(res) > limit {
		return nil, &coded{CodeTooLarge, fmt.Errorf("%w: %s output is %d bytes, over the limit of %d", ErrTooLarge, g.next.Type(), len(res), limit)}
	}
	return res, nil
}

// Unwrap returns the guarded executor.
func (g guarded) Unwrap() Executor { return g.next }
