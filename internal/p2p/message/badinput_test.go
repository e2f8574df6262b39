package message

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

func frame(body string) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

// TestBadInput sends every class of bad input on a raw stream and checks
// the reply, the fate of the stream, the exact counter deltas, that the
// node still answers pings, and that no goroutine is left behind.
func TestBadInput(t *testing.T) {
	a := newTestNode(t)
	b := newTestNode(t, withService(func(c *ServiceConfig) { c.ReadTimeout = 300 * time.Millisecond }))
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()

	const (
		open  = "open"  // the stream still serves a ping
		eof   = "eof"   // B closed the stream after replying
		reset = "reset" // B reset the stream
	)
	tests := []struct {
		name       string
		input      []byte
		closeWrite bool
		wantCode   string // "" means no reply
		wantID     string
		end        string
		delta      map[string]float64
		quick      bool
	}{
		{
			name:     "malformed JSON",
			input:    frame(`{"v":1,"id":"m1","type":"ping"`),
			wantCode: CodeMalformed, end: open,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/malformed": 1, "sent/error": 1},
		},
		{
			name:     "not an object",
			input:    frame(`[1,2,3]`),
			wantCode: CodeMalformed, end: open,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/malformed": 1, "sent/error": 1},
		},
		{
			name:     "empty frame",
			input:    frame(``),
			wantCode: CodeMalformed, end: open,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/malformed": 1, "sent/error": 1},
		},
		{
			name:     "unknown type",
			input:    frame(`{"v":1,"id":"u1","type":"teleport","sent_at":"2025-01-01T00:00:00Z"}`),
			wantCode: CodeUnknownType, wantID: "u1", end: open,
			delta: map[string]float64{"received/unknown": 1, "handled/unknown": 1, "errors/unknown/unknown_type": 1, "sent/error": 1},
		},
		{
			name:     "response type sent as a request",
			input:    frame(`{"v":1,"id":"p1","type":"pong"}`),
			wantCode: CodeUnknownType, wantID: "p1", end: open,
			delta: map[string]float64{"received/pong": 1, "handled/pong": 1, "errors/pong/unknown_type": 1, "sent/error": 1},
		},
		{
			name:     "version 2",
			input:    frame(`{"v":2,"id":"v2","type":"ping"}`),
			wantCode: CodeUnsupportedVersion, wantID: "v2", end: open,
			delta: map[string]float64{"received/ping": 1, "handled/ping": 1, "errors/ping/malformed": 1, "sent/error": 1},
		},
		{
			name:     "missing version",
			input:    frame(`{"id":"v0","type":"ping"}`),
			wantCode: CodeUnsupportedVersion, wantID: "v0", end: open,
			delta: map[string]float64{"received/ping": 1, "handled/ping": 1, "errors/ping/malformed": 1, "sent/error": 1},
		},
		{
			name:     "bad sent_at",
			input:    frame(`{"v":1,"id":"t1","type":"ping","sent_at":"yesterday"}`),
			wantCode: CodeMalformed, end: open,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/malformed": 1, "sent/error": 1},
		},
		{
			name:     "length 1<<40",
			input:    binary.AppendUvarint(nil, 1<<40),
			wantCode: CodeTooLarge, end: eof, quick: true,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/too_large": 1, "sent/error": 1},
		},
		{
			name:     "length one over the limit",
			input:    append(binary.AppendUvarint(nil, DefaultMaxMessageBytes+1), `{"v":1`...),
			wantCode: CodeTooLarge, end: eof, quick: true,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/too_large": 1, "sent/error": 1},
		},
		{
			name:     "varint overflow",
			input:    []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
			wantCode: CodeMalformed, end: eof,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/malformed": 1, "sent/error": 1},
		},
		{
			name:     "non-minimal varint",
			input:    []byte{0x85, 0x00, '{', '}', ' ', ' ', ' '},
			wantCode: CodeMalformed, end: eof,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/malformed": 1, "sent/error": 1},
		},
		{
			name:  "truncated frame then close",
			input: append(binary.AppendUvarint(nil, 100), `{"v":1,"id":"x"`...), closeWrite: true,
			end:   eof,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/stream": 1},
		},
		{
			name:  "truncated length then close",
			input: []byte{0x80}, closeWrite: true,
			end:   eof,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/stream": 1},
		},
		{
			name:  "stall mid-frame",
			input: append(binary.AppendUvarint(nil, 100), `{"v":1,"id":"x"`...),
			end:   reset,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/timeout": 1},
		},
		{
			name:  "stall inside the length",
			input: []byte{0x80},
			end:   reset,
			delta: map[string]float64{"received/unknown": 1, "errors/unknown/timeout": 1},
		},
		{
			name:  "idle then close",
			input: nil, closeWrite: true,
			end:   eof,
			delta: map[string]float64{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := b.snapshot(t)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			allocBefore := ms.TotalAlloc
			start := time.Now()

			s, err := a.h.NewStream(ctx, b.h.ID(), protocol.ID(ProtocolID))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			if len(tc.input) > 0 {
				if _, err := s.Write(tc.input); err != nil {
					t.Fatal(err)
				}
			}
			if tc.closeWrite {
				if err := s.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			br := bufio.NewReader(s)
			if tc.wantCode != "" {
				env, err := DecodeFrame(br, DefaultMaxMessageBytes)
				if err != nil {
					t.Fatalf("reading the error reply: %v", err)
				}
				var ep ErrorPayload
				if env.Type != TypeError || env.DecodePayload(&ep) != nil || ep.Code != tc.wantCode || env.ID != tc.wantID {
					t.Fatalf("reply %s %s %s, want error %q id %q", env.Type, env.ID, env.Payload, tc.wantCode, tc.wantID)
				}
			}
			if tc.quick && time.Since(start) > time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			switch tc.end {
			case open:
				if _, err := s.Write(frame(`{"v":1,"id":"after","type":"ping"}`)); err != nil {
					t.Fatal(err)
				}
				env, err := DecodeFrame(br, DefaultMaxMessageBytes)
				if err != nil || env.Type != TypePong || env.ID != "after" {
					t.Fatalf("stream not usable after bad input: %+v %v", env, err)
				}
				tc.delta = withExtra(tc.delta, map[string]float64{"received/ping": 1, "handled/ping": 1, "sent/pong": 1})
			case eof:
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("read after reply: %v, want EOF", err)
				}
			case reset:
				_, err := br.ReadByte()
				if err == nil || err == io.EOF {
					t.Fatalf("read: %v, want a stream reset", err)
				}
				if !errors.Is(err, network.ErrReset) {
					t.Logf("stream ended with %v", err)
				}
			}
			p2ptest.Eventually(t, 5*time.Second, "counters to settle", func() bool {
				after := b.snapshot(t)
				for k, v := range tc.delta {
					if after[k]-before[k] != v {
						return false
					}
				}
				return true
			})
			b.assertDelta(t, before, tc.delta)
			runtime.ReadMemStats(&ms)
			if grown := ms.TotalAlloc - allocBefore; grown > 64<<20 {
				t.Errorf("allocated %d bytes", grown)
			}
			handled, pongs := b.handled(t, TypePing), b.sent(TypePong)
			if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
				t.Fatalf("node stopped answering pings: %v", err)
			}
			// B counts the pong after writing it, so A may see it first:
			// wait, or the next case's baseline could miss it.
			p2ptest.Eventually(t, 5*time.Second, "B to record the ping", func() bool {
				return b.handled(t, TypePing) == handled+1 && b.sent(TypePong) == pongs+1
			})
		})
	}
	p2ptest.WaitGoroutines(t, baseline+2)
}

func withExtra(m, extra map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m)+len(extra))
	for k, v := range m {
		out[k] = v
	}
	for k, v := range extra {
		out[k] += v
	}
	return out
}
