package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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

// TestMetricsMiddlewareDoesNotAllocate pins the recording cost: the
// middleware and the transport-level recorder allocate nothing per message.
func TestMetricsMiddlewareDoesNotAllocate(t *testing.T) {
	m := metrics.NewMessages(prometheus.NewRegistry())
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
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 4096
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
			b2, err := AppendFrame(nil, env2, 0)
			if err != nil || !bytes.Equal(b1, b2) {
				t.Fatalf("unstable encoding:\n%q\n%q (%v)", b1, b2, err)
			}
		}
	})
}
