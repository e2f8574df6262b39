package main_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestPeerThatNeverReadsReplies sends the built binary pings on as many
// streams as a peer may open (message.StreamsPerPeer), as fast as it
// takes them, and never reads a reply: the replies the node
// gathers for one write are bounded, so its writes stall on flow control,
// its readers stop reading (backpressure), the streams are reset after the
// write deadline, and the node's memory stays bounded and it still answers
// another peer's ping meanwhile.
func TestPeerThatNeverReadsReplies(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary")
	t.Parallel()
	n := testenv.StartNode(t, testenv.NodeOptions{})
	pid := n.PID()
	idle := rssBytes(t, pid)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, id := dialRaw(ctx, t, n)

	var frames []byte
	for i := range 4096 {
		env, _ := json.Marshal(message.Envelope{V: 1, ID: "p" + string(rune('a'+i%26)), Type: message.TypePing, SentAt: time.Now().UTC()})
		frames, _ = message.AppendRawFrame(frames, env, 0)
	}
	const streams = message.StreamsPerPeer // as many as a peer may open
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		written int64
	)
	stop := time.Now().Add(15 * time.Second)
	for range streams {
		wg.Go(func() {
			st, err := h.NewStream(ctx, id, protocol.ID(message.ProtocolID))
			if err != nil {
				t.Error(err)
				return
			}
			defer st.Reset()
			for time.Now().Before(stop) {
				_ = st.SetWriteDeadline(stop)
				k, err := st.Write(frames)
				mu.Lock()
				written += int64(k)
				mu.Unlock()
				if err != nil {
					return // blocked until the deadline, or reset by the node
				}
			}
		})
	}
	var peak int64
	for time.Now().Before(stop.Add(-5 * time.Second)) {
		peak = max(peak, rssBytes(t, pid))
		time.Sleep(50 * time.Millisecond)
	}
	// Meanwhile another peer is answered.
	h2, _ := dialRaw(ctx, t, n)
	svc := message.NewService(h2, nil, message.ServiceConfig{})
	defer svc.Close()
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	rtt, err := svc.Ping(pctx, id)
	pcancel()
	if err != nil {
		t.Errorf("ping from another peer during the attack: %v", err)
	}
	for time.Now().Before(stop) {
		peak = max(peak, rssBytes(t, pid))
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	after := rssBytes(t, pid)
	t.Logf("other peer's ping %v", rtt)
	t.Logf("sent %d KiB of pings without reading; RSS idle %d MiB, peak %d MiB, after %d MiB", written>>10, idle>>20, peak>>20, after>>20)
	if peak-idle > 128<<20 {
		t.Errorf("RSS grew by %d MiB", (peak-idle)>>20)
	}
}
