package p2p

import (
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

const benchEchoProtocol = protocol.ID("/p2p-ai-agents/bench-echo/1.0.0")

var benchTransports = []struct {
	name   string
	listen []string
}{
	{"tcp", []string{"/ip4/127.0.0.1/tcp/0"}},
	{"quic", []string{"/ip4/127.0.0.1/udp/0/quic-v1"}},
}

// benchPair returns two connected nodes listening on listen only, B
// serving a raw echo protocol beside the message service.
func benchPair(b *testing.B, listen []string, opts ...nodeOpt) (*testNode, *testNode) {
	b.Helper()
	opts = append(opts, withHost(func(c *HostConfig) { c.ListenAddrs = listen; c.DisablePeerExchange = true }))
	a, n := newTestNode(b, opts...), newTestNode(b, opts...)
	n.h.Libp2p().SetStreamHandler(benchEchoProtocol, func(s network.Stream) {
		_, _ = io.Copy(s, s)
		_ = s.Close()
	})
	connect(b, a, n)
	return a, n
}

// pingFrame is the wire size of a real ping, so the raw echo moves as many
// bytes as the service does.
func pingFrame(b *testing.B) []byte {
	env, _ := message.NewEnvelope(message.TypePing, nil)
	env.ID = "0123abcd-1a2b"
	f, err := message.AppendFrame(nil, env, 0)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// runRoundTrips runs b.N round trips over workers goroutines and reports
// throughput and latency percentiles.
func runRoundTrips(b *testing.B, workers int, op func(worker int) error) {
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := op(w); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)/2])/1e3, "p50-us")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)])/1e3, "p99-us")
}

// BenchmarkPing measures ping round trips through the message service, one
// at a time and from 16 concurrent requesters, beside raw go-libp2p echoes
// of a ping-sized frame on a kept stream and on a new stream per message.
func BenchmarkPing(b *testing.B) {
	for _, tr := range benchTransports {
		b.Run(tr.name, func(b *testing.B) {
			a, n := benchPair(b, tr.listen)
			ctx := context.Background()
			target := n.h.ID()
			if _, err := a.svc.Ping(ctx, target); err != nil {
				b.Fatal(err)
			}
			frame := pingFrame(b)
			for _, workers := range []int{1, 16} {
				mode := "sequential"
				if workers > 1 {
					mode = "concurrent-16"
				}
				b.Run("service/"+mode, func(b *testing.B) {
					runRoundTrips(b, workers, func(int) error {
						_, err := a.svc.Ping(ctx, target)
						return err
					})
				})
				b.Run("raw-kept-stream/"+mode, func(b *testing.B) {
					streams := make([]network.Stream, workers)
					bufs := make([][]byte, workers)
					for i := range streams {
						s, err := a.h.Libp2p().NewStream(ctx, target, benchEchoProtocol)
						if err != nil {
							b.Fatal(err)
						}
						defer s.Reset()
						streams[i], bufs[i] = s, make([]byte, len(frame))
					}
					runRoundTrips(b, workers, func(w int) error {
						if _, err := streams[w].Write(frame); err != nil {
							return err
						}
						_, err := io.ReadFull(streams[w], bufs[w])
						return err
					})
				})
				b.Run("raw-new-stream/"+mode, func(b *testing.B) {
					runRoundTrips(b, workers, func(int) error {
						s, err := a.h.Libp2p().NewStream(ctx, target, benchEchoProtocol)
						if err != nil {
							return err
						}
						defer s.Close()
						if _, err := s.Write(frame); err != nil {
							return err
						}
						if err := s.CloseWrite(); err != nil {
							return err
						}
						_, err = io.ReadFull(s, make([]byte, len(frame)))
						return err
					})
				})
			}
		})
	}
}

// BenchmarkFullMesh is the time for two nodes that know only a bootstrap
// peer to form a full mesh of three with it (reported as ms-to-mesh; the
// ns/op also includes starting and stopping the hosts).
func BenchmarkFullMesh(b *testing.B) {
	var total, worst time.Duration
	for b.Loop() {
		b.StopTimer()
		opts := func(c *HostConfig) { c.ListenAddrs = p2ptest.Loopback(); c.Logger = p2ptest.Logger() }
		hc := HostConfig{}
		opts(&hc)
		a, err := NewHost(context.Background(), p2ptest.NewKey(b), hc)
		if err != nil {
			b.Fatal(err)
		}
		hc.Bootstrap = a.Addrs()[:1]
		b.StartTimer()
		start := time.Now()
		bh, err := NewHost(context.Background(), p2ptest.NewKey(b), hc)
		if err != nil {
			b.Fatal(err)
		}
		ch, err := NewHost(context.Background(), p2ptest.NewKey(b), hc)
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
