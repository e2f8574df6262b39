package task

import (
	"encoding/json"
	"fmt"
)

// Bounded is implemented by executors that can bound the size of their
// output from the input alone, cheaply and before doing the work. The
// engine refuses (code too_large) an input whose bound exceeds the limit
// of the result's destination.
type Bounded interface {
	// OutputBound returns an upper bound of the JSON output's size in bytes;
	// an error wrapping ErrBadInput when the input cannot be decoded.
	OutputBound(input json.RawMessage) (int, error)
}

// envelopeOverhead is what a task.result message adds around the result:
// the record's other fields and the envelope (DESIGN section 7).
const envelopeOverhead = 16 << 10

// ErrTooLarge means a task's output would exceed the limit of its
// destination (a p2p message for a remote request, a stored record).
var ErrTooLarge = fmt.Errorf("%w: output too large", ErrBadInput)

// limits are the output bounds of results.
type limits struct {
	remote int // largest result sent back to a peer; 0: no limit
	local  int // largest result stored in a record; 0: no limit
}

// newLimits derives the result limits from the message and value limits.
func newLimits(maxMessage, maxValue int) limits {
	l := limits{}
	if maxMessage > 0 {
		l.remote = max(1, maxMessage-envelopeOverhead)
	}
	if maxValue > 0 {
		l.local = max(1, maxValue-envelopeOverhead)
	}
	return l
}

// checkBound refuses input when x's bound of its output exceeds limit.
func checkBound(x Executor, input json.RawMessage, limit int) error {
	b, ok := x.(Bounded)
	if !ok || limit <= 0 {
		return nil
	}
	n, err := b.OutputBound(input)
	if err != nil {
		return err
	}
	if n > limit {
		return fmt.Errorf("%w: %s output may reach %d bytes, over the limit of %d", ErrTooLarge, x.Type(), n, limit)
	}
	return nil
}

// OutputBound bounds the text.chunk output: every window repeats at most
// size tokens of the text (JSON escaping at most doubles them) plus its
// fields, and windows advance by size-overlap tokens of at least one byte.
func (ChunkExecutor) OutputBound(input json.RawMessage) (int, error) {
	var in ChunkInput
	if err := decodeInput(input, &in); err != nil {
		return 0, err
	}
	size, overlap, err := window(in.Text, in.Size, in.Overlap)
	if err != nil {
		return 0, err
	}
	if err := checkWindow(size, overlap); err != nil {
		return 0, err // as ChunkText would, and before the arithmetic below
	}
	step := size - overlap
	n := len(*in.Text)
	windows := n/step + 1
	repeat := (size + step - 1) / step
	const perChunk = 96 // {"index":..,"text":"","start":..,"end":..,"tokens":..},
	return 16 + 2*n*repeat + windows*perChunk, nil
}

// OutputBound bounds the text.embed output: dim float32 values per text,
// each at most 16 bytes in JSON ("-1.2345678e-05,").
func (EmbedExecutor) OutputBound(input json.RawMessage) (int, error) {
	var in EmbedInput
	if err := decodeInput(input, &in); err != nil {
		return 0, err
	}
	dim := DefaultDim
	if in.Dim != nil {
		dim = *in.Dim
	}
	if err := checkDim(dim); err != nil {
		return 0, err // as Execute would, and before dim*16 can overflow
	}
	texts := len(in.Texts)
	if in.Text != nil {
		texts++
	}
	return 32 + texts*(dim*16+4), nil
}
