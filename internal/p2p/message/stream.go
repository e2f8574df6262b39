package message

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// frameBuf is an encoded frame in a pooled buffer.
type frameBuf struct {
	b   []byte
	typ string
}

var framePool = sync.Pool{New: func() any { return &frameBuf{b: make([]byte, 0, 512)} }}

// encodeFrame encodes env into a pooled buffer; call release when written.
func encodeFrame(env *Envelope, maxBytes int) (*frameBuf, error) {
	f := framePool.Get().(*frameBuf)
	b, err := AppendFrame(f.b[:0], env, maxBytes)
	if err != nil {
		f.release()
		return nil, err
	}
	f.b, f.typ = b, env.Type
	return f, nil
}

func (f *frameBuf) release() {
	if cap(f.b) > keptBufferBytes {
		return
	}
	f.b, f.typ = f.b[:0], ""
	framePool.Put(f)
}

// frameWriter serialises frame writes on one stream. The write deadline is
// only moved when less than half of WriteTimeout remains, so most writes
// do not touch the stream's timer yet each has at least WriteTimeout/2.
type frameWriter struct {
	mu       sync.Mutex
	s        network.Stream
	timeout  time.Duration
	deadline time.Time
	rec      recorder
}

func (w *frameWriter) write(f *frameBuf) error {
	w.mu.Lock()
	if w.timeout > 0 {
		now := time.Now()
		if w.deadline.Sub(now) < w.timeout/2 {
			w.deadline = now.Add(w.timeout)
			if err := w.s.SetWriteDeadline(w.deadline); err != nil {
				w.mu.Unlock()
				return err
			}
		}
	}
	_, err := w.s.Write(f.b)
	w.mu.Unlock()
	if err == nil {
		w.rec.sent(f.typ)
	}
	return err
}
