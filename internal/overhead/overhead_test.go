package overhead_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// noopStore does nothing, so that wrapping it isolates the recording cost.
type noopStore struct{ value []byte }

func (n *noopStore) Get(context.Context, string, storage.Consistency) ([]byte, error) {
	return n.value, nil
}
func (n *noopStore) Put(context.Context, string, []byte, storage.Consistency) error { return nil }
func (n *noopStore) Delete(context.Context, string, storage.Consistency) error      { return nil }
func (n *noopStore) List(context.Context, string, storage.Consistency) ([]storage.KV, error) {
	return nil, nil
}
func (n *noopStore) ListPage(context.Context, string, string, int, storage.Consistency) ([]storage.KV, string, error) {
	return nil, "", nil
}
func (n *noopStore) Close() error { return nil }

// pingPair is two libp2p hosts on loopback TCP with message services, with
// or without the metrics middleware, and returns a function making one ping
// round trip on the kept stream.
func pingPair(tb testing.TB, instrumented bool) func() error {
	tb.Helper()
	ctx := context.Background()
	mk := func() (*p2p.Host, *message.Service) {
		priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		h, err := p2p.NewHost(ctx, priv, p2p.HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
		if err != nil {
			tb.Fatal(err)
		}
		var m *metrics.Messages
		if instrumented {
			m = metrics.NewMessages(prometheus.NewRegistry(), message.MetricLabels())
		}
		s := message.NewService(h.Libp2p(), m, message.ServiceConfig{})
		tb.Cleanup(func() {
			_ = s.Close()
			_ = h.Close()
		})
		return h, s
	}
	_, sa := mk()
	hb, _ := mk()
	ai, err := p2p.ParsePeer(hb.Addrs()[0])
	if err != nil {
		tb.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sa.Connect(cctx, ai); err != nil {
		tb.Fatal(err)
	}
	target := hb.ID()
	ping := func() error { _, err := sa.Ping(ctx, target); return err }
	if err := ping(); err != nil { // open the kept stream
		tb.Fatal(err)
	}
	return ping
}

// paired runs b.N rounds; in each round it times a batch of ops of raw A,
// instrumented and raw B (the A/A control) in a rotating order, all three
// alive for the whole run. It reports, as medians over the rounds of the
// per-round values: ns/op of the instrumented variant, raw-ns/op of the
// mean of raw A and raw B, instr/raw (instrumented over that mean) and
// control (raw B over raw A). A control away from 1.000 by d means the run
// cannot resolve a difference smaller than about d.
func paired(b *testing.B, batch int, rawA, inst, rawB func(i int) error) {
	vs := [3]func(i int) error{rawA, inst, rawB}
	// Warm every variant once, outside the rounds.
	for _, v := range vs {
		for i := range batch {
			if err := v(i); err != nil {
				b.Fatal(err)
			}
		}
	}
	var ratio, control, instNs, rawNs []float64
	var t [3]time.Duration
	i := 0
	b.ResetTimer()
	for r := range b.N {
		for _, k := range testenv.PairedOrders[r%len(testenv.PairedOrders)] {
			start := time.Now()
			for j := range batch {
				if err := vs[k](i + j); err != nil {
					b.Fatal(err)
				}
			}
			t[k] = time.Since(start)
		}
		i += batch
		raw := float64(t[0]+t[2]) / 2
		ratio = append(ratio, float64(t[1])/raw)
		control = append(control, float64(t[2])/float64(t[0]))
		instNs = append(instNs, float64(t[1])/float64(batch))
		rawNs = append(rawNs, raw/float64(batch))
	}
	b.StopTimer()
	b.ReportMetric(testenv.Median(instNs), "ns/op")
	b.ReportMetric(testenv.Median(rawNs), "raw-ns/op")
	b.ReportMetric(testenv.Median(ratio), "instr/raw")
	b.ReportMetric(testenv.Median(control), "control")
}

// BenchmarkInstrumentationOverhead measures what the metrics cost on every
// instrumented path. Each sub-benchmark is one path; b.N is a number of
// rounds, each timing one batch of raw, instrumented and raw again (a live
// A/A control), interleaved and in rotating order, so that drift (CPU
// frequency, a neighbour's load, GC) affects all three alike:
//
//	noop-get, noop-put             the decorator around a store that does nothing (pure recording cost)
//	local-get, local-put-eventual  Pebble
//	redis-get, redis-put           a real redis-server (REDIS_URL or started here)
//	message-ping                   a real ping between two libp2p hosts through the message service,
//	                               three host pairs alive (raw, instrumented, raw)
//
// Read instr/raw against control: a difference smaller than control's
// distance from 1 is not resolved. Pin the process to one CPU
// (taskset -c 1) for the network paths, as scripts/bench.sh does.
func BenchmarkInstrumentationOverhead(b *testing.B) {
	ctx := context.Background()
	const keys = 1 << 12
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("bench/%06d", i)
	}
	value := make([]byte, 128)

	get := func(s storage.Store) func(i int) error {
		return func(i int) error { _, err := s.Get(ctx, names[i%keys], storage.Strong); return err }
	}
	put := func(s storage.Store, c storage.Consistency) func(i int) error {
		return func(i int) error { return s.Put(ctx, names[i%keys], value, c) }
	}
	inst := func(s storage.Store, backend string) storage.Store {
		return storage.Instrument(s, metrics.NewStorage(prometheus.NewRegistry(), config.Backends()), backend)
	}

	noopA, noopB := &noopStore{value: value}, &noopStore{value: value}
	noopI := inst(&noopStore{value: value}, "local")
	b.Run("noop-get", func(b *testing.B) { paired(b, 10000, get(noopA), get(noopI), get(noopB)) })
	b.Run("noop-put", func(b *testing.B) {
		paired(b, 10000, put(noopA, storage.Strong), put(noopI, storage.Strong), put(noopB, storage.Strong))
	})

	// Tracing that samples nothing, beside metrics alone: what tracing
	// costs every unsampled operation (the target is at most 30 ns and no
	// allocation).
	tr, err := tracing.New(tracing.Config{SampleRatio: 0})
	if err != nil {
		b.Fatal(err)
	}
	metricsOnlyA, metricsOnlyB := inst(&noopStore{value: value}, "local"), inst(&noopStore{value: value}, "local")
	unsampled := storage.InstrumentTraced(&noopStore{value: value}, metrics.NewStorage(prometheus.NewRegistry(), config.Backends()), "local", tr)
	b.Run("tracing-unsampled-get", func(b *testing.B) {
		paired(b, 10000, get(metricsOnlyA), get(unsampled), get(metricsOnlyB))
	})
	handler := func(context.Context, peer.ID, *message.Envelope) (*message.Envelope, error) { return nil, nil }
	mm := metrics.NewMessages(prometheus.NewRegistry(), message.MetricLabels())
	hA, hB := message.MetricsMiddleware(mm)(handler), message.MetricsMiddleware(mm)(handler)
	hT := message.ObserveMiddleware(mm, tr)(handler)
	env := &message.Envelope{V: 1, ID: "x", Type: message.TypePing}
	call := func(h message.Handler) func(int) error {
		return func(int) error { _, err := h(ctx, "", env); return err }
	}
	b.Run("tracing-unsampled-message", func(b *testing.B) { paired(b, 10000, call(hA), call(hT), call(hB)) })

	ls, err := local.Open(filepath.Join(b.TempDir(), "store"), local.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ls.Close() })
	for _, k := range names {
		if err := ls.Put(ctx, k, value, storage.Eventual); err != nil {
			b.Fatal(err)
		}
	}
	// One Pebble store behind all three: the variants differ only in the
	// decorator.
	lsI := inst(ls, "local")
	b.Run("local-get", func(b *testing.B) { paired(b, 2000, get(ls), get(lsI), get(ls)) })
	b.Run("local-put-eventual", func(b *testing.B) {
		paired(b, 2000, put(ls, storage.Eventual), put(lsI, storage.Eventual), put(ls, storage.Eventual))
	})

	r := testenv.StartRedis(b)
	rs, err := redisstore.New(ctx, redisstore.Options{Addrs: []string{r.Addr()}, KeyPrefix: "overhead:"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = rs.Close() })
	for _, k := range names {
		if err := rs.Put(ctx, k, value, storage.Eventual); err != nil {
			b.Fatal(err)
		}
	}
	rsI := inst(rs, "redis")
	b.Run("redis-get", func(b *testing.B) { paired(b, 200, get(rs), get(rsI), get(rs)) })
	b.Run("redis-put", func(b *testing.B) {
		paired(b, 200, put(rs, storage.Strong), put(rsI, storage.Strong), put(rs, storage.Strong))
	})

	pingA, pingI, pingB := pingPair(b, false), pingPair(b, true), pingPair(b, false)
	b.Run("message-ping", func(b *testing.B) {
		paired(b, 500, func(int) error { return pingA() }, func(int) error { return pingI() }, func(int) error { return pingB() })
	})
}
