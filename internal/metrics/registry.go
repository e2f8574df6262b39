package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
