package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCounterFamily: the counters kept in TypeMetrics are exposed as the
// families client_golang's CounterVec gave before (same names, help, type
// and series, a created timestamp each), and WithLabelValues maps a value
// outside the set to "unknown".
func TestCounterFamily(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMessages(reg, MessageLabels{Types: []string{"ping", "pong"}, Reasons: []string{"malformed"}})
	m.For("ping").Sent.Inc()
	m.For("ping").Sent.Inc()
	m.For("pong").Received.Inc()
	m.For("nonsense").Received.Inc()

	want := `# HELP messages_sent_total Messages written to peers (requests and responses), by message type.
# TYPE messages_sent_total counter
messages_sent_total{type="ping"} 2
messages_sent_total{type="pong"} 0
messages_sent_total{type="unknown"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "messages_sent_total"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		typ  string
		want float64
	}{{"pong", 1}, {"unknown", 1}, {"other", 1}, {"ping", 0}} {
		if got := testutil.ToFloat64(m.Received.WithLabelValues(c.typ)); got != c.want {
			t.Errorf("received %s = %v, want %v", c.typ, got, c.want)
		}
	}
	if got := m.ReceivedTotal(); got != 2 {
		t.Errorf("ReceivedTotal = %v, want 2", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "messages_received_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if s.GetCounter().GetCreatedTimestamp() == nil {
				t.Errorf("series %v has no created timestamp", s.GetLabel())
			}
		}
	}
}

// TestConnRefusals: the family's series are the listener x limit pairs of
// the node, each at zero; For counts by limit, and an outsider as unknown.
func TestConnRefusals(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewConnRefusals(reg)
	metricsListener, api := c.For("metrics"), c.For("api")
	metricsListener("max_connections_per_client")
	metricsListener("max_connections_per_client")
	api("max_connections")
	api("no-such-limit")
	want := `# HELP agent_connections_refused_total Connections the node's HTTP listeners closed at accept, by listener (metrics, api) and by the limit that refused them (max_connections, max_connections_per_client).
# TYPE agent_connections_refused_total counter
agent_connections_refused_total{listener="api",reason="max_connections"} 1
agent_connections_refused_total{listener="api",reason="unknown"} 1
agent_connections_refused_total{listener="metrics",reason="max_connections"} 0
agent_connections_refused_total{listener="metrics",reason="max_connections_per_client"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "agent_connections_refused_total"); err != nil {
		t.Fatal(err)
	}
}
