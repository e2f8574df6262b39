package opskit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestPromtoolCheckConfig validates the scrape configuration, the rule file
// it loads and the file_sd target files its globs match.
func TestPromtoolCheckConfig(t *testing.T) {
	dir := repoPath(t, "deploy/prometheus")
	promtoolSays(t, dir, "SUCCESS: prometheus.yml is valid", "check", "config", "prometheus.yml")
}

// TestPromtoolCheckSDConfig validates the http_sd_configs variant, and
// checks that it discovers the nodes only through /sd, under the job name
// the rules and the dashboard select on.
func TestPromtoolCheckSDConfig(t *testing.T) {
	dir := repoPath(t, "deploy/prometheus")
	promtoolSays(t, dir, "SUCCESS: prometheus-sd.yml is valid", "check", "config", "prometheus-sd.yml")
	data, err := os.ReadFile(filepath.Join(dir, "prometheus-sd.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []map[string]any `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 1 {
		t.Fatalf("%d scrape configs, want 1", len(cfg.ScrapeConfigs))
	}
	sc := cfg.ScrapeConfigs[0]
	if sc["job_name"] != "p2p-agent" {
		t.Errorf("job_name %v, want p2p-agent", sc["job_name"])
	}
	for k := range sc {
		if strings.HasSuffix(k, "_sd_configs") && k != "http_sd_configs" || k == "static_configs" {
			t.Errorf("%s in the SD variant: it must discover nodes only through /sd", k)
		}
	}
	sds, _ := sc["http_sd_configs"].([]any)
	if len(sds) == 0 {
		t.Fatal("no http_sd_configs")
	}
	for _, s := range sds {
		u, _ := s.(map[string]any)["url"].(string)
		if !strings.HasSuffix(u, "/sd") {
			t.Errorf("http_sd_configs url %q does not end in /sd", u)
		}
	}
}

// TestPromtoolCheckRules validates the rule file on its own.
func TestPromtoolCheckRules(t *testing.T) {
	dir := repoPath(t, "deploy/prometheus")
	promtoolSays(t, dir, "SUCCESS", "check", "rules", "alerts.yml")
}

// TestPromtoolTestRules runs the rule unit tests of alerts_test.yml.
func TestPromtoolTestRules(t *testing.T) {
	dir := repoPath(t, "deploy/prometheus")
	promtoolSays(t, dir, "SUCCESS", "test", "rules", "alerts_test.yml")
}
