package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"
)

// BenchmarkScrape measures one full GET /metrics of a node with every family
// populated (storage, messages, tasks, Go, process, libp2p), over real HTTP.
// It reports the p50 and p99 scrape latency and the body size.
func BenchmarkScrape(b *testing.B) {
	n, _ := startNode(b, nil)
	c := client(n)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("scrape/%d", i)
		if err := c.Put(ctx, key, []byte("v"), "eventual"); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Get(ctx, key, ""); err != nil {
			b.Fatal(err)
		}
	}
	httpc := &http.Client{Timeout: 10 * time.Second}
	url := n.MetricsURL()
	var lat []time.Duration
	var size int
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		resp, err := httpc.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("scrape: %d %v", resp.StatusCode, err)
		}
		lat = append(lat, time.Since(start))
		size = len(body)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / 1e6 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(size), "body-bytes")
}
