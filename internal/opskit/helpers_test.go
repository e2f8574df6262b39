package opskit

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// repoPath returns the absolute path of a file given relative to the module root.
func repoPath(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, filepath.FromSlash(rel))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// runPromtool runs promtool with args in dir and fails the test, showing its
// output, unless it exits 0. It returns the combined output.
func runPromtool(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testenv.ToolPath(t, "promtool"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// promtoolSays runs promtool with args in dir (see runPromtool) and fails
// the test unless its output contains want.
func promtoolSays(t testing.TB, dir, want string, args ...string) {
	t.Helper()
	if out := runPromtool(t, dir, args...); !strings.Contains(out, want) {
		t.Fatalf("unexpected promtool output:\n%s", out)
	}
}

// checkPromQL has promtool parse every expression (as a recording rule of a
// throwaway rule file) and fails the test naming each one it rejects.
func checkPromQL(t *testing.T, what string, exprs []string) {
	t.Helper()
	if len(exprs) == 0 {
		t.Fatalf("%s: no expressions to check", what)
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: opskit-check\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(e) // a JSON string is a valid YAML double-quoted scalar
		fmt.Fprintf(&b, "      - record: opskit_check_%d\n        expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "exprs.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.ToolPath(t, "promtool"), "check", "rules", file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		for i, e := range exprs {
			if strings.Contains(string(out), fmt.Sprintf("\"opskit_check_%d\"", i)) {
				t.Errorf("%s: promtool rejects %s", what, e)
			}
		}
		t.Fatalf("%s: promtool check rules: %v\n%s", what, err, out)
	}
}

// ---------------------------------------------------------------- rules

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// Name is the record or alert name.
func (r rule) Name() string {
	if r.Alert != "" {
		return r.Alert
	}
	return r.Record
}

// loadRules parses deploy/prometheus/alerts.yml and returns its rules in order.
func loadRules(t testing.TB) []rule {
	t.Helper()
	raw, err := os.ReadFile(repoPath(t, "deploy/prometheus/alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatal("alerts.yml holds no rules")
	}
	return out
}

// ------------------------------------------------------------ dashboard

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Editable      bool    `json:"editable"`
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type variable struct {
	Name       string          `json:"name"`
	Label      string          `json:"label"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or an object for query variables
	Definition string          `json:"definition"`
	Datasource *datasourceRef  `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *datasourceRef `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
		Exemplar   bool           `json:"exemplar"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // the panels of a collapsed row
}

// panelExpr is one query of one dashboard panel.
type panelExpr struct {
	Panel string
	RefID string
	Expr  string
}

// loadDashboard parses deploy/grafana/p2p-agent.json.
func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	raw, err := os.ReadFile(repoPath(t, "deploy/grafana/p2p-agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("p2p-agent.json: %v", err)
	}
	return d
}

// allPanels flattens rows (collapsed rows nest their panels).
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// exprs returns every query of every panel, in dashboard order.
func (d dashboard) exprs() []panelExpr {
	var out []panelExpr
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, panelExpr{Panel: p.Title, RefID: tg.RefID, Expr: tg.Expr})
		}
	}
	return out
}

var rateIntervalVar = regexp.MustCompile(`\$\{?__rate_interval\}?`)
var instanceVar = regexp.MustCompile(`\$\{?instance\}?`)

// jobVar is the job variable, substituted with its All value.
var jobVar = regexp.MustCompile(`\$\{?job\}?`)

// substitute replaces the dashboard variables the way Grafana would for a
// query run: $instance by instanceRegex, $__rate_interval by rateInterval.
func substitute(expr, instanceRegex, rateInterval string) string {
	expr = rateIntervalVar.ReplaceAllLiteralString(expr, rateInterval)
	expr = jobVar.ReplaceAllLiteralString(expr, ".+")
	return instanceVar.ReplaceAllLiteralString(expr, instanceRegex)
}
