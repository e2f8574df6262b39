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

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
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
// or without the metrics middleware.
func pingPair(tb testing.TB, instrumented bool) (a *p2p.Service, target peer.ID) {
	tb.Helper()
	ctx := context.Background()
	mk := func() (*p2p.Host, *p2p.Service) {
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
			m = metrics.NewMessages(prometheus.NewRegistry())
		}
		s := p2p.NewService(h, m, p2p.ServiceConfig{})
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
	if _, err := sa.Ping(cctx, hb.ID()); err != nil { // open the kept stream
		tb.Fatal(err)
	}
	return sa, hb.ID()
}

// BenchmarkInstrumentationOverhead runs every instrumented path twice in one
// run, "<path>/raw" without metrics and "<path>/instrumented" with them:
//
//	noop-get, noop-put             the decorator around a store that does nothing (pure recording cost)
//	local-get, local-put-eventual  Pebble
//	redis-get, redis-put           a real redis-server (REDIS_URL or started here)
//	message-ping                   a real ping between two libp2p hosts through the message service
func BenchmarkInstrumentationOverhead(b *testing.B) {
	ctx := context.Background()
	const keys = 1 << 12
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("bench/%06d", i)
	}
	value := make([]byte, 128)

	pair := func(name string, raw storage.Store, backend string, op func(s storage.Store, i int) error) {
		inst := storage.Instrument(raw, metrics.NewStorage(prometheus.NewRegistry()), backend)
		for _, v := range []struct {
			variant string
			s       storage.Store
		}{{"raw", raw}, {"instrumented", inst}} {
			b.Run(name+"/"+v.variant, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := op(v.s, i); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
	get := func(s storage.Store, i int) error {
		_, err := s.Get(ctx, names[i%keys], storage.Strong)
		return err
	}
	putWith := func(c storage.Consistency) func(s storage.Store, i int) error {
		return func(s storage.Store, i int) error { return s.Put(ctx, names[i%keys], value, c) }
	}

	noop := &noopStore{value: value}
	pair("noop-get", noop, "local", get)
	pair("noop-put", noop, "local", putWith(storage.Strong))

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
	pair("local-get", ls, "local", get)
	pair("local-put-eventual", ls, "local", putWith(storage.Eventual))

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
	pair("redis-get", rs, "redis", get)
	pair("redis-put", rs, "redis", putWith(storage.Strong))

	for _, v := range []struct {
		variant      string
		instrumented bool
	}{{"raw", false}, {"instrumented", true}} {
		svc, target := pingPair(b, v.instrumented)
		b.Run("message-ping/"+v.variant, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := svc.Ping(ctx, target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
