// Package testenv starts the real things tests need (redis-server, a Redis
// Cluster, the built p2p-agent binary, prometheus) on free loopback ports and
// reads metrics the way Prometheus does: over HTTP, parsed with expfmt.
package testenv

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is a parsed scrape, by family name.
type Families map[string]*dto.MetricFamily

// ParseMetrics parses a text-format exposition.
func ParseMetrics(body []byte) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	return Families(fams), nil
}

// Scrape GETs url with client (nil: a default client with a 10 s timeout),
// fails the test unless the answer is 200, and returns the parsed families
// and the raw body.
func Scrape(t testing.TB, client *http.Client, url string) (Families, []byte) {
	t.Helper()
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d: %s", url, resp.StatusCode, body)
	}
	fams, err := ParseMetrics(body)
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", url, err)
	}
	return fams, body
}

func matches(m *dto.Metric, labels map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range labels {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Find returns the series of family name whose labels include labels, or nil.
func (f Families) Find(name string, labels map[string]string) *dto.Metric {
	fam, ok := f[name]
	if !ok {
		return nil
	}
	for _, m := range fam.GetMetric() {
		if matches(m, labels) {
			return m
		}
	}
	return nil
}

// Value returns the value of a counter or gauge series (0 when absent).
func (f Families) Value(name string, labels map[string]string) float64 {
	m := f.Find(name, labels)
	if m == nil {
		return 0
	}
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// HistCount returns a histogram series' sample count and sum (0, 0 when absent).
func (f Families) HistCount(name string, labels map[string]string) (count uint64, sum float64) {
	m := f.Find(name, labels)
	if m == nil || m.Histogram == nil {
		return 0, 0
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// SeriesCount returns how many series family name has.
func (f Families) SeriesCount(name string) int {
	if fam, ok := f[name]; ok {
		return len(fam.GetMetric())
	}
	return 0
}

// LabelValues returns the sorted distinct values of label in family name.
func (f Families) LabelValues(name, label string) []string {
	seen := map[string]bool{}
	if fam, ok := f[name]; ok {
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					seen[l.GetValue()] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// L is shorthand for a label set: L("operation", "put", "backend", "local").
func L(kv ...string) map[string]string {
	if len(kv)%2 != 0 {
		panic(fmt.Sprintf("testenv.L: odd number of arguments: %s", strings.Join(kv, ",")))
	}
	m := make(map[string]string, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// Delta is an expected rise of a counter series between two scrapes.
type Delta struct {
	Name   string
	Labels map[string]string
	Want   float64
}

// CheckDeltas compares counter rises between two scrapes exactly and
// reports every mismatch in one error.
func CheckDeltas(before, after Families, ds []Delta) error {
	var errs []string
	for _, d := range ds {
		if got := after.Value(d.Name, d.Labels) - before.Value(d.Name, d.Labels); got != d.Want {
			errs = append(errs, fmt.Sprintf("%s%v rose by %v, want %v", d.Name, d.Labels, got, d.Want))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// HistDelta is the rise of a histogram series' sample count between two scrapes.
func HistDelta(before, after Families, name string, labels map[string]string) uint64 {
	c0, _ := before.HistCount(name, labels)
	c1, _ := after.HistCount(name, labels)
	return c1 - c0
}
