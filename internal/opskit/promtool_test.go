package opskit

import (
	"strings"
	"testing"
)

// TestPromtoolCheckConfig validates the scrape configuration, the rule file
// it loads and the file_sd target files its globs match.
func TestPromtoolCheckConfig(t *testing.T) {
	dir := repoPath(t, "deploy/prometheus")
	out := runPromtool(t, dir, "check", "config", "prometheus.yml")
	if !strings.Contains(out, "SUCCESS: prometheus.yml is valid") {
		t.Fatalf("unexpected promtool output:\n%s", out)
	}
}

// TestPromtoolCheckRules validates the rule file on its own.
func TestPromtoolCheckRules(t *testing.T) {
	dir := repoPath(t, "deploy/prometheus")
	out := runPromtool(t, dir, "check", "rules", "alerts.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("unexpected promtool output:\n%s", out)
	}
}

// TestPromtoolTestRules runs the rule unit tests of alerts_test.yml.
func TestPromtoolTestRules(t *testing.T) {
	dir := repoPath(t, "deploy/prometheus")
	out := runPromtool(t, dir, "test", "rules", "alerts_test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("unexpected promtool output:\n%s", out)
	}
}
