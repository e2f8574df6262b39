package message

import (
	"bufio"
	"context"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
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
	opts = append(opts, listenOn(listen))
	a, n := newTestNode(b, opts...), newTestNode(b, opts...)
	n.h.SetStreamHandler(benchEchoProtocol, func(s network.Stream) {
		_, _ = io.Copy(s, s)
		_ = s.Close()
	})
	connect(b, a, n)
	return a, n
}

// pingFrame is the wire size of a real ping, so the raw echo moves as many
// bytes as the service does.
func pingFrame(b *testing.B) []byte {
	env, _ := NewEnvelope(TypePing, nil)
	env.ID = "0123abcd-1a2b"
	f, err := AppendFrame(nil, env, 0)
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
						s, err := a.h.NewStream(ctx, target, benchEchoProtocol)
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
						s, err := a.h.NewStream(ctx, target, benchEchoProtocol)
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

// BenchmarkMetricsMiddleware is the recording cost per handled message.
func BenchmarkMetricsMiddleware(b *testing.B) {
	m := metrics.NewMessages(prometheus.NewRegistry())
	h := MetricsMiddleware(m)(func(context.Context, peer.ID, *Envelope) (*Envelope, error) { return nil, nil })
	req := &Envelope{V: 1, ID: "1", Type: TypePing}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = h(ctx, "", req)
	}
}

// BenchmarkCodec encodes and decodes one ping frame.
func BenchmarkCodec(b *testing.B) {
	env, _ := NewEnvelope(TypePing, nil)
	env.ID = "0123abcd-1a2b"
	var buf []byte
	src := &bytesReaderT{}
	fr := frameReader{br: bufio.NewReader(src), max: DefaultMaxMessageBytes}
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = AppendFrame(buf[:0], env, 0)
		if err != nil {
			b.Fatal(err)
		}
		src.b, src.i = buf, 0
		body, _, err := fr.next()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := decodeEnvelope(body); err != nil {
			b.Fatal(err)
		}
	}
}

type bytesReaderT struct {
	b []byte
	i int
}

func (r *bytesReaderT) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}
