package redisstore_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

const (
	benchKeys       = 1 << 14
	benchValueBytes = 128
)

type benchFixture struct {
	raw      *redisstore.Store // its Client() is the raw go-redis client
	store    storage.Store     // Instrument(Validate(redis)) as the node builds it
	keys     []string          // keys as the store sees them
	wireKeys []string          // the same keys with the store's prefix
	value    []byte
}

func newBenchFixture(b *testing.B) *benchFixture {
	b.Helper()
	r := testenv.StartRedis(b)
	s := newStore(b, redisstore.Options{Addrs: []string{r.Addr()}})
	f := &benchFixture{
		raw:   s,
		store: storage.Instrument(storage.Validate(s, 0), metrics.NewStorage(prometheus.NewRegistry()), "redis"),
		value: make([]byte, benchValueBytes),
	}
	for i := range f.value {
		f.value[i] = byte(i)
	}
	ctx := context.Background()
	pipe := s.Client().Pipeline()
	for i := 0; i < benchKeys; i++ {
		k := fmt.Sprintf("bench/%08d", i)
		f.keys = append(f.keys, k)
		f.wireKeys = append(f.wireKeys, s.KeyPrefix()+k)
		pipe.Set(ctx, s.KeyPrefix()+k, f.value, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	return f
}

var clientCounts = []int{1, 16}

func run(b *testing.B, goroutines int, op func(i int) error) {
	b.ReportAllocs()
	if goroutines == 1 {
		for i := 0; i < b.N; i++ {
			if err := op(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(int(seq.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPut compares a raw go-redis SET (same client, same pool) with
// the store's Strong Put (MinReplicas 0: a plain SET plus the store's
// retry loop, validation and instrumentation).
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	f := newBenchFixture(b)
	cl := f.raw.Client()
	for _, n := range clientCounts {
		b.Run(fmt.Sprintf("c%d/raw", n), func(b *testing.B) {
			run(b, n, func(i int) error { return cl.Set(ctx, f.wireKeys[i%benchKeys], f.value, 0).Err() })
		})
		b.Run(fmt.Sprintf("c%d/store", n), func(b *testing.B) {
			run(b, n, func(i int) error { return f.store.Put(ctx, f.keys[i%benchKeys], f.value, storage.Strong) })
		})
	}
}

// BenchmarkGet compares a raw go-redis GET with the store's Strong Get.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	f := newBenchFixture(b)
	cl := f.raw.Client()
	for _, n := range clientCounts {
		b.Run(fmt.Sprintf("c%d/raw", n), func(b *testing.B) {
			run(b, n, func(i int) error {
				_, err := cl.Get(ctx, f.wireKeys[(i*7919)%benchKeys]).Bytes()
				return err
			})
		})
		b.Run(fmt.Sprintf("c%d/store", n), func(b *testing.B) {
			run(b, n, func(i int) error {
				_, err := f.store.Get(ctx, f.keys[(i*7919)%benchKeys], storage.Strong)
				return err
			})
		})
	}
}
