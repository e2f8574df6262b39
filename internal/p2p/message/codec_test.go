package message

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

func TestFrameRoundTrip(t *testing.T) {
	env, err := NewEnvelope(TypeTaskRequest, map[string]any{"text": "héllo\x00", "n": 3})
	if err != nil {
		t.Fatal(err)
	}
	env.ID = "r-1"
	var stream []byte
	for range 3 {
		if stream, err = AppendFrame(stream, env, 0); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReaderSize(bytes.NewReader(stream), 16) // force the slow path
	for range 3 {
		got, err := DecodeFrame(br, DefaultMaxMessageBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != env.ID || got.Type != env.Type || got.V != 1 || !got.SentAt.Equal(env.SentAt) || !bytes.Equal(got.Payload, env.Payload) {
			t.Fatalf("got %+v, want %+v", got, env)
		}
	}
	if _, err := DecodeFrame(br, DefaultMaxMessageBytes); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
	if _, err := AppendFrame(nil, env, 10); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("encoding over the limit: %v", err)
	}
}

func TestDecodeFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"huge length", binary.AppendUvarint(nil, 1<<62), ErrFrameTooLarge},
		{"over limit", append(binary.AppendUvarint(nil, 101), make([]byte, 101)...), ErrFrameTooLarge},
		{"overflow", bytes.Repeat([]byte{0xff}, 12), ErrMalformed},
		{"not minimal", []byte{0x81, 0x00, 'x'}, ErrMalformed},
		{"bad json", frame(`{"v":`), ErrMalformed},
		{"truncated body", append(binary.AppendUvarint(nil, 50), `{"v":1}`...), io.ErrUnexpectedEOF},
		{"truncated length", []byte{0x80}, io.ErrUnexpectedEOF},
		{"empty", nil, io.EOF},
	} {
		_, err := DecodeFrame(bufio.NewReader(bytes.NewReader(tc.in)), 100)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestRawFrame: AppendRawFrame writes the framing DecodeFrame reads
// (varint length, then the body) and ReadRawFrame returns bodies the
// caller owns, with DecodeFrame's errors.
func TestRawFrame(t *testing.T) {
	var stream []byte
	bodies := [][]byte{[]byte(`{"peers":[]}`), {}, bytes.Repeat([]byte("x"), 300)}
	for _, b := range bodies {
		var err error
		if stream, err = AppendRawFrame(stream, b, 300); err != nil {
			t.Fatal(err)
		}
	}
	want := append(binary.AppendUvarint(nil, 12), `{"peers":[]}`...)
	if !bytes.Equal(stream[:len(want)], want) {
		t.Fatalf("first frame %q, want %q", stream[:len(want)], want)
	}
	br := bufio.NewReaderSize(bytes.NewReader(stream), 16)
	var got [][]byte
	for range bodies {
		b, err := ReadRawFrame(br, 300)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	for i := range bodies {
		if !bytes.Equal(got[i], bodies[i]) {
			t.Errorf("body %d = %q, want %q", i, got[i], bodies[i])
		}
	}
	if _, err := ReadRawFrame(br, 300); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: %v, want EOF", err)
	}
	if out, err := AppendRawFrame([]byte("keep"), make([]byte, 301), 300); !errors.Is(err, ErrFrameTooLarge) || string(out) != "keep" {
		t.Errorf("oversized body: %q, %v; want dst unchanged and ErrFrameTooLarge", out, err)
	}
	over := append(binary.AppendUvarint(nil, 301), make([]byte, 301)...)
	if _, err := ReadRawFrame(bufio.NewReader(bytes.NewReader(over)), 300); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized frame: %v, want ErrFrameTooLarge", err)
	}
}

// TestMetricsMiddlewareDoesNotAllocate pins the recording cost: the
// middleware and the transport-level recorder allocate nothing per message.
func TestMetricsMiddlewareDoesNotAllocate(t *testing.T) {
	m := metrics.NewMessages(prometheus.NewRegistry(), MetricLabels())
	ok := MetricsMiddleware(m)(func(context.Context, peer.ID, *Envelope) (*Envelope, error) { return nil, nil })
	failing := MetricsMiddleware(m)(func(context.Context, peer.ID, *Envelope) (*Envelope, error) { return nil, errUnknownType })
	ctx := context.Background()
	ping := &Envelope{V: 1, ID: "1", Type: TypePing, SentAt: time.Now()}
	odd := &Envelope{V: 1, ID: "2", Type: "teleport"}
	rec := recorder{m}
	for name, f := range map[string]func(){
		"handled":         func() { _, _ = ok(ctx, "", ping) },
		"failed":          func() { _, _ = failing(ctx, "", odd) },
		"sent":            func() { rec.sent(TypePong) },
		"undecodable":     func() { rec.failed(metrics.Unknown, "malformed") },
		"response":        func() { rec.received(TypePong) },
		"reason of error": func() { _ = errorReason(errBadVersion) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per message, want 0", name, n)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	ping, _ := AppendFrame(nil, &Envelope{V: 1, ID: "a-1", Type: TypePing, SentAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)}, 0)
	f.Add(ping)
	f.Add(append(append([]byte(nil), ping...), ping...))
	f.Add(frame(`{"v":1,"id":"x","type":"task.request","payload":{"text":"hello","k":[1,2,3]}}`))
	f.Add(frame(`{"v":1,"id":"e","type":"error","sent_at":"2025-01-01T00:00:00+02:00","payload":{"code":"x","message":"y"}}`))
	f.Add(frame(`{"v":2}`))
	f.Add(frame(`null`))
	f.Add(frame(`{"payload":nul}`))
	f.Add(binary.AppendUvarint(nil, 1<<40))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x80, 0x00})
	f.Add(append(binary.AppendUvarint(nil, 30), `{"v":1`...))
	f.Add(frame(`{"v":1,"id":"a<&>","type":"task.request","sent_at":"2025-01-01T00:00:00.5+01:00","payload":{"a": [1, 2]}}`))
	f.Add(frame(`{"v":1,"id":"x","type":"ping","sent_at":"2025-01-01T00:00:00Z","payload":null}`))
	f.Add(frame(`{"v":1,"id":"t","type":"task.request","sent_at":"2025-01-01T00:00:00Z","trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","payload":{"a":1}}`))
	f.Add(frame(`{"v":1,"id":"t","type":"ping","sent_at":"2025-01-01T00:00:00Z","trace":""}`))
	f.Add(frame(`{"v":1,"id":"t","type":"ping","sent_at":"2025-01-01T00:00:00Z","trace":"a\"b"}`))
	f.Add(frame(`{"v":1,"id":"x","type":"ping","sent_at":"2025-01-01T00:00:00Z","payload":"\u00e9"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 4096
		// The whole input, and the input after a length prefix, as a body:
		// the fast decoder must agree with encoding/json whenever it accepts.
		checkCanonical(t, data)
		if _, k, err := varint.FromUvarint(data); err == nil {
			checkCanonical(t, data[k:])
		}
		br := bufio.NewReaderSize(bytes.NewReader(data), 16)
		for range 4 {
			env, err := DecodeFrame(br, limit)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameTooLarge) &&
					!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unclassified error %v", err)
				}
				return
			}
			// Whatever decodes re-encodes, and the encoding is stable.
			b1, err := AppendFrame(nil, env, 0)
			if err != nil {
				t.Fatalf("re-encode %+v: %v", env, err)
			}
			env2, err := DecodeFrame(bufio.NewReader(bytes.NewReader(b1)), len(b1))
			if err != nil {
				t.Fatalf("decode re-encoded %q: %v", b1, err)
			}
			sameEnvelope(t, env2, env)
			b2, err := AppendFrame(nil, env2, 0)
			if err != nil || !bytes.Equal(b1, b2) {
				t.Fatalf("unstable encoding:\n%q\n%q (%v)", b1, b2, err)
			}
			// The direct encoder and encoding/json encode the same value.
			viaJSON, err := marshalEnvelope(nil, env)
			if err != nil {
				t.Fatal(err)
			}
			var ref Envelope
			if err := json.Unmarshal(viaJSON, &ref); err != nil {
				t.Fatal(err)
			}
			sameEnvelope(t, &ref, env2)
		}
	})
}

func checkCanonical(t *testing.T, body []byte) {
	env := decodeCanonical(body)
	if env == nil {
		return
	}
	var ref Envelope
	if err := json.Unmarshal(body, &ref); err != nil {
		t.Fatalf("fast path accepted %q, encoding/json refuses: %v", body, err)
	}
	sameEnvelope(t, env, &ref)
}

func sameEnvelope(t *testing.T, got, want *Envelope) {
	t.Helper()
	if got.V != want.V || got.ID != want.ID || got.Type != want.Type || !got.SentAt.Equal(want.SentAt) ||
		got.SentAt.Format(time.RFC3339Nano) != want.SentAt.Format(time.RFC3339Nano) {
		t.Fatalf("envelopes differ:\n%+v\n%+v", got, want)
	}
	var g, w any
	if (len(got.Payload) == 0) != (len(want.Payload) == 0) {
		t.Fatalf("payloads differ: %q %q", got.Payload, want.Payload)
	}
	if len(got.Payload) > 0 {
		if json.Unmarshal(got.Payload, &g) != nil || json.Unmarshal(want.Payload, &w) != nil || !reflect.DeepEqual(g, w) {
			t.Fatalf("payloads differ: %q %q", got.Payload, want.Payload)
		}
	}
}

func TestCanonicalFastPath(t *testing.T) {
	env, _ := NewEnvelope(TypeTaskRequest, map[string]any{"text": "a <b> & c", "k": []int{1, 2}})
	env.ID = "0123abcd-1z"
	body, err := appendEnvelope(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeCanonical(body)
	if got == nil {
		t.Fatalf("the service's own encoding %s misses the fast path", body)
	}
	sameEnvelope(t, got, env)
	checkCanonical(t, body)

	for _, tc := range []struct {
		body string
		fast bool
	}{
		{`{"v":1,"id":"a","type":"ping","sent_at":"2025-01-01T00:00:00Z"}`, true},
		{`{"v":1,"id":"<&>","type":"x y","sent_at":"2025-01-01T00:00:00.123+05:30","payload":{"a": [1, "}"]}}`, true},
		{`{"v":1,"id":"a","type":"ping","sent_at":"2025-01-01T00:00:00Z","payload":{} }`, false},
		{`{"v":1,"id":"a","type":"ping","sent_at":"2025-01-01T00:00:00Z","payload":null}`, false},
		{`{"v":1,"id":"a","type":"ping","sent_at":"2025-01-01T00:00:00Z","payload":{}`, false},
		{`{"v":1,"id":"a","type":"ping","sent_at":"2025-01-01T00:00:00Z"} `, false},
		{`{"v":1,"id":"\u0061","type":"ping","sent_at":"2025-01-01T00:00:00Z"}`, false},
		{`{"v":1,"id":"é","type":"ping","sent_at":"2025-01-01T00:00:00Z"}`, false},
		{`{"v":1,"id":"a","type":"ping","sent_at":"2025-13-01T00:00:00Z"}`, false},
		{`{"v":10,"id":"a","type":"ping","sent_at":"2025-01-01T00:00:00Z"}`, false},
		{`{"v":1,"id":"a","type":"ping"}`, false},
		{`{"v":1,"id":"a","type":"ping","sent_at":"2025-01-01T00:00:00Z","type":"pong"}`, false},
	} {
		if got := decodeCanonical([]byte(tc.body)) != nil; got != tc.fast {
			t.Errorf("fast path for %s = %v, want %v", tc.body, got, tc.fast)
		}
		checkCanonical(t, []byte(tc.body))
		if _, err := decodeEnvelope([]byte(tc.body)); err != nil && tc.fast {
			t.Errorf("%s: %v", tc.body, err)
		}
	}
}
