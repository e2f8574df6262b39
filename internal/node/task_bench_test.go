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
