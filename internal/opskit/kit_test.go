package opskit

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// ingestTimeout bounds how long Prometheus may take to show what a test did.
const ingestTimeout = 60 * time.Second

// fleet is a set of metrics endpoints scraped by a real prometheus that has
// deploy/prometheus/alerts.yml loaded.
type fleet struct {
	prom *testenv.Prometheus
	// instances are the targets' host:port, as Prometheus labels them.
	instances []string
	// backends are the storage backends the fleet's traffic used.
	backends []string
	// tasks is how many text.chunk tasks succeeded across the fleet.
	tasks int
}

// startFleetPrometheus starts prometheus scraping metricsURLs every second
// as job p2p-agent (the job the rules select) with the rules loaded, and
// waits until every target is up, so a pre-traffic sample of every series
// exists and rates see what follows as an increase.
func startFleetPrometheus(t *testing.T, metricsURLs ...string) *fleet {
	t.Helper()
	f := &fleet{}
	path := ""
	var targets []string
	for _, raw := range metricsURLs {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			t.Fatalf("metrics URL %q: %v", raw, err)
		}
		if path != "" && u.Path != path {
			t.Fatalf("targets serve metrics on different paths %q and %q", path, u.Path)
		}
		path = u.Path
		f.instances = append(f.instances, u.Host)
		targets = append(targets, fmt.Sprintf("%q", u.Host))
	}
	f.prom = testenv.StartPrometheus(t, fmt.Sprintf(`
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: p2p-agent
    metrics_path: %q
    static_configs:
      - targets: [%s]
`, repoPath(t, "deploy/prometheus/alerts.yml"), path, strings.Join(targets, ", ")))
	f.prom.WaitForTargetsUp(len(f.instances), 30*time.Second)
	return f
}

// waitVector polls expr until check accepts its instant vector.
func (f *fleet) waitVector(t *testing.T, expr string, check func([]testenv.Sample) error) {
	t.Helper()
	testenv.Eventually(t, ingestTimeout, func() error {
		v, err := f.prom.QueryVector(expr)
		if err != nil {
			return err
		}
		if err := check(v); err != nil {
			return fmt.Errorf("%s: %w (got %v)", expr, err, v)
		}
		return nil
	})
}

// perInstance requires a sample accepted by ok for every instance of the fleet.
func (f *fleet) perInstance(ok func(float64) bool) func([]testenv.Sample) error {
	return func(v []testenv.Sample) error {
		got := map[string]bool{}
		for _, s := range v {
			if ok(s.Value) {
				got[s.Metric["instance"]] = true
			}
		}
		for _, in := range f.instances {
			if !got[in] {
				return fmt.Errorf("no accepted sample for instance %s", in)
			}
		}
		return nil
	}
}

// byLabel requires a sample accepted by ok for every value in want of label.
func byLabel(label string, want []string, ok func(float64) bool) func([]testenv.Sample) error {
	return func(v []testenv.Sample) error {
		got := map[string]bool{}
		for _, s := range v {
			if ok(s.Value) {
				got[s.Metric[label]] = true
			}
		}
		for _, w := range want {
			if !got[w] {
				return fmt.Errorf("no accepted sample with %s=%q", label, w)
			}
		}
		return nil
	}
}

func positive(v float64) bool { return v > 0 }

func finitePositive(v float64) bool { return v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

// waitIngested waits until Prometheus shows the fleet's storage, message
// and task traffic.
func (f *fleet) waitIngested(t *testing.T) {
	t.Helper()
	f.waitVector(t, `sum by (instance) (rate(storage_operations_total{job="p2p-agent"}[1m]))`, f.perInstance(positive))
	f.waitVector(t, `sum by (instance) (rate(messages_received_total{job="p2p-agent"}[1m]))`, f.perInstance(positive))
	f.waitVector(t, `sum by (backend) (storage_operations_total{job="p2p-agent"})`, byLabel("backend", f.backends, positive))
	f.waitVector(t, `sum(tasks_total{job="p2p-agent", type="text.chunk", outcome="succeeded"})`, func(v []testenv.Sample) error {
		if len(v) != 1 || v[0].Value < float64(f.tasks) {
			return fmt.Errorf("want at least %d succeeded text.chunk tasks", f.tasks)
		}
		return nil
	})
}

// checkDashboard runs every dashboard query the way Grafana would, for all
// instances and for one: Prometheus must accept each, the core panels must
// show the traffic on every instance, and selecting one instance must return
// only that instance.
func (f *fleet) checkDashboard(t *testing.T, d dashboard) {
	t.Helper()
	core := map[string]func([]testenv.Sample) error{
		"Peers connected":                              f.perInstance(func(v float64) bool { return v >= 1 }),
		"Message rate by type":                         f.perInstance(positive),
		"Storage operations by operation and backend":  f.perInstance(positive),
		"Storage latency p99 by operation and backend": f.perInstance(finitePositive),
		"Resident memory":                              f.perInstance(positive),
	}
	seen := map[string]bool{}
	one := f.instances[0]
	// Grafana regex-escapes a selected value and then escapes the backslashes
	// for the PromQL string literal: 127\\.0\\.0\\.1:8080.
	oneRegex := strings.ReplaceAll(regexp.QuoteMeta(one), `\`, `\\`)
	for _, e := range d.exprs() {
		v, err := f.prom.QueryVector(substitute(e.Expr, ".*", "1m"))
		if err != nil {
			t.Errorf("panel %q query %s: %v", e.Panel, e.RefID, err)
			continue
		}
		if check, ok := core[e.Panel]; ok && e.RefID == "A" {
			seen[e.Panel] = true
			if err := check(v); err != nil {
				t.Errorf("panel %q query %s: %v; got %v", e.Panel, e.RefID, err, v)
			}
		}
		v, err = f.prom.QueryVector(substitute(e.Expr, oneRegex, "1m"))
		if err != nil {
			t.Errorf("panel %q query %s for instance %s: %v", e.Panel, e.RefID, one, err)
			continue
		}
		for _, s := range v {
			if in, ok := s.Metric["instance"]; ok && in != one {
				t.Errorf("panel %q query %s with instance %s selected returned instance %s", e.Panel, e.RefID, one, in)
			}
		}
	}
	for p := range core {
		if !seen[p] {
			t.Errorf("the dashboard has no panel %q", p)
		}
	}
}

// checkRules runs every rule expression of alerts.yml, waits until
// Prometheus has evaluated every rule without error, checks the recording
// rules carry the traffic, and requires a healthy fleet to have no pending
// or firing alert.
func (f *fleet) checkRules(t *testing.T, rules []rule) {
	t.Helper()
	for _, r := range rules {
		if _, _, err := f.prom.Query(r.Expr); err != nil {
			t.Errorf("rule %s: %v", r.Name(), err)
		}
	}
	testenv.Eventually(t, ingestTimeout, func() error {
		loaded, err := f.prom.Rules()
		if err != nil {
			return err
		}
		if len(loaded) != len(rules) {
			return fmt.Errorf("prometheus loaded %d rules, alerts.yml has %d", len(loaded), len(rules))
		}
		for _, r := range loaded {
			if r.Health != "ok" {
				return fmt.Errorf("rule %s (group %s): health %q %s", r.Name, r.Group, r.Health, r.LastError)
			}
		}
		return nil
	})
	f.waitVector(t, `instance:storage_operations:rate5m`, f.perInstance(positive))
	f.waitVector(t, `job:storage_operations:rate5m`, byLabel("backend", f.backends, positive))
	f.waitVector(t, `instance:messages_received:rate5m`, f.perInstance(positive))
	f.waitVector(t, `instance:storage_operation_duration_seconds:p99_rate5m{operation="put"}`, f.perInstance(finitePositive))
	f.waitVector(t, `instance:storage_operation_errors:ratio_rate5m{operation="put"}`, f.perInstance(func(v float64) bool { return v == 0 }))

	loaded, err := f.prom.Rules()
	if err != nil {
		t.Fatal(err)
	}
	var active []string
	for _, r := range loaded {
		if r.Type != "alerting" || r.State == "inactive" {
			continue
		}
		// A latency alert measures the machine (one slow fsync on a loaded
		// CI runner); pending is all it can be within this test, since it
		// needs 10 minutes to fire. Any other alert is a real failure.
		if r.State == "pending" && strings.HasSuffix(r.Name, "LatencyHigh") {
			t.Logf("%s pending: this machine's latency, not the kit's", r.Name)
			continue
		}
		active = append(active, r.Name+" ("+r.State+")")
	}
	sort.Strings(active)
	if len(active) > 0 {
		t.Errorf("a healthy fleet has active alerts: %v", active)
	}
}

// checkDocExamples runs the example query of every catalogue row.
func (f *fleet) checkDocExamples(t *testing.T, doc []docMetric) {
	t.Helper()
	for _, m := range doc {
		if _, _, err := f.prom.Query(m.Example); err != nil {
			t.Errorf("docs/metrics.md:%d example for %s: %v", m.Line, m.Name, err)
		}
	}
}
