package opskit

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestDashboard checks the Grafana dashboard: it parses, has the datasource
// and instance variables, every panel has queries on the selected data
// source, every query filters on $instance and uses $__rate_interval as its
// only range, and the node's metrics all appear somewhere.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q: both are needed for provisioning", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current schema (39)", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if len(vars) != 2 {
		t.Errorf("variables %v, want exactly datasource and instance", vars)
	}
	ds, ok := vars["datasource"]
	if !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("datasource variable = %+v, want type datasource with query prometheus", ds)
	}
	inst, ok := vars["instance"]
	if !ok || inst.Type != "query" {
		t.Fatalf("instance variable = %+v, want a query variable", inst)
	}
	const instQuery = "label_values(agent_info, instance)"
	var q struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(inst.Query, &q); err != nil || q.Query != instQuery || inst.Definition != instQuery {
		t.Errorf("instance variable query %s definition %q, want %s", inst.Query, inst.Definition, instQuery)
	}
	if inst.Datasource == nil || inst.Datasource.UID != "${datasource}" {
		t.Errorf("instance variable data source %+v, want ${datasource}", inst.Datasource)
	}
	if !inst.Multi || !inst.IncludeAll || inst.AllValue != ".*" {
		t.Errorf("instance variable: multi %v includeAll %v allValue %q, want multi-select with All = .*", inst.Multi, inst.IncludeAll, inst.AllValue)
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
			if !strings.Contains(s[2], `instance=~"$instance"`) {
				t.Errorf("panel %q query %s: selector %s does not filter on instance=~\"$instance\"", e.Panel, e.RefID, s[0])
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
		"tasks_total", "task_duration_seconds_bucket",
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
	if n != 5 {
		t.Errorf("%d latency queries, want 5 (message p50/p99, storage p99, task p50/p99)", n)
	}
}

func TestDashboardQueriesParse(t *testing.T) {
	var exprs []string
	for _, e := range loadDashboard(t).exprs() {
		exprs = append(exprs, substitute(e.Expr, ".*", "1m"))
	}
	checkPromQL(t, "dashboard", exprs)
}
