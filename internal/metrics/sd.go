package metrics

import (
	"encoding/json"
	"net/http"
	"net/url"
)

// SDTarget is one node offered to Prometheus by GET /sd.
type SDTarget struct {
	PeerID  string
	Node    string
	Version string
	// URL is the node's metrics URL (scheme, host:port and path).
	URL string
}

// SDSource lists the nodes to offer, this one included, for a request to
// /sd (whose Host header tells how the scraper reaches this node).
type SDSource func(r *http.Request) []SDTarget

// SDGroup is one target group of Prometheus HTTP service discovery.
type SDGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// SDGroups renders targets as Prometheus HTTP SD target groups: one group
// per node with a usable metrics URL, labelled peer_id, node, version,
// __scheme__ and __metrics_path__.
func SDGroups(targets []SDTarget) []SDGroup {
	out := make([]SDGroup, 0, len(targets))
	for _, t := range targets {
		u, err := url.Parse(t.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			continue
		}
		path := u.Path
		if path == "" {
			path = "/metrics"
		}
		out = append(out, SDGroup{
			Targets: []string{u.Host},
			Labels: map[string]string{
				"peer_id":          t.PeerID,
				"node":             t.Node,
				"version":          t.Version,
				"__scheme__":       u.Scheme,
				"__metrics_path__": path,
			},
		})
	}
	return out
}

// sdHandler answers GET /sd with the JSON of Prometheus HTTP SD.
func sdHandler(src SDSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.Marshal(SDGroups(src(r)))
		if err != nil {
			http.Error(w, "encoding targets: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}
