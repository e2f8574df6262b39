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

// coalesceBytes bounds the frames a writer gathers into one write, and
// the buffer it keeps for them.
const coalesceBytes = 64 << 10

// frameWriter serialises frame writes on one stream and coalesces them:
// frames written while another write is in progress (or while the stream's
// reader holds the writer corked, see cork) are gathered and go out in one
// write of the stream, so concurrent requests and pipelined replies share
// the encryption, framing and system call of the secure channel instead of
// paying for each. The write deadline is only moved when less than half
// of WriteTimeout remains, so most writes do not touch the stream's timer
// yet each has at least WriteTimeout/2.
type frameWriter struct {
	mu       sync.Mutex
	s        network.Stream
	timeout  time.Duration
	deadline time.Time
	rec      recorder

	pending    []byte   // frames waiting for a write
	types      []string // their types, counted once written
	spare      []byte   // the buffer of the write in progress, reused
	spareTypes []string
	writing    bool  // a caller is writing for everyone
	corked     bool  // the reader will flush: gather without writing
	err        error // the first failed write; the stream is unusable
	flushed    sync.Cond

	// failed is told (without the lock held) when a write fails that
	// carried other callers' frames, who were told their frame was
	// queued: the owner of the stream resets it, so they learn it there.
	failed func(error)
}

// newFrameWriter returns the writer of stream st; failed is told when a
// write of gathered frames fails (see frameWriter.failed).
func newFrameWriter(st network.Stream, timeout time.Duration, rec recorder, failed func(error)) *frameWriter {
	w := &frameWriter{s: st, timeout: timeout, rec: rec, failed: failed}
	w.flushed.L = &w.mu
	return w
}

// write sends f, or leaves it for the write in progress (or the corked
// reader's flush) to send. An error means f was certainly not written
// whole, so the stream is unusable and the request never reached the
// peer; nil means f was written, or queued on a stream whose failure, if
// it comes, is reported through failed. now is a recent clock reading
// (with its monotonic part) the caller already took; zero reads the clock.
func (w *frameWriter) write(f *frameBuf, now time.Time) error {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if w.writing || w.corked {
		if len(w.pending)+len(f.b) <= coalesceBytes || len(w.pending) == 0 {
			w.pending = append(w.pending, f.b...)
			w.types = append(w.types, f.typ)
			w.mu.Unlock()
			return nil
		}
		// Too much is gathered already: wait for the writer to take it.
		for w.writing && w.err == nil {
			w.wait()
		}
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return err
		}
	}
	// This caller writes: its own frame first, then whatever others
	// gathered meanwhile.
	w.writing = true
	err := w.writeLocked(f.b, now, f.typ)
	var others error
	if err == nil {
		others = w.drainLocked()
	}
	w.writing = false
	w.mu.Unlock()
	if others != nil {
		w.fail(others)
	}
	return err
}

// cork makes writes gather until flush; the stream's reader corks while
// more requests are already buffered, so their replies leave together.
func (w *frameWriter) cork() {
	w.mu.Lock()
	w.corked = true
	w.mu.Unlock()
}

// flush uncorks the writer and writes what was gathered; a failure is
// reported through failed and returned. wrote reports whether it wrote
// (and so may have waited for the peer to read).
func (w *frameWriter) flush() (wrote bool, err error) {
	w.mu.Lock()
	w.corked = false
	if w.writing || len(w.pending) == 0 || w.err != nil {
		err := w.err
		w.mu.Unlock()
		return false, err
	}
	w.writing = true
	err = w.drainLocked()
	w.writing = false
	w.mu.Unlock()
	if err != nil {
		w.fail(err)
	}
	return true, err
}

func (w *frameWriter) fail(err error) {
	if w.failed != nil {
		w.failed(err)
	}
}

// drainLocked writes the gathered frames until none are left.
func (w *frameWriter) drainLocked() error {
	for len(w.pending) > 0 && w.err == nil {
		b, types := w.pending, w.types
		w.pending, w.spare = w.spare[:0], nil
		w.types, w.spareTypes = w.spareTypes[:0], nil
		err := w.writeLocked(b, time.Time{}, "")
		if err == nil {
			for _, t := range types {
				w.rec.sent(t)
			}
		}
		if cap(b) <= coalesceBytes {
			w.spare = b[:0]
		}
		clear(types)
		w.spareTypes = types[:0]
	}
	return w.err
}

// writeLocked writes b with the lock released (others gather meanwhile);
// typ, when not empty, is counted once b is written.
func (w *frameWriter) writeLocked(b []byte, now time.Time, typ string) error {
	if w.timeout > 0 {
		if now.IsZero() {
			now = time.Now()
		}
		if w.deadline.Sub(now) < w.timeout/2 {
			w.deadline = now.Add(w.timeout)
			if err := w.s.SetWriteDeadline(w.deadline); err != nil {
				w.err = err
				return err
			}
		}
	}
	w.mu.Unlock()
	_, err := w.s.Write(b)
	w.mu.Lock()
	if err != nil {
		w.err = err
		w.pending, w.types = nil, nil
	} else if typ != "" {
		w.rec.sent(typ)
	}
	w.flushed.Broadcast()
	return err
}

func (w *frameWriter) wait() { w.flushed.Wait() }
