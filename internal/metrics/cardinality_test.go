package metrics_test

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// seriesCount gathers reg and counts the series of each family.
func seriesCount(t *testing.T, reg *prometheus.Registry) map[string]int {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range fams {
		out[f.GetName()] = len(f.GetMetric())
	}
	return out
}

// TestBogusLabelValuesStayBounded records 10,000 distinct bogus message
// types, error reasons, task types and backends through the closed-set
// mappers and checks that not one series is added beyond the pre-initialised
// ones: everything unknown lands on "unknown".
func TestBogusLabelValuesStayBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	msgs := metrics.NewMessages(reg, message.MetricLabels())
	tasks := metrics.NewTasks(reg, task.MetricLabels())
	st := metrics.NewStorage(reg, config.Backends())
	before := seriesCount(t, reg)
	types := len(message.Types()) + 1 // and unknown
	if before["messages_received_total"] != types || before["message_processing_errors_total"] != types*(len(message.ErrorReasons())+1) || before["tasks_total"] != 5*3 {
		t.Fatalf("pre-initialised series = %v", before)
	}
	for i := 0; i < 10000; i++ {
		bogus := fmt.Sprintf("bogus-%d", i)
		m := msgs.For(bogus)
		m.Received.Inc()
		m.Duration.Observe(0.001)
		m.Sent.Inc()
		m.Error(bogus).Inc()
		tasks.Total.WithLabelValues(tasks.Type(bogus), tasks.Outcome(bogus)).Inc()
		st.Duration.WithLabelValues("get", st.Backend(bogus)).Observe(0.001)
	}
	after := seriesCount(t, reg)
	for name, n := range before {
		if after[name] != n && name != "tasks_total" && name != "storage_operations_total" {
			t.Errorf("%s grew from %d to %d series", name, n, after[name])
		}
	}
	// tasks: one extra series {unknown,unknown}; storage: {get,unknown}
	if after["tasks_total"] != before["tasks_total"]+1 {
		t.Errorf("tasks_total: %d series, want %d", after["tasks_total"], before["tasks_total"]+1)
	}
	if after["storage_operations_total"] != 1 {
		t.Errorf("storage_operations_total: %d series, want 1", after["storage_operations_total"])
	}
	if got := testCounter(t, reg, "messages_received_total", "unknown"); got != 10000 {
		t.Errorf("messages_received_total{unknown} = %v, want 10000", got)
	}
}

func testCounter(t *testing.T, reg *prometheus.Registry, name, typ string) float64 {
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" && l.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}
