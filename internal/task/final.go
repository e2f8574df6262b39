package task

import (
	"context"
	"errors"
	"fmt"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// persistFinal stores the final record rec and returns what was stored. A
// result too large for a record (over Options.MaxValueBytes) or a record
// the store refuses is replaced by a failed record without the result, so
// that every task reaches a final state that Get reads.
func (e *Engine) persistFinal(ctx context.Context, rec Record) Record {
	if rec.Result != nil && e.lim.local > 0 && len(rec.Result) > e.lim.local {
		e.executor(rec.Type).run.refuse(reasonTooLarge)
		rec = finish(rec, nil, CodeTooLarge, fmt.Errorf("%w: result is %d bytes, over the record limit of %d", ErrTooLarge, len(rec.Result), e.lim.local))
	}
	err := e.persist(ctx, rec)
	if err == nil {
		return rec
	}
	e.log.Error("task record not stored", "id", rec.ID, "state", rec.State, "err", err)
	if rec.Result == nil {
		return rec
	}
	code := CodeError
	if errors.Is(err, storage.ErrValueTooLarge) {
		code = CodeTooLarge
	}
	rec = finish(rec, nil, code, fmt.Errorf("the result could not be stored: %w", err))
	if err := e.persist(ctx, rec); err != nil {
		e.log.Error("task record not stored", "id", rec.ID, "state", rec.State, "err", err)
	}
	return rec
}
