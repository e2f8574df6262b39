package message

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/multiformats/go-varint"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// frameReader splits a stream into frame bodies. Between frames it waits
// up to idle (0: forever); once the first byte of a frame has arrived, the
// rest must arrive within timeout, so a peer that stalls mid-frame cannot
// hold the reader. Deadlines are only touched when a read could block, and
// the idle deadline only when less than half of it remains (so a stream is
// closed after between idle/2 and idle without frames): setting a deadline
// arms a timer, which would otherwise cost an allocation per frame.
type frameReader struct {
	br          *bufio.Reader
	max         int
	buf         []byte
	setDeadline func(time.Time) error // nil: no deadlines (tests, fuzzing)
	timeout     time.Duration
	idle        time.Duration

	deadline      time.Time // current read deadline; zero: none
	frameDeadline bool      // deadline bounds a frame, not idleness

	// arrived is the clock reading (metrics.Now) taken when the latest
	// frame began to arrive, kept only with an idle timeout: idleness is
	// measured from it, and the metrics middleware takes it as the start of
	// the message's processing, so both share one clock read per frame.
	arrived time.Duration

	// beforeWait, when set, runs before a read that may block (nothing
	// is buffered): the server flushes the replies it gathered. It reports
	// whether it wrote, and so may have waited on the peer reading.
	beforeWait func() bool
}

// waitIdle arranges the deadline for waiting on the next frame: at least
// idle/2 after the latest frame arrived, at most idle. It reads the clock
// only when the deadline moves (once per idle/2 on a busy stream).
func (fr *frameReader) waitIdle() error {
	if fr.setDeadline == nil {
		return nil
	}
	var dl time.Time
	if fr.idle > 0 {
		if !fr.frameDeadline && fr.deadline.Sub(metrics.Time(fr.arrived)) >= fr.idle/2 {
			return nil
		}
		dl = time.Now().Add(fr.idle)
	} else if fr.deadline.IsZero() {
		return nil
	}
	fr.deadline, fr.frameDeadline = dl, false
	return fr.setDeadline(dl)
}

// idleExpired reports whether err, returned between frames, is this
// reader's own idle deadline passing, rather than a transport failure that
// merely looks like a timeout (a QUIC connection's idle timeout: its peer
// is gone). The caller may wait on: the next waitIdle then moves the
// deadline again.
func (fr *frameReader) idleExpired(err error) bool {
	// The deadline fired on the monotonic clock, so that is the clock to
	// compare it with: metrics.Now may read the time-stamp counter, which
	// can trail it by some nanoseconds.
	now := time.Now()
	expired := isTimeout(err) && !fr.deadline.IsZero() && !fr.frameDeadline && !now.Before(fr.deadline)
	if expired {
		fr.arrived = metrics.Of(now)
	}
	return expired
}

// next returns the body of the next frame; it is valid until the following
// call. started reports whether any byte of the frame had been received, so
// the caller can tell a stream that ended (or idled) between frames from one
// that broke inside a frame.
func (fr *frameReader) next() (body []byte, started bool, err error) {
	if fr.br.Buffered() == 0 {
		if fr.beforeWait != nil {
			_ = fr.beforeWait()
		}
		if err := fr.waitIdle(); err != nil {
			return nil, false, err
		}
		if _, err := fr.br.Peek(1); err != nil {
			return nil, false, err
		}
	}
	if fr.idle > 0 {
		fr.arrived = metrics.Now()
	}

	// Fast path: the whole frame is already buffered, no read can block.
	hdr, _ := fr.br.Peek(min(fr.br.Buffered(), varint.MaxLenUvarint63))
	n, k, err := varint.FromUvarint(hdr)
	switch {
	case err == nil:
		if n > uint64(fr.max) {
			_, _ = fr.br.Discard(k)
			return nil, true, fmt.Errorf("%w: %d bytes declared, limit %d", ErrFrameTooLarge, n, fr.max)
		}
		if total := k + int(n); total <= fr.br.Buffered() {
			b, _ := fr.br.Peek(total)
			_, _ = fr.br.Discard(total)
			return b[k:], true, nil
		}
	case errors.Is(err, varint.ErrUnderflow):
		// The length prefix itself is incomplete: read it below.
	default:
		return nil, true, fmt.Errorf("%w: length prefix: %w", ErrMalformed, err)
	}

	// The rest of the frame may take a while: what the server gathered
	// leaves first. The time that write waited for the peer to read its
	// replies (up to the write timeout) does not count against the
	// frame's: a peer that pipelines requests faster than it reads replies
	// is slow, not stalled.
	wrote := fr.beforeWait != nil && fr.beforeWait()
	if fr.setDeadline != nil && fr.timeout > 0 {
		fr.deadline, fr.frameDeadline = metrics.Time(fr.arrived).Add(fr.timeout), true
		if fr.idle <= 0 || wrote {
			fr.deadline = time.Now().Add(fr.timeout)
		}
		if err := fr.setDeadline(fr.deadline); err != nil {
			return nil, true, err
		}
	}
	n, err = varint.ReadUvarint(fr.br)
	if err != nil {
		if errors.Is(err, varint.ErrOverflow) || errors.Is(err, varint.ErrNotMinimal) {
			return nil, true, fmt.Errorf("%w: length prefix: %w", ErrMalformed, err)
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, true, err
	}
	if n > uint64(fr.max) {
		return nil, true, fmt.Errorf("%w: %d bytes declared, limit %d", ErrFrameTooLarge, n, fr.max)
	}
	var buf []byte
	if n <= keptBufferBytes {
		if uint64(cap(fr.buf)) < n {
			fr.buf = make([]byte, max(n, 512))
		}
		buf = fr.buf[:n]
	} else {
		buf = make([]byte, n)
	}
	if _, err := io.ReadFull(fr.br, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, true, err
	}
	return buf, true, nil
}
