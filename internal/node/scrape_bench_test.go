package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
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

// BenchmarkScrapeNodeCPU scrapes an idle p2p-agent process (the built
// binary, testenv.StartNode) over real HTTP with Accept-Encoding: gzip, as
// Prometheus does, one scrape per iteration, and reports the node's CPU
// time per scrape (user + system from /proc/<pid>/stat, 10 ms ticks: use
// a few hundred scrapes), the p50 and p99 scrape latency and the gzipped
// body size. The node's own idle work during the run is included. Linux
// only.
func BenchmarkScrapeNodeCPU(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc/<pid>/stat")
	}
	n := testenv.StartNode(b, testenv.NodeOptions{})
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer httpc.CloseIdleConnections()
	scrape := func() int {
		req, err := http.NewRequest(http.MethodGet, n.MetricsURL, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := httpc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
			b.Fatalf("scrape: %d %q %v", resp.StatusCode, resp.Header.Get("Content-Encoding"), err)
		}
		return len(body)
	}
	for range 20 { // warm the node's pools and the connection
		scrape()
	}
	lat := make([]time.Duration, 0, b.N)
	var size int
	cpu0 := procCPU(b, n.PID())
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		size = scrape()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	cpu := procCPU(b, n.PID()) - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / 1e6 }
	b.ReportMetric(float64(cpu)/1e6/float64(len(lat)), "node-cpu-ms/scrape")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(size), "gzip-bytes")
}

// procCPU is the user + system CPU time of process pid so far, from
// /proc/<pid>/stat (in clock ticks of 10 ms, USER_HZ on Linux).
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15.
	_, rest, ok := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		tb.Fatalf("unexpected /proc/%d/stat: %q", pid, raw)
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
