package p2p

import (
	"context"
	"testing"
	"time"
)

// BenchmarkFullMesh is the time for two nodes that know only a bootstrap
// peer to form a full mesh of three with it (reported as ms-to-mesh; the
// ns/op also includes starting and stopping the hosts).
func BenchmarkFullMesh(b *testing.B) {
	var total, worst time.Duration
	for b.Loop() {
		b.StopTimer()
		opts := func(c *HostConfig) { c.ListenAddrs = loopback; c.Logger = testLogger() }
		hc := HostConfig{}
		opts(&hc)
		a, err := NewHost(context.Background(), newKey(b), hc)
		if err != nil {
			b.Fatal(err)
		}
		hc.Bootstrap = a.Addrs()[:1]
		b.StartTimer()
		start := time.Now()
		bh, err := NewHost(context.Background(), newKey(b), hc)
		if err != nil {
			b.Fatal(err)
		}
		ch, err := NewHost(context.Background(), newKey(b), hc)
		if err != nil {
			b.Fatal(err)
		}
		deadline := start.Add(10 * time.Second)
		for a.ConnectedPeers() != 2 || bh.ConnectedPeers() != 2 || ch.ConnectedPeers() != 2 {
			if time.Now().After(deadline) {
				b.Fatal("no full mesh after 10s")
			}
			time.Sleep(time.Millisecond)
		}
		took := time.Since(start)
		total += took
		worst = max(worst, took)
		b.StopTimer()
		_ = ch.Close()
		_ = bh.Close()
		_ = a.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total)/1e6/float64(b.N), "ms-to-mesh")
	b.ReportMetric(float64(worst)/1e6, "max-ms-to-mesh")
}
