package metrics_test

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

func TestSnapshotRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	msgs := metrics.NewMessages(reg, message.MetricLabels())
	st := metrics.NewStorage(reg, config.Backends())
	a, err := metrics.TakeSnapshot(reg)
	if err != nil {
		t.Fatal(err)
	}
	// 100 pings handled: 98 at 0.2 ms, 2 at 0.6 ms; 10 storage ops, 1 error.
	ping := msgs.For("ping")
	for i := range 100 {
		ping.Received.Inc()
		ping.Sent.Inc()
		d := 0.0002
		if i >= 98 {
			d = 0.0006
		}
		ping.Duration.Observe(d)
	}
	for range 10 {
		st.Duration.WithLabelValues("get", "local").Observe(0.001)
	}
	st.Errors.WithLabelValues("get", "local").Inc()
	b, err := metrics.TakeSnapshot(reg)
	if err != nil {
		t.Fatal(err)
	}
	b.Time = a.Time.Add(2 * time.Second)
	r := metrics.Between(a, b)
	if r.MessagesIn != 50 || r.MessagesOut != 50 || r.StorageOps != 5 || r.StorageErrors != 0.5 || r.MessagesHandled != 100 {
		t.Fatalf("rates %+v", r)
	}
	// p99 rank 99 falls in the 0.5-1 ms bucket, which holds 2 of 100:
	// 0.5 ms + 0.5 ms * (99-98)/2 = 0.75 ms, as histogram_quantile says.
	if math.Abs(r.MessageP99-0.00075) > 1e-12 {
		t.Fatalf("p99 = %v, want 0.00075", r.MessageP99)
	}
	if idle := metrics.Between(b, b); !math.IsNaN(idle.MessageP99) {
		t.Fatalf("p99 of nothing = %v, want NaN", idle.MessageP99)
	}
}
