package local_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/storagetest"
)

// benchKeys is the size of the key space of the benchmarks; values are
// benchValueBytes long.
const (
	benchKeys       = 1 << 16
	benchValueBytes = 128
)

type benchFixture struct {
	raw      *pebble.DB
	store    storage.Store // Instrument(Validate(local)) as the node builds it, with its reserve
	keys     []string
	keyBytes [][]byte
	value    []byte
}

func newBenchFixture(b *testing.B, preload bool) *benchFixture {
	b.Helper()
	s, err := local.Open(filepath.Join(b.TempDir(), "store"), local.Options{MinFreeBytes: 64 << 20}) // the node's default reserve
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	f := &benchFixture{
		raw:   s.DB(),
		store: storage.Instrument(storage.Validate(s, 0), metrics.NewStorage(prometheus.NewRegistry(), config.Backends()), "local"),
		value: make([]byte, benchValueBytes),
	}
	for i := range f.value {
		f.value[i] = byte(i)
	}
	f.keys = make([]string, benchKeys)
	f.keyBytes = make([][]byte, benchKeys)
	for i := range f.keys {
		f.keys[i] = fmt.Sprintf("bench/%08d", i)
		f.keyBytes[i] = []byte(f.keys[i])
	}
	if preload {
		batch := s.DB().NewBatch()
		for _, k := range f.keyBytes {
			_ = batch.Set(k, f.value, nil)
		}
		if err := batch.Commit(pebble.Sync); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

// writerCounts are the concurrency levels measured: one goroutine, and 16
// (RunParallel with SetParallelism rounded up to reach 16 on this machine).
var writerCounts = []int{1, 16}

// BenchmarkPut compares raw Pebble writes (DB.Set with the same durability)
// with the store as the node uses it, at Strong (fsync) and Eventual. Every
// run gets a fresh database, so that raw and store runs pay the same
// background flush and compaction work for their own writes rather than
// for the writes of the runs before them.
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	levels := []struct {
		name string
		c    storage.Consistency
		wo   *pebble.WriteOptions
	}{
		{"strong", storage.Strong, pebble.Sync},
		{"eventual", storage.Eventual, pebble.NoSync},
	}
	for _, lv := range levels {
		for _, n := range writerCounts {
			b.Run(fmt.Sprintf("%s/w%d/raw", lv.name, n), func(b *testing.B) {
				f := newBenchFixture(b, false)
				b.ResetTimer()
				storagetest.BenchOps(b, n, func(i int) error { return f.raw.Set(f.keyBytes[i%benchKeys], f.value, lv.wo) })
				b.StopTimer()
			})
			b.Run(fmt.Sprintf("%s/w%d/store", lv.name, n), func(b *testing.B) {
				f := newBenchFixture(b, false)
				b.ResetTimer()
				storagetest.BenchOps(b, n, func(i int) error { return f.store.Put(ctx, f.keys[i%benchKeys], f.value, lv.c) })
				b.StopTimer()
			})
		}
	}
}

// BenchmarkGet compares raw Pebble reads (Get, copy the value out, release)
// with the store, over 64 Ki preloaded keys.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	f := newBenchFixture(b, true)
	for _, n := range writerCounts {
		b.Run(fmt.Sprintf("r%d/raw", n), func(b *testing.B) {
			storagetest.BenchOps(b, n, func(i int) error {
				v, closer, err := f.raw.Get(f.keyBytes[(i*7919)%benchKeys])
				if err != nil {
					return err
				}
				out := append([]byte(nil), v...)
				_ = out
				return closer.Close()
			})
		})
		b.Run(fmt.Sprintf("r%d/store", n), func(b *testing.B) {
			storagetest.BenchOps(b, n, func(i int) error {
				_, err := f.store.Get(ctx, f.keys[(i*7919)%benchKeys], storage.Strong)
				return err
			})
		})
	}
}
