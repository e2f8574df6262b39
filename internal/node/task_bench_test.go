package node_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/node"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// BenchmarkRemoteSmallTasks submits small text.chunk tasks on node A to run
// on node B (two in-process nodes on loopback TCP) through the task engine,
// and waits for each result: submit, persist, dispatch over the message
// service, execute and persist on B, answer, persist on A. Reported as
// tasks/s, one at a time and with 16 submitters.
func BenchmarkRemoteSmallTasks(b *testing.B) {
	a, _ := startNode(b, map[string]string{"p2p.listen": "/ip4/127.0.0.1/tcp/0"})
	peerB, _ := startNode(b, map[string]string{"p2p.listen": "/ip4/127.0.0.1/tcp/0", "p2p.bootstrap": a.Host().Addrs()[0]})
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(a.Host().PeersOffering(task.TypeChunk), peerB.PeerID()) {
		if time.Now().After(deadline) {
			b.Fatal("B never offered text.chunk to A")
		}
		time.Sleep(10 * time.Millisecond)
	}
	input := json.RawMessage(`{"text":"The quick brown fox jumps over the lazy dog. It was a sunny day.","size":8,"overlap":2}`)
	run := func(b *testing.B, n *node.Node) {
		ctx := context.Background()
		rec, err := n.Tasks().Submit(ctx, task.SubmitRequest{Type: task.TypeChunk, Input: input, Peer: peerB.PeerID()})
		if err != nil {
			b.Fatal(err)
		}
		for !rec.State.Final() {
			time.Sleep(200 * time.Microsecond)
			if rec, err = n.Tasks().Get(ctx, rec.ID); err != nil {
				b.Fatal(err)
			}
		}
		if rec.State != task.StateSucceeded {
			b.Fatalf("task: %+v", rec)
		}
	}
	b.Run("sequential", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			run(b, a)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
	})
	b.Run("concurrent-16", func(b *testing.B) {
		start := time.Now()
		var wg sync.WaitGroup
		work := make(chan struct{}, b.N)
		for i := 0; i < b.N; i++ {
			work <- struct{}{}
		}
		close(work)
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					run(b, a)
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
	})
}

// BenchmarkTracedRemoteTask measures what tracing a remote task costs: small
// text.chunk tasks submitted on A to run on B (two in-process nodes on
// loopback TCP, tracing.sample_ratio 0), in interleaved rounds of untraced
// (A), traced (--trace: spans on both nodes, traceparent on the wire) and
// untraced again (B, the A/A control), in rotating order. It reports the
// paired medians traced/raw and control, and ns/op of the traced task.
func BenchmarkTracedRemoteTask(b *testing.B) {
	opts := map[string]string{"p2p.listen": "/ip4/127.0.0.1/tcp/0", "tracing.sample_ratio": "0"}
	a, _ := startNode(b, opts)
	optsB := map[string]string{"p2p.listen": "/ip4/127.0.0.1/tcp/0", "tracing.sample_ratio": "0", "p2p.bootstrap": a.Host().Addrs()[0]}
	peerB, _ := startNode(b, optsB)
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(a.Host().PeersOffering(task.TypeChunk), peerB.PeerID()) {
		if time.Now().After(deadline) {
			b.Fatal("B never offered text.chunk to A")
		}
		time.Sleep(10 * time.Millisecond)
	}
	input := json.RawMessage(`{"text":"The quick brown fox jumps over the lazy dog.","size":8,"overlap":2}`)
	run := func(traced bool) {
		ctx := context.Background()
		rec, err := a.Tasks().Submit(ctx, task.SubmitRequest{Type: task.TypeChunk, Input: input, Peer: peerB.PeerID(), Trace: traced})
		if err != nil {
			b.Fatal(err)
		}
		if traced != (rec.TraceID != "") {
			b.Fatalf("traced %v but trace id %q", traced, rec.TraceID)
		}
		for !rec.State.Final() {
			time.Sleep(50 * time.Microsecond)
			if rec, err = a.Tasks().Get(ctx, rec.ID); err != nil {
				b.Fatal(err)
			}
		}
		if rec.State != task.StateSucceeded {
			b.Fatalf("task: %+v", rec)
		}
	}
	const batch = 20
	variants := [3]bool{false, true, false}
	orders := [6][3]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}, {1, 0, 2}}
	for _, v := range variants {
		for range batch {
			run(v)
		}
	}
	var ratio, control, tracedNs []float64
	var d [3]time.Duration
	b.ResetTimer()
	for r := range b.N {
		for _, k := range orders[r%6] {
			start := time.Now()
			for range batch {
				run(variants[k])
			}
			d[k] = time.Since(start)
		}
		raw := float64(d[0]+d[2]) / 2
		ratio = append(ratio, float64(d[1])/raw)
		control = append(control, float64(d[2])/float64(d[0]))
		tracedNs = append(tracedNs, float64(d[1])/batch)
	}
	b.StopTimer()
	med := func(xs []float64) float64 { slices.Sort(xs); return xs[len(xs)/2] }
	b.ReportMetric(med(tracedNs), "ns/op")
	b.ReportMetric(med(ratio), "traced/raw")
	b.ReportMetric(med(control), "control")
}
