package node

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/fleet"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// fleetState wires the fleet service (info protocol and view) to the node:
// what the node says about itself, its metrics URL, /sd and the network view.
type fleetState struct {
	n     *Node
	svc   *fleet.Service
	msgs  *metrics.Messages
	tasks *metrics.Tasks

	mu       sync.Mutex
	lastAt   time.Time
	lastMsgs float64
	rate     float64
}

// rateWindow is the shortest interval over which messages/s is measured.
const rateWindow = time.Second

func newFleetState(n *Node, msgs *metrics.Messages, tasks *metrics.Tasks) *fleetState {
	f := &fleetState{n: n, msgs: msgs, tasks: tasks, lastAt: time.Now(), lastMsgs: msgs.ReceivedTotal()}
	info := msgs.For(message.TypeInfo)
	f.svc = fleet.New(n.host.Libp2p(), fleet.Config{
		Local:      f.local,
		MetricsURL: f.metricsURLFor,
		TTL:        n.cfg.P2P.PeerTTL,
		Refused:    func(reason string) { info.Error(reason).Inc() },
		Logger:     n.log,
	})
	return f
}

func (f *fleetState) start(ctx context.Context) error { return f.svc.Start(ctx) }

func (f *fleetState) close() {
	if f != nil {
		f.svc.Close()
	}
}

// messagesPerSecond is the inbound message rate over the last window of at
// least a second (the rate is updated when asked, at most once a window).
func (f *fleetState) messagesPerSecond() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if d := now.Sub(f.lastAt); d >= rateWindow {
		total := f.msgs.ReceivedTotal()
		f.rate = (total - f.lastMsgs) / d.Seconds()
		f.lastAt, f.lastMsgs = now, total
	}
	return f.rate
}

func (f *fleetState) local() fleet.Local {
	n := f.n
	cpu, mem := n.sampler.Last()
	return fleet.Local{
		Name:              n.cfg.Node.Name,
		Version:           n.version,
		State:             n.State().String(),
		Capabilities:      n.tasks.Types(),
		CPUPercent:        cpu,
		MemoryBytes:       mem,
		MessagesPerSecond: f.messagesPerSecond(),
		TasksRunning:      int(f.tasks.RunningNow()),
	}
}

// metricsURLFor is the metrics URL told to a peer that reached this node
// on local: metrics.advertise_url when set; else the bound metrics address,
// its host replaced by local when the listener is on a wildcard address.
func (f *fleetState) metricsURLFor(local net.IP) string {
	host := ""
	if local != nil {
		host = local.String()
	}
	return f.metricsURL(host)
}

// metricsURL derives the metrics URL with host standing for a wildcard
// listen address ("" when unknown: the server's display address).
func (f *fleetState) metricsURL(host string) string {
	n := f.n
	if n.metricsSrv == nil || n.metricsSrv.Addr() == nil {
		return ""
	}
	if u := n.cfg.Metrics.AdvertiseURL; u != "" {
		return u
	}
	bound, port, err := net.SplitHostPort(n.metricsSrv.Addr().String())
	if err != nil {
		return n.metricsSrv.URL()
	}
	if ip := net.ParseIP(bound); ip != nil && !ip.IsUnspecified() {
		host = bound
	}
	if host == "" {
		return n.metricsSrv.URL()
	}
	scheme := "http"
	if n.metricsSrv.TLS() {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + n.metricsSrv.Path()
}

// sd lists the targets of GET /sd: this node (at the host the request
// reached it by, when it listens on a wildcard address) and every node
// heard from within p2p.peer_ttl.
func (f *fleetState) sd(r *http.Request) []metrics.SDTarget {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip := net.ParseIP(host); ip == nil && !validHostname(host) {
		host = ""
	}
	out := []metrics.SDTarget{{PeerID: f.n.peerID.String(), Node: f.n.cfg.Node.Name, Version: f.n.version, URL: f.metricsURL(host)}}
	for _, nd := range f.svc.Nodes() {
		out = append(out, metrics.SDTarget{PeerID: nd.ID.String(), Node: nd.Answer.Name, Version: nd.Answer.Version, URL: nd.Answer.MetricsURL})
	}
	return out
}

// validHostname accepts a DNS name (letters, digits, '-', '.'), which is
// all a Host header may contribute to a target.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// network builds the network view of the control API: this node first,
// then every node heard from, and their edges, each pair once.
func (f *fleetState) network(ctx context.Context) api.NetworkView {
	n := f.n
	v := f.svc.Network(ctx)
	l := f.local()
	selfPeers := len(v.Edges[v.Self])
	self := api.NetworkNode{
		ID: n.peerID.String(), Name: l.Name, Version: l.Version, State: l.State, Self: true,
		Peers: &selfPeers, CPUPercent: l.CPUPercent, MemoryBytes: l.MemoryBytes,
		MessagesPerSecond: l.MessagesPerSecond, TasksRunning: l.TasksRunning,
		MetricsURL: f.metricsURL(""), Capabilities: l.Capabilities, Connected: true,
	}
	out := api.NetworkView{Self: self.ID, Nodes: []api.NetworkNode{self}}
	now := time.Now()
	for _, nd := range v.Nodes {
		a := nd.Answer
		var peers *int
		if e, ok := v.Edges[nd.ID]; ok {
			k := len(e)
			peers = &k
		}
		out.Nodes = append(out.Nodes, api.NetworkNode{
			ID: nd.ID.String(), Name: a.Name, Version: a.Version, State: a.State, Peers: peers,
			CPUPercent: a.CPUPercent, MemoryBytes: a.MemoryBytes, MessagesPerSecond: a.MessagesPerSecond,
			TasksRunning: a.TasksRunning, MetricsURL: a.MetricsURL, Capabilities: a.Capabilities,
			LastSeenSeconds: now.Sub(nd.LastSeen).Seconds(), Connected: nd.Connected,
		})
	}
	known := map[string]bool{}
	for _, nd := range out.Nodes {
		known[nd.ID] = true
	}
	type pair struct{ a, b string }
	idx := map[pair]int{}
	for from, edges := range v.Edges {
		for _, e := range edges {
			if !known[e.ID] {
				continue // an edge to a node not in the view: only one side is known
			}
			p := pair{from.String(), e.ID}
			if p.b < p.a {
				p.a, p.b = p.b, p.a
			}
			if i, ok := idx[p]; ok {
				if out.Edges[i].LatencyMs == 0 {
					out.Edges[i].LatencyMs = e.LatencyMs
				}
				continue
			}
			idx[p] = len(out.Edges)
			out.Edges = append(out.Edges, api.NetworkEdge{From: p.a, To: p.b, LatencyMs: e.LatencyMs})
		}
	}
	slices.SortFunc(out.Edges, func(x, y api.NetworkEdge) int {
		return cmp.Or(strings.Compare(x.From, y.From), strings.Compare(x.To, y.To))
	})
	return out
}
