package storage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// BenchmarkInstrumentationOverhead measures what storage.Instrument adds to
// each backend: every pair runs the same operations on the same store, once
// directly ("raw") and once through the decorator ("instrumented"). The
// noop pairs isolate the recording cost (time.Now, time.Since, a counter
// increment and a histogram observation).
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
				for i := 0; i < b.N; i++ {
					if err := op(v.s, i); err != nil {
						b.Fatal(err)
					}
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
	rs, err := redisstore.New(ctx, redisstore.Options{Addrs: []string{r.Addr()}})
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
}
