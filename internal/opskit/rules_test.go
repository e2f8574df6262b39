package opskit

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// requiredAlerts are the alerts the operator kit promises, with their `for`.
var requiredAlerts = map[string]string{
	"P2PAgentDown":                  "2m",
	"P2PAgentNoPeers":               "10m",
	"P2PAgentStorageErrorRatioHigh": "5m",
	"P2PAgentStorageLatencyHigh":    "10m",
	"P2PAgentMessageErrorRatioHigh": "5m",
	"P2PAgentMessageLatencyHigh":    "10m",
	"P2PAgentHighMemory":            "15m",
	"P2PAgentTaskFailures":          "15m",
}

// githubSlug is the anchor GitHub gives a Markdown heading.
func githubSlug(heading string) string {
	s := strings.ToLower(strings.TrimSpace(heading))
	s = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(s, "")
	return strings.ReplaceAll(s, " ", "-")
}

// TestAlertsAreComplete checks every alert carries what an operator needs: a
// severity, a summary and a description naming the instance, and a runbook
// link to an existing section of docs/metrics.md.
func TestAlertsAreComplete(t *testing.T) {
	doc, err := os.ReadFile(repoPath(t, "docs/metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			anchors[githubSlug(strings.TrimLeft(h, "#"))] = true
		}
	}
	const runbookBase = "https://github.com/p2p-ai-agents/p2p-agent/blob/main/docs/metrics.md#"
	seen := map[string]bool{}
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			if !regexp.MustCompile(`^(instance|job):[a-z0-9_]+:[a-z0-9_]+$`).MatchString(r.Record) {
				t.Errorf("recording rule %q does not follow level:metric:operations", r.Record)
			}
			continue
		}
		seen[r.Alert] = true
		if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, sev)
		}
		for _, a := range []string{"summary", "description"} {
			if !strings.Contains(r.Annotations[a], "{{ $labels.instance }}") {
				t.Errorf("%s: %s does not name {{ $labels.instance }}: %q", r.Alert, a, r.Annotations[a])
			}
		}
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, runbookBase)
		if !ok {
			t.Errorf("%s: runbook_url %q does not point into docs/metrics.md", r.Alert, url)
		} else if anchor != githubSlug(r.Alert) || !anchors[anchor] {
			t.Errorf("%s: runbook_url anchor %q has no section \"### %s\" in docs/metrics.md", r.Alert, anchor, r.Alert)
		}
		if want, ok := requiredAlerts[r.Alert]; ok && r.For != want {
			t.Errorf("%s: for %q, want %q", r.Alert, r.For, want)
		}
		if !strings.Contains(string(doc), "| `"+r.Alert+"` |") {
			t.Errorf("%s is missing from the alert table of docs/metrics.md", r.Alert)
		}
	}
	for name := range requiredAlerts {
		if !seen[name] {
			t.Errorf("alert %s is missing from alerts.yml", name)
		}
	}
}

// ruleTests is the part of a promtool rule test file this test reads.
type ruleTests struct {
	Tests []struct {
		Name       string `yaml:"name"`
		AlertTests []struct {
			EvalTime  string `yaml:"eval_time"`
			AlertName string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestEveryAlertIsUnitTested requires alerts_test.yml to show every alert of
// alerts.yml both firing (with its exact annotations) and not firing.
func TestEveryAlertIsUnitTested(t *testing.T) {
	raw, err := os.ReadFile(repoPath(t, "deploy/prometheus/alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	if err := yaml.Unmarshal(raw, &rt); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, at := range tc.AlertTests {
			if len(at.ExpAlerts) == 0 {
				quiet[at.AlertName] = true
				continue
			}
			fires[at.AlertName] = true
			for _, ea := range at.ExpAlerts {
				for _, a := range []string{"summary", "description", "runbook_url"} {
					if ea.ExpAnnotations[a] == "" {
						t.Errorf("%s at %s: expected alert without the %s annotation", at.AlertName, at.EvalTime, a)
					}
				}
				if ea.ExpLabels["severity"] == "" || ea.ExpLabels["instance"] == "" {
					t.Errorf("%s at %s: expected labels lack severity or instance: %v", at.AlertName, at.EvalTime, ea.ExpLabels)
				}
			}
		}
	}
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			continue
		}
		if !fires[r.Alert] {
			t.Errorf("alerts_test.yml never shows %s firing", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("alerts_test.yml never shows %s not firing", r.Alert)
		}
	}
}
