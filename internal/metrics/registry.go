package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/p2p-ai-agents/p2p-agent/internal/httplimit"
)

// NewRegistry returns a fresh registry for one node holding the standard Go
// collector, the process_* families of client_golang's process collector
// (on Linux from a cheaper collector of this package, see
// process_collector_linux.go) and agent_info{version,peer_id}. Every component of
// the node records on this registry and nothing uses the global default, so
// the node's own families (storage, messages, tasks, ...) are per node. Not
// everything on it is: the Go and process collectors describe the whole
// process, and go-libp2p's collectors (registered through
// p2p.HostConfig.Registerer) are package-level variables of go-libp2p, so
// two nodes in one process expose the same, process-wide, libp2p values.
func NewRegistry(version, peerID string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		newProcessCollector(),
	)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "agent_info",
		Help:        "Constant 1, labelled with the node's build version and libp2p peer ID. Join on it to name a node in queries.",
		ConstLabels: prometheus.Labels{"version": version, "peer_id": peerID},
	})
	info.Set(1)
	reg.MustRegister(info)
	return reg
}

// ConnRefusals is agent_connections_refused_total: connections the node's
// HTTP listeners closed at accept, by listener and by the limit that refused
// them.
type ConnRefusals struct{ vec *prometheus.CounterVec }

// The listeners of agent_connections_refused_total, and the limits that
// refuse connections on each (the metrics listener has a per-client cap,
// the control API, on loopback by default, does not).
var connLimits = map[string][]string{
	"metrics": {httplimit.RefusedMax, httplimit.RefusedPerClient},
	"api":     {httplimit.RefusedMax},
}

// NewConnRefusals registers agent_connections_refused_total on reg, every
// listener x limit pair pre-initialised to zero.
func NewConnRefusals(reg prometheus.Registerer) *ConnRefusals {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agent_connections_refused_total",
		Help: "Connections the node's HTTP listeners closed at accept, by listener (metrics, api) and by the limit that refused them (max_connections, max_connections_per_client).",
	}, []string{"listener", "reason"})
	for l, rs := range connLimits {
		for _, r := range rs {
			vec.WithLabelValues(l, r)
		}
	}
	reg.MustRegister(vec)
	return &ConnRefusals{vec: vec}
}

// For returns the function counting the refusals of listener ("metrics" or
// "api"), for httplimit.ConnLimits.Refused. Its counters are resolved here;
// a reason outside the listener's limits is counted as Unknown.
func (c *ConnRefusals) For(listener string) func(reason string) {
	byReason := map[string]prometheus.Counter{}
	for _, r := range connLimits[listener] {
		byReason[r] = c.vec.WithLabelValues(listener, r)
	}
	return func(reason string) {
		if ctr, ok := byReason[reason]; ok {
			ctr.Inc()
			return
		}
		c.vec.WithLabelValues(listener, Unknown).Inc()
	}
}

// RegisterPeers registers agent_peers_connected, read at scrape time from
// count (the p2p host's live connection table), so it is never stale.
func RegisterPeers(reg prometheus.Registerer, count func() int) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "agent_peers_connected",
		Help: "Number of peers this node currently has at least one live libp2p connection to, read at scrape time.",
	}, func() float64 {
		if count == nil {
			return 0
		}
		return float64(count())
	}))
}
