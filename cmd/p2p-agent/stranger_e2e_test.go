package main_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/fleet"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestStrangerCannotForceTracing floods the built binary, from a raw libp2p
// host, with 40,000 messages that carry a sampled trace context under one
// trace id, and with 200 info requests: the node stays up and small, honours
// at most its per-peer rate of trace contexts (burst 100, then 10/s), so
// the attacker's trace holds that many spans and no more, and it answers at
// most the info protocol's burst plus rate.
func TestStrangerCannotForceTracing(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	idle := rssBytes(t, n.PID())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, id := dialRaw(ctx, t, n)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	start := time.Now()
	var wg sync.WaitGroup
	for s := range 8 {
		wg.Go(func() {
			st, err := h.NewStream(ctx, id, protocol.ID(message.ProtocolID))
			if err != nil {
				t.Error(err)
				return
			}
			go func() { _, _ = io.Copy(io.Discard, bufio.NewReader(st)) }()
			var buf []byte
			for i := range 5000 {
				env := &message.Envelope{V: 1, ID: fmt.Sprint(s, "-", i), Type: "trace.get", SentAt: time.Now().UTC(),
					Trace:   "00-" + traceID + "-00f067aa0ba902b7-01",
					Payload: []byte(`{"trace_id":"` + traceID + `"}`)}
				buf, _ = message.AppendFrame(buf[:0], env, 0)
				if _, err := st.Write(buf); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	answered := 0
	for range 200 {
		st, err := h.NewStream(ctx, id, fleet.ProtocolID)
		if err != nil {
			continue
		}
		f, _ := message.AppendRawFrame(nil, []byte(`{"edges":true,"hints":true}`), 1024)
		_, _ = st.Write(f)
		if b, _ := io.ReadAll(st); len(b) > 0 {
			answered++
		}
		st.Close()
	}
	wg.Wait()
	testenv.Eventually(t, 20*time.Second, func() error {
		f, _ := testenv.Scrape(t, nil, n.MetricsURL)
		if got := f.Value("messages_received_total", testenv.L("type", "trace.get")); got != 40000 {
			return fmt.Errorf("%v trace.get received", got)
		}
		return nil
	})
	elapsed := time.Since(start).Seconds()
	rss := rssBytes(t, n.PID())
	out, errOut, code := n.CLI("trace", traceID, "--json")
	if code != 0 {
		t.Fatalf("trace: exit %d %s", code, errOut)
	}
	spans := strings.Count(out, `"span_id"`)
	maxSpans := 100 + int(10*elapsed) + 1
	t.Logf("40,000 traced messages and 200 info requests in %.1f s: %d spans kept, %d info answers; RSS %d -> %d MiB",
		elapsed, spans, answered, idle>>20, rss>>20)
	if spans == 0 || spans > maxSpans {
		t.Errorf("the attacker's trace holds %d spans, want 1..%d", spans, maxSpans)
	}
	if maxInfo := fleet.AnswerBurst + int(fleet.AnswerRate*elapsed) + 1; answered > maxInfo {
		t.Errorf("%d info requests answered, want at most %d", answered, maxInfo)
	}
	if rss-idle > 128<<20 {
		t.Errorf("RSS grew by %d MiB", (rss-idle)>>20)
	}
	if _, _, code := n.CLI("status"); code != 0 {
		t.Fatalf("node not answering after the flood")
	}
}
