package opskit

import (
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// docLabel is one label of a catalogue row: a closed set of values, or free.
type docLabel struct {
	Name   string
	Values []string // nil for a free label
}

// docMetric is one row of a catalogue table in docs/metrics.md.
type docMetric struct {
	Name    string
	Type    string
	Labels  []docLabel
	Example string
	Line    int
}

var (
	backticked  = regexp.MustCompile("`([^`]*)`")
	closedLabel = regexp.MustCompile("^`([a-z_]+)` ∈ \\{(.*)\\}$")
	freeLabel   = regexp.MustCompile("^`([a-z_]+)` \\(free\\)$")
	metricName  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
)

// parseCatalogue reads every table row of the "## Metric catalogue" section
// of docs/metrics.md (all its subsections) whose first cell is a metric name.
// Rows are `| name | type | labels | unit | moves when | example query |`.
func parseCatalogue(t testing.TB) []docMetric {
	t.Helper()
	raw, err := os.ReadFile(repoPath(t, "docs/metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []docMetric
	in := false
	for i, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(line) == "## Metric catalogue"
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		if len(cells) != 6 {
			t.Fatalf("docs/metrics.md:%d: %d cells, want 6 (metric, type, labels, unit, moves when, example query): %s", i+1, len(cells), line)
		}
		m := docMetric{Name: strings.Trim(cells[0], "`"), Type: cells[1], Line: i + 1}
		if !metricName.MatchString(m.Name) {
			t.Fatalf("docs/metrics.md:%d: %q is not a metric name", i+1, cells[0])
		}
		if cells[2] != "none" {
			for _, part := range strings.Split(cells[2], "<br>") {
				part = strings.TrimSpace(part)
				if c := closedLabel.FindStringSubmatch(part); c != nil {
					l := docLabel{Name: c[1]}
					for _, v := range backticked.FindAllStringSubmatch(c[2], -1) {
						l.Values = append(l.Values, v[1])
					}
					m.Labels = append(m.Labels, l)
				} else if f := freeLabel.FindStringSubmatch(part); f != nil {
					m.Labels = append(m.Labels, docLabel{Name: f[1]})
				} else {
					t.Fatalf("docs/metrics.md:%d: label %q is neither `name` ∈ {`v`, ...} nor `name` (free)", i+1, part)
				}
			}
		}
		ex := backticked.FindAllStringSubmatch(cells[5], -1)
		if len(ex) != 1 {
			t.Fatalf("docs/metrics.md:%d: example query cell must hold exactly one `query`: %s", i+1, cells[5])
		}
		m.Example = ex[0][1]
		out = append(out, m)
	}
	if len(out) == 0 {
		t.Fatal(`docs/metrics.md: no catalogue rows under "## Metric catalogue"`)
	}
	return out
}

// nodeRegistry builds a registry the way a node does, with the real
// constructors: every catalogue family, the storage decorator's children for
// both backends, the Redis pool statistics and the endpoint's own metrics.
func nodeRegistry(t testing.TB) *prometheus.Registry {
	t.Helper()
	reg := metrics.NewRegistry("v0.0.0-test", "12D3KooWDocsTestPeer")
	st := metrics.NewStorage(reg, config.Backends())
	// Instrument resolves the label children of every operation for its
	// backend; it never calls the wrapped store while wrapping.
	storage.Instrument(nil, st, "local")
	storage.Instrument(nil, st, "redis")
	metrics.NewMessages(reg, message.MetricLabels())
	metrics.NewTasks(reg, task.MetricLabels())
	metrics.RegisterPeers(reg, func() int { return 2 })
	metrics.NewConnRefusals(reg)
	metrics.NewSampler(reg, time.Second, nil).Sample()
	metrics.RegisterRedisPool(reg, func() metrics.PoolStats { return metrics.PoolStats{TotalConns: 1} })
	metrics.NewServer(reg, nil, metrics.ServerConfig{Listen: "127.0.0.1:0"}) // registers promhttp_metric_handler_*
	return reg
}

func typeName(t dto.MetricType) string {
	return strings.ToLower(t.String())
}

// TestMetricsDocMatchesRegistry checks the catalogue of docs/metrics.md
// against a real registry, both ways: every documented family exists with
// the documented type, label names and closed label sets, and every family
// of the registry is documented.
func TestMetricsDocMatchesRegistry(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the catalogue documents the Linux process metrics")
	}
	doc := parseCatalogue(t)
	fams, err := nodeRegistry(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}

	documented := map[string]bool{}
	for _, m := range doc {
		if documented[m.Name] {
			t.Errorf("docs/metrics.md:%d: %s is documented twice", m.Line, m.Name)
		}
		documented[m.Name] = true
		f, ok := byName[m.Name]
		if !ok {
			t.Errorf("docs/metrics.md:%d: %s is documented but no constructor registers it", m.Line, m.Name)
			continue
		}
		if got := typeName(f.GetType()); got != m.Type {
			t.Errorf("docs/metrics.md:%d: %s is documented as %s, registered as %s", m.Line, m.Name, m.Type, got)
		}
		// label names of every series, and the values seen per label
		wantNames := make([]string, 0, len(m.Labels))
		for _, l := range m.Labels {
			wantNames = append(wantNames, l.Name)
		}
		sort.Strings(wantNames)
		seen := map[string]map[string]bool{}
		for _, s := range f.GetMetric() {
			var names []string
			for _, lp := range s.GetLabel() {
				names = append(names, lp.GetName())
				if seen[lp.GetName()] == nil {
					seen[lp.GetName()] = map[string]bool{}
				}
				seen[lp.GetName()][lp.GetValue()] = true
			}
			sort.Strings(names)
			if !slices.Equal(names, wantNames) {
				t.Errorf("docs/metrics.md:%d: %s has labels %v, documented %v", m.Line, m.Name, names, wantNames)
				break
			}
		}
		// A closed set must be exactly the values the constructors
		// pre-initialise, plus "unknown" where outsiders are folded into it.
		for _, l := range m.Labels {
			if l.Values == nil {
				continue
			}
			var got []string
			for v := range seen[l.Name] {
				got = append(got, v)
			}
			sort.Strings(got)
			want := slices.Clone(l.Values)
			sort.Strings(want)
			withUnknown := slices.Clone(got)
			if !slices.Contains(withUnknown, metrics.Unknown) {
				withUnknown = append(withUnknown, metrics.Unknown)
				sort.Strings(withUnknown)
			}
			if !slices.Equal(want, got) && !slices.Equal(want, withUnknown) {
				t.Errorf("docs/metrics.md:%d: %s label %s: documented {%s}, pre-initialised {%s}",
					m.Line, m.Name, l.Name, strings.Join(want, ", "), strings.Join(got, ", "))
			}
		}
	}
	for _, f := range fams {
		if !documented[f.GetName()] {
			t.Errorf("%s (%s) is registered but missing from the catalogue of docs/metrics.md", f.GetName(), typeName(f.GetType()))
		}
	}
}

// TestMetricsDocUnknownIsReal checks that where the catalogue lists
// "unknown", the code really folds outsiders into it.
func TestMetricsDocUnknownIsReal(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := metrics.NewStorage(reg, config.Backends())
	msgs := metrics.NewMessages(reg, message.MetricLabels())
	tasks := metrics.NewTasks(reg, task.MetricLabels())
	folds := map[string]func(string) string{
		"backend": st.Backend,
		"type":    msgs.Type,
		"reason":  msgs.Reason,
		"outcome": tasks.Outcome,
	}
	for _, m := range parseCatalogue(t) {
		for _, l := range m.Labels {
			if !slices.Contains(l.Values, metrics.Unknown) {
				continue
			}
			fold, ok := folds[l.Name]
			if !ok {
				t.Errorf("docs/metrics.md:%d: %s label %s lists unknown, but nothing folds that label", m.Line, m.Name, l.Name)
				continue
			}
			if m.Name == "tasks_total" || m.Name == "task_duration_seconds" {
				if l.Name == "type" {
					fold = tasks.Type
				}
			}
			if got := fold("no-such-value"); got != metrics.Unknown {
				t.Errorf("%s label %s: an outsider is recorded as %q, docs say unknown", m.Name, l.Name, got)
			}
		}
	}
}

// TestMetricsDocExamplesParse has promtool parse the example query of every
// catalogue row.
func TestMetricsDocExamplesParse(t *testing.T) {
	var exprs []string
	for _, m := range parseCatalogue(t) {
		exprs = append(exprs, m.Example)
		if !strings.Contains(m.Example, m.Name) && !strings.Contains(m.Example, m.Name+"_bucket") {
			t.Errorf("docs/metrics.md:%d: the example query of %s does not use it: %s", m.Line, m.Name, m.Example)
		}
	}
	checkPromQL(t, "docs/metrics.md examples", exprs)
}
