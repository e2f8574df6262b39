package p2p

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/multiformats/go-varint"
)

// DefaultMaxMessageBytes is the default frame size cap (p2p.max_message_bytes).
const DefaultMaxMessageBytes = 1 << 20

// keptBufferBytes bounds the body buffer a stream keeps between frames;
// larger bodies get a buffer of their own that is dropped after use.
const keptBufferBytes = 64 << 10

// NewEnvelope returns a version-1 envelope of type typ carrying payload
// marshalled as JSON (a json.RawMessage is used as is, nil means no payload).
// The ID is left empty: Request assigns it.
func NewEnvelope(typ string, payload any) (*Envelope, error) {
	raw, err := marshalPayload(payload)
	if err != nil {
		return nil, err
	}
	return &Envelope{V: EnvelopeVersion, Type: typ, SentAt: time.Now().UTC(), Payload: raw}, nil
}

// Reply returns the response of type typ to req: it carries req's ID so the
// requester can match it. Handlers return it as their response.
func Reply(req *Envelope, typ string, payload any) (*Envelope, error) {
	env, err := NewEnvelope(typ, payload)
	if err != nil {
		return nil, err
	}
	env.ID = req.ID
	return env, nil
}

// DecodePayload unmarshals the envelope's payload into v.
func (e *Envelope) DecodePayload(v any) error {
	if len(e.Payload) == 0 {
		return fmt.Errorf("%w: %s message has no payload", ErrMalformed, e.Type)
	}
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("%w: %s payload: %w", ErrMalformed, e.Type, err)
	}
	return nil
}

func marshalPayload(payload any) (json.RawMessage, error) {
	switch p := payload.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return p, nil
	default:
		raw, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encode payload: %w", err)
		}
		return raw, nil
	}
}

// AppendFrame appends env to dst as one frame: an unsigned varint length
// followed by the JSON envelope. A body over maxBytes (when maxBytes > 0)
// is refused with ErrFrameTooLarge, since the peer would refuse it too.
func AppendFrame(dst []byte, env *Envelope, maxBytes int) ([]byte, error) {
	body, err := json.Marshal(env)
	if err != nil {
		return dst, fmt.Errorf("encode envelope: %w", err)
	}
	if maxBytes > 0 && len(body) > maxBytes {
		return dst, fmt.Errorf("%w: %d bytes over the %d byte limit", ErrFrameTooLarge, len(body), maxBytes)
	}
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...), nil
}

// DecodeFrame reads one frame from r and decodes its envelope. The length
// prefix is checked against maxBytes before any body buffer is allocated.
// Errors wrap ErrFrameTooLarge, ErrMalformed, io.EOF (clean end between
// frames) or io.ErrUnexpectedEOF (end inside a frame).
func DecodeFrame(r *bufio.Reader, maxBytes int) (*Envelope, error) {
	fr := frameReader{br: r, max: maxBytes}
	body, _, err := fr.next()
	if err != nil {
		return nil, err
	}
	return decodeEnvelope(body)
}

func decodeEnvelope(body []byte) (*Envelope, error) {
	env := new(Envelope)
	if err := json.Unmarshal(body, env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return env, nil
}

// frameReader splits a stream into frame bodies. Between frames it waits
// up to idle (0: forever); once the first byte of a frame has arrived, the
// rest must arrive within timeout, so a peer that stalls mid-frame cannot
// hold the reader. Deadlines are only touched when a read could block.
type frameReader struct {
	br          *bufio.Reader
	max         int
	buf         []byte
	setDeadline func(time.Time) error // nil: no deadlines (tests, fuzzing)
	timeout     time.Duration
	idle        time.Duration
	deadlineSet bool
}

// next returns the body of the next frame; it is valid until the following
// call. started reports whether any byte of the frame had been received, so
// the caller can tell a stream that ended (or idled) between frames from one
// that broke inside a frame.
func (fr *frameReader) next() (body []byte, started bool, err error) {
	if fr.br.Buffered() == 0 {
		if fr.setDeadline != nil && (fr.idle > 0 || fr.deadlineSet) {
			var dl time.Time
			if fr.idle > 0 {
				dl = time.Now().Add(fr.idle)
			}
			if err := fr.setDeadline(dl); err != nil {
				return nil, false, err
			}
			fr.deadlineSet = fr.idle > 0
		}
		if _, err := fr.br.Peek(1); err != nil {
			return nil, false, err
		}
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

	if fr.setDeadline != nil && fr.timeout > 0 {
		if err := fr.setDeadline(time.Now().Add(fr.timeout)); err != nil {
			return nil, true, err
		}
		fr.deadlineSet = true
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
