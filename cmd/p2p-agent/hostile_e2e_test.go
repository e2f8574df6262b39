package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// rssBytes reads VmRSS of process pid from /proc.
func rssBytes(t *testing.T, pid int) int64 { return procStatusBytes(t, pid, "VmRSS:") }

// procStatusBytes reads a size field (in kB) of /proc/PID/status.
func procStatusBytes(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// dialRaw connects a raw libp2p host (go-libp2p defaults, TCP on loopback,
// none of the node's code) to node n within ctx and returns it with the
// node's peer ID. The host is closed when the test ends.
func dialRaw(ctx context.Context, t *testing.T, n *testenv.Node) (host.Host, peer.ID) {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ai, err := peer.AddrInfoFromString(n.FullAddr())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	return h, ai.ID
}

// TestHostilePeerBoundedMemory connects a real libp2p host to the built
// binary and sends it as many streams as a peer may open
// (message.StreamsPerPeer, 32) x 64 task.request frames at once whose
// outputs are huge (text.embed at the largest dim, text.chunk with a tiny
// window) or just under the message limit. The node's RSS must stay under
// 512 MiB during and after, every request must be answered (a result or a
// refusal), and the refusals must be counted exactly.
func TestHostilePeerBoundedMemory(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	pid := n.PID()
	idle := rssBytes(t, pid)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h, id := dialRaw(ctx, t, n)
	client := &http.Client{Timeout: 5 * time.Second}
	before, _ := testenv.Scrape(t, client, n.MetricsURL)

	texts := make([]string, 4096)
	for i := range texts {
		texts[i] = "w" + strconv.Itoa(i)
	}
	hugeEmbed, _ := json.Marshal(map[string]any{"texts": texts, "dim": task.MaxDim})
	nearEmbed, _ := json.Marshal(map[string]any{"texts": texts[:7], "dim": task.MaxDim})
	hugeChunk, _ := json.Marshal(map[string]any{"text": strings.Repeat("a ", 20000), "size": 2, "overlap": 1})
	inputs := []struct {
		typ   string
		input json.RawMessage
	}{{task.TypeEmbed, hugeEmbed}, {task.TypeEmbed, nearEmbed}, {task.TypeChunk, hugeChunk}, {task.TypeEmbed, nearEmbed}}

	const streams, perStream = message.StreamsPerPeer, 64
	var (
		mu      sync.Mutex
		replies = map[string]int{} // "<type>/<state>/<code>" or "error/<code>"
		peak    int64
		wg      sync.WaitGroup
		done    = make(chan struct{})
	)
	go func() { // sample RSS while the attack runs
		for {
			r := rssBytes(t, pid)
			mu.Lock()
			peak = max(peak, r)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	for s := range streams {
		wg.Go(func() {
			st, err := h.NewStream(ctx, id, protocol.ID(message.ProtocolID))
			if err != nil {
				t.Error(err)
				return
			}
			defer st.Close()
			var buf []byte
			for i := range perStream {
				in := inputs[(s+i)%len(inputs)]
				payload, _ := json.Marshal(task.Request{Type: in.typ, Input: in.input, TimeoutMS: 60000})
				env, _ := json.Marshal(message.Envelope{V: 1, ID: fmt.Sprintf("s%d-%d", s, i), Type: message.TypeTaskRequest, SentAt: time.Now().UTC(), Payload: payload})
				buf, _ = message.AppendRawFrame(buf, env, 0)
			}
			go func() { // write while the replies are read, as a real requester does
				if _, err := st.Write(buf); err != nil {
					t.Error(err)
				}
			}()
			// Frames are read whole and decoded afterwards: a reader that
			// decodes each reply (an embedding is ~0.5 MB of JSON) before
			// reading the next is slow enough under -race on a loaded
			// machine that the node's write deadline rightly resets the
			// stream, which is TestPeerThatNeverReadsReplies's subject,
			// not this test's.
			br := bufio.NewReader(st)
			bodies := make([][]byte, 0, perStream)
			for range perStream {
				body, err := message.ReadRawFrame(br, message.DefaultMaxMessageBytes)
				if err != nil {
					t.Errorf("stream %d after %d replies: %v", s, len(bodies), err)
					break
				}
				bodies = append(bodies, body)
			}
			for _, body := range bodies {
				var env message.Envelope
				if err := json.Unmarshal(body, &env); err != nil {
					t.Errorf("stream %d: %v", s, err)
					return
				}
				key := "error/"
				if env.Type == message.TypeTaskResult {
					var rec struct{ Type, State, Code string } // not the output
					_ = json.Unmarshal(env.Payload, &rec)
					key = rec.Type + "/" + rec.State + "/" + rec.Code
				} else {
					var ep message.ErrorPayload
					_ = json.Unmarshal(env.Payload, &ep)
					key += ep.Code
				}
				mu.Lock()
				replies[key]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(done)
	mu.Lock()
	t.Logf("replies: %v", replies)
	t.Logf("RSS idle %d MiB, peak during the attack %d MiB", idle>>20, peak>>20)
	total := 0
	for _, c := range replies {
		total += c
	}
	if total != streams*perStream {
		// Say which replies the node failed to send, and why.
		fams, _ := testenv.Scrape(t, client, n.MetricsURL)
		for _, m := range fams["message_processing_errors_total"].GetMetric() {
			if v := m.GetCounter().GetValue(); v > 0 {
				t.Logf("message_processing_errors_total%v %v", m.GetLabel(), v)
			}
		}
		t.Fatalf("%d replies, want %d", total, streams*perStream)
	}
	if peak >= 512<<20 {
		t.Fatalf("peak RSS %d MiB, want < 512 MiB", peak>>20)
	}
	mu.Unlock()

	after, _ := testenv.Scrape(t, client, n.MetricsURL)
	ds := []testenv.Delta{
		{Name: "tasks_refused_total", Labels: testenv.L("type", task.TypeEmbed, "reason", "too_large"), Want: float64(replies["text.embed/failed/too_large"])},
		{Name: "tasks_refused_total", Labels: testenv.L("type", task.TypeChunk, "reason", "too_large"), Want: float64(replies["text.chunk/failed/too_large"])},
		{Name: "tasks_refused_total", Labels: testenv.L("type", task.TypeEmbed, "reason", "busy"), Want: float64(replies["text.embed/failed/busy"])},
		{Name: "message_processing_errors_total", Labels: testenv.L("type", message.TypeTaskRequest, "reason", "busy"), Want: float64(replies["error/busy"])},
		{Name: "tasks_total", Labels: testenv.L("type", task.TypeEmbed, "outcome", "succeeded"), Want: float64(replies["text.embed/succeeded/"])},
	}
	if err := testenv.CheckDeltas(before, after, ds); err != nil {
		t.Fatal(err)
	}
	if replies["text.embed/failed/too_large"] == 0 || replies["text.chunk/failed/too_large"] == 0 || replies["text.embed/succeeded/"] == 0 {
		t.Fatalf("expected too_large refusals and successes: %v", replies)
	}
	var settled int64
	testenv.Eventually(t, 30*time.Second, func() error {
		settled = rssBytes(t, pid)
		if settled > idle+128<<20 {
			return fmt.Errorf("RSS %d MiB, idle was %d MiB", settled>>20, idle>>20)
		}
		return nil
	})
	t.Logf("RSS after the attack %d MiB", settled>>20)
}
