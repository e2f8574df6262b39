package main_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// scrapeNode starts a real Prometheus, with flags, that scrapes the
// /metrics of node n every 500ms as job "node".
func scrapeNode(t *testing.T, n *testenv.Node, flags ...string) *testenv.Prometheus {
	t.Helper()
	return testenv.StartPrometheusWithFlags(t, fmt.Sprintf(`global:
  scrape_interval: 500ms
scrape_configs:
  - job_name: node
    static_configs:
      - targets: [%q]
`, strings.TrimPrefix(n.MetricsBase(), "http://")), flags...)
}

// TestNativeHistograms drives real storage operations through the built
// binary's API and checks the three sides of the duration histograms: the
// text exposition shows only the classic buckets; the protobuf exposition
// carries a native histogram beside them; and a real Prometheus started with
// --enable-feature=native-histograms ingests it, counts exactly the node's
// operations and resolves a median inside the classic bucket that holds the
// median.
func TestNativeHistograms(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t, "starts the binary and prometheus")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	c := &http.Client{Timeout: 10 * time.Second}
	const ops = 300
	for i := range ops {
		url := fmt.Sprintf("http://%s/api/v1/kv/nh/%d?consistency=eventual", n.APIAddr, i)
		req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader("value"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp, err = c.Get(url); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", url, resp.StatusCode)
		}
	}
	get := map[string]string{"operation": "get", "backend": "local"}

	// Text: classic buckets only.
	fams, text := testenv.Scrape(t, c, n.MetricsURL)
	count, _ := fams.HistCount("storage_operation_duration_seconds", get)
	if count != ops {
		t.Fatalf("text exposition: %d gets, want %d", count, ops)
	}
	m := fams.Find("storage_operation_duration_seconds", get)
	lo, hi := medianBucket(t, m.GetHistogram())
	if got, want := len(m.GetHistogram().GetBucket()), len(metrics.StorageBuckets)+1; got != want { // and +Inf
		t.Fatalf("text exposition: %d classic buckets, want %d", got, want)
	}
	for line := range strings.SplitSeq(string(text), "\n") {
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if rest, ok := strings.CutPrefix(name, "storage_operation_duration_seconds"); ok && rest != "_bucket" && rest != "_sum" && rest != "_count" {
			t.Fatalf("text exposition has a line beyond the classic histogram: %q", line)
		}
	}

	// Protobuf: the native histogram beside the classic buckets.
	req, _ := http.NewRequest(http.MethodGet, n.MetricsURL, nil)
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
	natives := map[string]bool{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("protobuf exposition: %v", err)
		}
		for _, met := range mf.GetMetric() {
			if h := met.GetHistogram(); h != nil && h.Schema != nil && len(h.GetBucket()) > 0 {
				natives[mf.GetName()] = true
			}
		}
	}
	for _, name := range []string{"storage_operation_duration_seconds", "message_processing_duration_seconds", "task_duration_seconds"} {
		if !natives[name] {
			t.Errorf("protobuf exposition: %s has no native histogram with classic buckets beside it", name)
		}
	}

	// A real Prometheus with native histograms.
	p := scrapeNode(t, n, "--enable-feature=native-histograms")
	sel := `storage_operation_duration_seconds{operation="get",backend="local"}`
	testenv.Eventually(t, 30*time.Second, func() error {
		v, err := p.QueryVector("histogram_count(" + sel + ")")
		if err != nil {
			return err
		}
		if len(v) != 1 || v[0].Value != ops {
			return fmt.Errorf("histogram_count = %v, want one series of %d", v, ops)
		}
		return nil
	})
	v, err := p.QueryVector("histogram_quantile(0.5, " + sel + ")")
	if err != nil || len(v) != 1 {
		t.Fatalf("histogram_quantile over the native histogram: %v, %v", v, err)
	}
	p50 := v[0].Value
	// Native buckets are 10 % wide: allow that much beyond the classic one.
	if math.IsNaN(p50) || p50 < lo/1.1 || p50 > hi*1.1 {
		t.Fatalf("native p50 of local gets = %g s, want within the classic median bucket [%g, %g]", p50, lo, hi)
	}
	t.Logf("local get p50 from the native histogram: %.2f µs (classic median bucket %g..%g s)", p50*1e6, lo, hi)
}

// medianBucket returns the bounds of the classic bucket in which the median
// observation falls.
func medianBucket(t *testing.T, h *dto.Histogram) (lo, hi float64) {
	t.Helper()
	half := float64(h.GetSampleCount()) / 2
	for _, b := range h.GetBucket() {
		if float64(b.GetCumulativeCount()) >= half {
			return lo, b.GetUpperBound()
		}
		lo = b.GetUpperBound()
	}
	t.Fatal("median beyond the last bucket")
	return 0, 0
}
