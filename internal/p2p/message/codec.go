package message

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
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
	// Encode after room for the longest length prefix, then move the body
	// next to its actual prefix: one pass, no intermediate buffer.
	start := len(dst)
	dst = append(dst, make([]byte, binary.MaxVarintLen64)...)
	out, err := appendEnvelope(dst, env)
	if err != nil {
		return dst[:start], err
	}
	body := out[start+binary.MaxVarintLen64:]
	if maxBytes > 0 && len(body) > maxBytes {
		return dst[:start], fmt.Errorf("%w: %d bytes over the %d byte limit", ErrFrameTooLarge, len(body), maxBytes)
	}
	n := len(body)
	out = binary.AppendUvarint(out[:start], uint64(n))
	copy(out[len(out):len(out)+n], body) // overlapping: copy is memmove
	return out[:len(out)+n], nil
}

// AppendRawFrame appends body to dst as one frame of the codec's framing
// (an unsigned varint length, then the bytes), for protocols other than the
// message service that carry their own body, such as peer exchange. A body
// over maxBytes (when maxBytes > 0) is refused with ErrFrameTooLarge.
func AppendRawFrame(dst, body []byte, maxBytes int) ([]byte, error) {
	if maxBytes > 0 && len(body) > maxBytes {
		return dst, fmt.Errorf("%w: %d bytes over the %d byte limit", ErrFrameTooLarge, len(body), maxBytes)
	}
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...), nil
}

// appendEnvelope appends the JSON encoding of env. The common envelope
// (plain ASCII id and type, UTC time) is written directly, in the field
// order of encoding/json; anything else goes through json.Marshal.
func appendEnvelope(dst []byte, env *Envelope) ([]byte, error) {
	if !plainString(env.ID) || !plainString(env.Type) || !plainString(env.Trace) || env.SentAt.Location() != time.UTC {
		return marshalEnvelope(dst, env)
	}
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(env.V), 10)
	dst = append(dst, `,"id":"`...)
	dst = append(dst, env.ID...)
	dst = append(dst, `","type":"`...)
	dst = append(dst, env.Type...)
	dst = append(dst, `","sent_at":"`...)
	if b, ok := appendUTC(dst, env.SentAt); ok {
		dst = b
	} else {
		var err error
		if dst, err = env.SentAt.AppendText(dst); err != nil { // exactly Time.MarshalJSON's checks
			return dst, fmt.Errorf("encode envelope: %w", err)
		}
	}
	dst = append(dst, '"')
	if env.Trace != "" {
		dst = append(dst, `,"trace":"`...)
		dst = append(dst, env.Trace...)
		dst = append(dst, '"')
	}
	if len(env.Payload) > 0 {
		dst = append(dst, `,"payload":`...)
		buf := bytes.NewBuffer(dst)
		if err := json.Compact(buf, env.Payload); err != nil {
			return dst, fmt.Errorf("encode envelope: payload: %w", err)
		}
		dst = buf.Bytes()
	}
	return append(dst, '}'), nil
}

func marshalEnvelope(dst []byte, env *Envelope) ([]byte, error) {
	body, err := json.Marshal(env)
	if err != nil {
		return dst, fmt.Errorf("encode envelope: %w", err)
	}
	return append(dst, body...), nil
}

// plainString reports whether s encodes in JSON as itself: printable ASCII
// without quote, backslash, or the characters encoding/json escapes for HTML.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
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

// ReadRawFrame reads one frame from r, as written by AppendRawFrame or
// AppendFrame, and returns its body, which the caller owns. The length
// prefix is checked against maxBytes before any body buffer is allocated.
// Errors are those of DecodeFrame, except that the body is not decoded.
func ReadRawFrame(r *bufio.Reader, maxBytes int) ([]byte, error) {
	fr := frameReader{br: r, max: maxBytes}
	body, _, err := fr.next()
	if err != nil {
		return nil, err
	}
	return bytes.Clone(body), nil
}

func decodeEnvelope(body []byte) (*Envelope, error) {
	env := new(Envelope)
	id, canonical, err := decodeEnvelopeInto(env, body)
	if err != nil {
		return nil, err
	}
	if canonical {
		env.ID = string(id)
	}
	return env, nil
}

// decodeEnvelopeInto decodes body into env, which must be zero. A
// canonical envelope (see decodeCanonical) leaves env.ID empty and returns
// its bytes as id, a slice of body, so that the caller chooses whether the
// ID needs a string of its own; any other envelope's ID is in env.ID.
func decodeEnvelopeInto(env *Envelope, body []byte) (id []byte, canonical bool, err error) {
	if id, ok := decodeCanonicalInto(env, body); ok {
		return id, true, nil
	}
	*env = Envelope{}
	if err := json.Unmarshal(body, env); err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil, false, nil
}

// decodeCanonical decodes the envelope exactly as appendEnvelope writes it
// ({"v":1,"id":"..","type":"..","sent_at":".."[,"trace":".."][,"payload":..]} with plain
// strings), at a fraction of the cost of encoding/json. It returns nil for
// anything else, which encoding/json then decodes; FuzzDecodeFrame checks
// that both agree whenever this path accepts.
func decodeCanonical(b []byte) *Envelope {
	env := new(Envelope)
	id, ok := decodeCanonicalInto(env, b)
	if !ok {
		return nil
	}
	env.ID = string(id)
	return env
}

// decodeCanonicalInto is decodeCanonical into env (which may be left
// partly filled when it fails), returning the ID's bytes instead of
// setting env.ID.
func decodeCanonicalInto(env *Envelope, b []byte) (id []byte, ok bool) {
	b, ok = bytes.CutPrefix(b, []byte(`{"v":1,"id":"`))
	if !ok {
		return nil, false
	}
	id, b, ok = cutPlain(b)
	if !ok {
		return nil, false
	}
	if b, ok = bytes.CutPrefix(b, []byte(`,"type":"`)); !ok {
		return nil, false
	}
	typ, b, ok := cutPlain(b)
	if !ok {
		return nil, false
	}
	if b, ok = bytes.CutPrefix(b, []byte(`,"sent_at":`)); !ok {
		return nil, false
	}
	ts, b, ok := cutQuoted(b)
	if !ok {
		return nil, false
	}
	env.V = 1
	if t, ok := parseUTC(ts); ok {
		env.SentAt = t
	} else if env.SentAt.UnmarshalJSON(ts) != nil {
		return nil, false
	}
	if rest, ok := bytes.CutPrefix(b, []byte(`,"trace":"`)); ok {
		var tr []byte
		if tr, b, ok = cutPlain(rest); !ok || len(tr) == 0 {
			return nil, false
		}
		env.Trace = string(tr)
	}
	if len(b) == 0 || b[len(b)-1] != '}' {
		return nil, false
	}
	b = b[:len(b)-1]
	if len(b) > 0 {
		raw, ok := bytes.CutPrefix(b, []byte(`,"payload":`))
		// RawMessage keeps the value's bytes without surrounding space;
		// null is left to encoding/json's rules.
		if !ok || len(raw) == 0 || isJSONSpace(raw[0]) || isJSONSpace(raw[len(raw)-1]) ||
			string(raw) == "null" || !json.Valid(raw) {
			return nil, false
		}
		env.Payload = bytes.Clone(raw)
	}
	env.Type = internType(typ)
	return id, true
}

// cutPlain splits a plain string's content from b (which starts after its
// opening quote) and returns the rest after the closing quote.
func cutPlain(b []byte) (s, rest []byte, ok bool) {
	for i, c := range b {
		if c == '"' {
			return b[:i], b[i+1:], true
		}
		if c < 0x20 || c > 0x7e || c == '\\' {
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// cutQuoted returns the quoted plain string at the start of b, with quotes.
func cutQuoted(b []byte) (q, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, nil, false
	}
	_, rest, ok = cutPlain(b[1:])
	if !ok {
		return nil, nil, false
	}
	return b[:len(b)-len(rest)], rest, true
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// internType returns the constant for a known type, avoiding an allocation.
func internType(b []byte) string {
	switch string(b) {
	case TypePing:
		return TypePing
	case TypePong:
		return TypePong
	case TypeTaskRequest:
		return TypeTaskRequest
	case TypeTaskResult:
		return TypeTaskResult
	case TypeError:
		return TypeError
	}
	return string(b)
}
