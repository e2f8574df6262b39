package opskit

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// grafanaUnits are the Grafana unit ids the dashboard may use (a subset of
// Grafana's list, which dashboard-linter checks against).
var grafanaUnits = map[string]bool{
	"none": true, "short": true, "percent": true, "percentunit": true, "bytes": true, "decbytes": true,
	"s": true, "ms": true, "µs": true, "ns": true, "reqps": true, "ops": true, "rps": true, "wps": true,
	"Bps": true, "binBps": true, "pps": true,
}

// TestDashboard checks the Grafana dashboard against the rules of Grafana's
// dashboard-linter (github.com/grafana/dashboard-linter, not served by the
// module proxy here, hence this test): it parses, is not editable, has the
// datasource, job and instance variables (job and instance multi-select with
// All = .+), every panel has a title, a description, a unit and queries on
// the selected data source, every query filters on $job and $instance and
// uses $__rate_interval as its only range, and the node's metrics all
// appear somewhere.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q: both are needed for provisioning", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current schema (39)", d.SchemaVersion)
	}

	if d.Editable {
		t.Errorf("dashboard is editable: the linter wants provisioned dashboards read-only")
	}
	vars := map[string]variable{}
	var names []string
	for _, v := range d.Templating.List {
		vars[v.Name] = v
		names = append(names, v.Name)
	}
	if !slices.Equal(names, []string{"datasource", "job", "instance"}) {
		t.Errorf("variables %v, want exactly datasource, job and instance", names)
	}
	ds, ok := vars["datasource"]
	if !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` || ds.Label != "Data source" {
		t.Errorf("datasource variable = %+v, want type datasource with query prometheus, label Data source", ds)
	}
	// dashboard-linter's template-job-rule and template-instance-rule.
	for _, c := range []struct{ name, label, query string }{
		{"job", "Job", "label_values(agent_info, job)"},
		{"instance", "Instance", `label_values(agent_info{job=~"$job"}, instance)`},
	} {
		v, ok := vars[c.name]
		if !ok || v.Type != "query" {
			t.Errorf("%s variable = %+v, want a query variable", c.name, v)
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil || q.Query != c.query || v.Definition != c.query {
			t.Errorf("%s variable query %s definition %q, want %s", c.name, v.Query, v.Definition, c.query)
		}
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("%s variable data source %+v, want ${datasource}", c.name, v.Datasource)
		}
		if v.Label != c.label || !v.Multi || !v.IncludeAll || v.AllValue != ".+" {
			t.Errorf("%s variable: label %q multi %v includeAll %v allValue %q, want label %s, multi-select with All = .+",
				c.name, v.Label, v.Multi, v.IncludeAll, v.AllValue, c.label)
		}
	}

	ids := map[int]string{}
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		// dashboard-linter's panel-units-rule and panel-title-description-rule
		if !grafanaUnits[p.FieldConfig.Defaults.Unit] {
			t.Errorf("panel %q unit %q, want one of Grafana's units", p.Title, p.FieldConfig.Defaults.Unit)
		}
		if p.Title == "" || p.Description == "" {
			t.Errorf("panel %d: title %q description %q, want both", p.ID, p.Title, p.Description)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q data source %+v, want ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s data source %+v, want ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
		}
	}

	exprs := d.exprs()
	selector := regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	rng := regexp.MustCompile(`\[([^\]]*)\]`)
	grouping := regexp.MustCompile(`\b(by|without)\s*\([^)]*\)`)
	funcName := regexp.MustCompile(`[a-z_]+\s*\(`)
	number := regexp.MustCompile(`\b[0-9]+(\.[0-9]+)?\b`)
	identifier := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	used := map[string]bool{}
	for _, e := range exprs {
		if strings.TrimSpace(e.Expr) == "" {
			t.Errorf("panel %q query %s is empty", e.Panel, e.RefID)
			continue
		}
		sels := selector.FindAllStringSubmatch(e.Expr, -1)
		if len(sels) == 0 {
			t.Errorf("panel %q query %s selects no series with a matcher: %s", e.Panel, e.RefID, e.Expr)
		}
		for _, s := range sels {
			used[s[1]] = true
			// dashboard-linter's target-job-rule and target-instance-rule
			for _, m := range []string{`job=~"$job"`, `instance=~"$instance"`} {
				if !strings.Contains(s[2], m) {
					t.Errorf("panel %q query %s: selector %s does not filter on %s", e.Panel, e.RefID, s[0], m)
				}
			}
		}
		// Every metric name must sit in one of those selectors: with selectors,
		// grouping clauses, function names, ranges and numbers removed, no
		// identifier may be left.
		bare := selector.ReplaceAllString(e.Expr, "")
		for _, re := range []*regexp.Regexp{grouping, funcName, rng, number} {
			bare = re.ReplaceAllString(bare, "")
		}
		for _, word := range identifier.FindAllString(bare, -1) {
			t.Errorf("panel %q query %s: %s is selected without the instance filter", e.Panel, e.RefID, word)
		}
		for _, r := range rng.FindAllStringSubmatch(e.Expr, -1) {
			if r[1] != "$__rate_interval" {
				t.Errorf("panel %q query %s: range [%s], want [$__rate_interval]", e.Panel, e.RefID, r[1])
			}
		}
	}
	for _, m := range []string{
		"agent_peers_connected", "agent_info",
		"messages_received_total", "messages_sent_total", "message_processing_duration_seconds_bucket", "message_processing_errors_total",
		"storage_operations_total", "storage_operation_duration_seconds_bucket", "storage_operation_errors_total",
		"process_cpu_usage", "process_memory_bytes",
		"tasks_total", "task_duration_seconds_bucket", "up",
	} {
		if !used[m] {
			t.Errorf("no panel queries %s", m)
		}
	}
}

// TestDashboardQueriesParse has promtool parse every panel query, with the
// variables substituted the way Grafana does before sending it.
// TestLatencyPanelsShowExemplars: every latency query over a duration
// histogram asks Grafana for exemplars, so a slow point links to its trace.
func TestLatencyPanelsShowExemplars(t *testing.T) {
	n := 0
	for _, p := range allPanels(loadDashboard(t).Panels) {
		for _, tg := range p.Targets {
			if strings.Contains(tg.Expr, "histogram_quantile") && strings.Contains(tg.Expr, "_duration_seconds_bucket") {
				n++
				if !tg.Exemplar {
					t.Errorf("panel %q query %s: exemplar is off", p.Title, tg.RefID)
				}
			}
		}
	}
	if n != 6 {
		t.Errorf("%d latency queries, want 6 (message p99 by node, message p50/p99, storage p99, task p50/p99)", n)
	}
}

func TestDashboardQueriesParse(t *testing.T) {
	var exprs []string
	for _, e := range loadDashboard(t).exprs() {
		exprs = append(exprs, substitute(e.Expr, ".*", "1m"))
	}
	checkPromQL(t, "dashboard", exprs)
}
