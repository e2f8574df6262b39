package opskit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// metricsNode is the metrics half of a node, assembled in process from the
// real parts: a registry with every catalogue family, a Pebble store wrapped
// by the instrumenting decorator, the process sampler and the metrics server.
type metricsNode struct {
	url   string
	store storage.Store
	msgs  *metrics.Messages
	tasks *metrics.Tasks
}

func startMetricsNode(t *testing.T, peerID string) *metricsNode {
	t.Helper()
	reg := metrics.NewRegistry("v0.0.0-opskit", peerID)
	backend, err := local.Open(t.TempDir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &metricsNode{
		store: storage.Instrument(backend, metrics.NewStorage(reg, config.Backends()), "local"),
		msgs:  metrics.NewMessages(reg, message.MetricLabels()),
		tasks: metrics.NewTasks(reg, task.MetricLabels()),
	}
	t.Cleanup(func() { _ = n.store.Close() })
	metrics.RegisterPeers(reg, func() int { return 1 })
	sampler := metrics.NewSampler(reg, 200*time.Millisecond, nil)
	sampler.Start(context.Background())
	t.Cleanup(sampler.Stop)
	srv := metrics.NewServer(reg, func() bool { return true }, metrics.ServerConfig{Listen: "127.0.0.1:0"})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	n.url = srv.URL()
	return n
}

// traffic runs real storage operations through the instrumented Pebble
// store and records message and task traffic on the catalogue's children.
// Writes are Eventual: a synced write's latency is the machine's disk, and
// one fsync over 50 ms on a loaded CI machine would make the latency alert
// pending in a fleet that is otherwise healthy.
func (n *metricsNode) traffic(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		key := fmt.Sprintf("opskit/%d", i)
		if err := n.store.Put(ctx, key, []byte("value"), storage.Eventual); err != nil {
			t.Fatal(err)
		}
		if _, err := n.store.Get(ctx, key, storage.Strong); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.store.List(ctx, "opskit/", storage.Strong); err != nil {
		t.Fatal(err)
	}
	if err := n.store.Delete(ctx, "opskit/0", storage.Eventual); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		ping := n.msgs.For("ping")
		ping.Received.Inc()
		ping.Duration.Observe(300e-6)
		n.msgs.For("pong").Sent.Inc()
	}
	n.tasks.Total.WithLabelValues("text.chunk", "succeeded").Inc()
	n.tasks.Duration.WithLabelValues("text.chunk").Observe(2e-3)
}

// TestKitAgainstMetricsServers runs the operator kit against two metrics
// servers assembled in process from the real metrics, storage and server
// code (no p2p-agent binary needed): a real prometheus with alerts.yml
// scrapes them, and every dashboard query, rule and documented example must
// be accepted, show the traffic and raise no alert. TestLiveFleet does the
// same against real p2p-agent processes.
func TestKitAgainstMetricsServers(t *testing.T) {
	testenv.SkipIfShort(t, "starts prometheus")
	rules, dash, doc := loadRules(t), loadDashboard(t), parseCatalogue(t)
	a := startMetricsNode(t, "12D3KooWOpskitNodeA")
	b := startMetricsNode(t, "12D3KooWOpskitNodeB")
	f := startFleetPrometheus(t, a.url, b.url)
	f.backends = []string{"local"}
	f.tasks = 2

	a.traffic(t)
	b.traffic(t)

	f.waitIngested(t)
	f.checkDashboard(t, dash)
	f.checkRules(t, rules)
	f.checkDocExamples(t, doc)
}
