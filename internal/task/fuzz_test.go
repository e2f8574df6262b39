package task

import (
	"context"
	"errors"
	"testing"
)

// FuzzOutputBound: for any input a peer can send, the output bound of
// text.chunk and text.embed is an error wrapping ErrBadInput or a number
// >= 0, and when the task then runs, its output is within that bound. The
// engine refuses a task by this bound before doing the work (code
// too_large), so a bound below the real output would let a stranger make
// the node build a result larger than its limits.
func FuzzOutputBound(f *testing.F) {
	for _, in := range []string{
		`{"text":"one two three. four five six.","size":2,"overlap":1}`,
		`{"text":"a b c"}`,
		`{"text":"a","size":65536,"overlap":65535}`,
		`{"text":"hello","dim":8}`,
		`{"texts":["a","b c"],"dim":1}`,
		`{"texts":[],"dim":8192}`,
		`{"text":"x","dim":-1}`,
		`{"text":"x","dim":4611686018427387904}`,
		`{"text":"x","size":-3}`,
		`{}`, `[]`, `null`, `{"text":"x"} {}`,
	} {
		f.Add(uint8(0), []byte(in))
		f.Add(uint8(1), []byte(in))
	}
	executors := []interface {
		Executor
		Bounded
	}{ChunkExecutor{}, EmbedExecutor{}}
	f.Fuzz(func(t *testing.T, which uint8, input []byte) {
		x := executors[int(which)%len(executors)]
		n, err := x.OutputBound(input)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("%s: bound error %v does not wrap ErrBadInput", x.Type(), err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("%s: negative output bound %d for %q", x.Type(), n, input)
		}
		if n > 8<<20 {
			return // refused by any limit the node runs with; not worth running
		}
		out, err := x.Execute(context.Background(), input)
		if err != nil {
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("%s: error %v does not wrap ErrBadInput", x.Type(), err)
			}
			return
		}
		if len(out) > n {
			t.Fatalf("%s: output of %d bytes over its bound %d for %q", x.Type(), len(out), n, input)
		}
	})
}
