package main_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestStalledFrameBehindUnreadReplies: a peer pipelines 20,000 pings,
// starts one more frame and never finishes it, and never reads a reply.
// The node's reader, flushing pongs the peer does not read before waiting
// for the rest of that frame, does not count that wait against the frame
// (TestPipeliningPeerThatReadsLate), so the attacker might hope to hold
// the stream for ever; the write deadline (10 s) ends it, and the stream
// is reset within the write and read deadlines together (20 s).
func TestStalledFrameBehindUnreadReplies(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h, id := dialRaw(ctx, t, n)
	st, err := h.NewStream(ctx, id, protocol.ID(message.ProtocolID))
	if err != nil {
		t.Fatal(err)
	}
	frame := func(body string) []byte { f, _ := message.AppendRawFrame(nil, []byte(body), 0); return f }
	var buf []byte
	for i := range 20000 {
		buf = append(buf, frame(`{"v":1,"id":"p`+strconv.Itoa(i)+`","type":"ping","payload":{}}`)...)
	}
	last := frame(`{"v":1,"id":"last","type":"ping","payload":{}}`)
	start := time.Now()
	go func() { _, _ = st.Write(append(buf, last[:10]...)) }()
	defer st.Reset()
	for time.Since(start) < 25*time.Second {
		time.Sleep(200 * time.Millisecond)
		if _, err := st.Write(nil); err != nil { // fails once the node reset the stream
			t.Logf("stream reset by the node after %v: %v", time.Since(start).Round(100*time.Millisecond), err)
			return
		}
	}
	t.Fatal("stream still open 25 s after the attack began (write + read deadlines: 20 s)")
}
