package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/storagetest"
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
		store: storage.Instrument(storage.Validate(s, 0), metrics.NewStorage(prometheus.NewRegistry(), config.Backends()), "redis"),
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
		pipe.ZAdd(ctx, redisstore.IndexKeyOf(s, k), redis.Z{Member: k})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	return f
}

var clientCounts = []int{1, 16}

// rawIndexedPut sends the store's write of key i raw: MULTI, ZADD of the
// index entry, SET, EXEC.
func (f *benchFixture) rawIndexedPut(ctx context.Context, i int) error {
	k := f.keys[i%benchKeys]
	_, err := f.raw.Client().TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, redisstore.IndexKeyOf(f.raw, k), redis.Z{Member: k})
		p.Set(ctx, f.wireKeys[i%benchKeys], f.value, 0)
		return nil
	})
	return err
}

// BenchmarkPut compares a raw go-redis SET (same client, same pool) with
// the store's Strong Put (MinReplicas 0: the SET and its index entry in one
// MULTI/EXEC, plus the store's error mapping, validation and instrumentation).
// raw-indexed is the same MULTI/EXEC of ZADD and SET sent raw: store vs
// raw-indexed is the store's own overhead, raw-indexed vs raw the price of
// the index.
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	f := newBenchFixture(b)
	cl := f.raw.Client()
	for _, n := range clientCounts {
		b.Run(fmt.Sprintf("c%d/raw", n), func(b *testing.B) {
			storagetest.BenchOps(b, n, func(i int) error { return cl.Set(ctx, f.wireKeys[i%benchKeys], f.value, 0).Err() })
		})
		b.Run(fmt.Sprintf("c%d/raw-indexed", n), func(b *testing.B) {
			storagetest.BenchOps(b, n, func(i int) error { return f.rawIndexedPut(ctx, i) })
		})
		b.Run(fmt.Sprintf("c%d/store", n), func(b *testing.B) {
			storagetest.BenchOps(b, n, func(i int) error { return f.store.Put(ctx, f.keys[i%benchKeys], f.value, storage.Strong) })
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
			storagetest.BenchOps(b, n, func(i int) error {
				_, err := cl.Get(ctx, f.wireKeys[(i*7919)%benchKeys]).Bytes()
				return err
			})
		})
		b.Run(fmt.Sprintf("c%d/store", n), func(b *testing.B) {
			storagetest.BenchOps(b, n, func(i int) error {
				_, err := f.store.Get(ctx, f.keys[(i*7919)%benchKeys], storage.Strong)
				return err
			})
		})
	}
}

const (
	listBenchKeys = 100_000
	listPrefix    = "list/0012" // list/001200 .. list/001299: 100 keys
	listWant      = 100
)

// BenchmarkListPrefix lists the 100 keys under one prefix among 100,000,
// standalone and on a 3-master cluster:
//
//	index/page   the store's ListPage(prefix, "", 100): the key index
//	index/list   the store's List(prefix)
//	index/page10000  the first page of 10,000 of the 100,000 keys
//	scan         what List did before the index, with raw go-redis: SCAN
//	             MATCH prefix* COUNT 1000 over every primary, then the values
//
// The keys are written raw, without index entries (as earlier versions did),
// before the store is opened, so opening it runs the backfill (reported once
// as backfill-ms).
func BenchmarkListPrefix(b *testing.B) {
	b.Run("standalone", func(b *testing.B) {
		r := testenv.StartRedis(b)
		benchList(b, []string{r.Addr()})
	})
	b.Run("cluster", func(b *testing.B) {
		c := testenv.StartRedisCluster(b, 3)
		benchList(b, c.Addrs())
	})
}

func benchList(b *testing.B, addrs []string) {
	ctx := context.Background()
	prefix := uniquePrefix(b)
	raw := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs})
	b.Cleanup(func() { _ = raw.Close() })
	value := make([]byte, benchValueBytes)
	for start := 0; start < listBenchKeys; start += 10_000 {
		pipe := raw.Pipeline()
		for i := start; i < start+10_000; i++ {
			pipe.Set(ctx, fmt.Sprintf("%slist/%06d", prefix, i), value, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	begin := time.Now()
	s := newStore(b, redisstore.Options{Addrs: addrs, KeyPrefix: prefix})
	backfill := time.Since(begin)
	st := storage.Instrument(storage.Validate(s, 0), metrics.NewStorage(prometheus.NewRegistry(), config.Backends()), "redis")

	check := func(b *testing.B, n int, err error) {
		if err != nil || n != listWant {
			b.Fatalf("listed %d keys, %v; want %d", n, err, listWant)
		}
	}
	b.Run("index/page", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			kvs, _, err := st.ListPage(ctx, listPrefix, "", listWant, storage.Strong)
			check(b, len(kvs), err)
		}
		b.ReportMetric(float64(backfill.Milliseconds()), "backfill-ms")
	})
	b.Run("index/list", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			kvs, err := st.List(ctx, listPrefix, storage.Strong)
			check(b, len(kvs), err)
		}
	})
	b.Run("index/page10000", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			kvs, _, err := st.ListPage(ctx, "list/", "", 10_000, storage.Strong)
			if err != nil || len(kvs) != 10_000 {
				b.Fatalf("listed %d keys, %v; want 10000", len(kvs), err)
			}
		}
	})
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n, err := scanList(ctx, raw, redisstore.EscapeGlob(prefix+listPrefix)+"*")
			check(b, n, err)
		}
	})
}

// scanList is the listing of earlier versions, with raw go-redis: SCAN
// MATCH over every primary, then GET of every key found. It returns how
// many values it got.
func scanList(ctx context.Context, cl redis.UniversalClient, pattern string) (int, error) {
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, node *redis.Client) error {
		var cursor uint64
		for {
			batch, next, err := node.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			keys = append(keys, batch...)
			mu.Unlock()
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	var err error
	if cc, ok := cl.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, scan)
	} else {
		err = scan(ctx, cl.(*redis.Client))
	}
	if err != nil {
		return 0, err
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	cmds := make([]*redis.StringCmd, len(keys))
	if _, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cmds {
		if c.Err() == nil {
			n++
		}
	}
	return n, nil
}

// BenchmarkClusterWrite compares raw SET / DEL with the store's Put and
// Delete on a 3-master cluster, where the index costs two more round trips
// per write (see index.go).
func BenchmarkClusterWrite(b *testing.B) {
	ctx := context.Background()
	c := testenv.StartRedisCluster(b, 3)
	s := newStore(b, redisstore.Options{Addrs: c.Addrs()})
	st := storage.Instrument(storage.Validate(s, 0), metrics.NewStorage(prometheus.NewRegistry(), config.Backends()), "redis")
	cl := s.Client()
	value := make([]byte, benchValueBytes)
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/%08d", i)
	}
	b.Run("put/raw", func(b *testing.B) {
		storagetest.BenchOps(b, 1, func(i int) error { return cl.Set(ctx, s.KeyPrefix()+keys[i%benchKeys], value, 0).Err() })
	})
	b.Run("put/store", func(b *testing.B) {
		storagetest.BenchOps(b, 1, func(i int) error { return st.Put(ctx, keys[i%benchKeys], value, storage.Strong) })
	})
	b.Run("delete/raw", func(b *testing.B) {
		storagetest.BenchOps(b, 1, func(i int) error { return cl.Del(ctx, s.KeyPrefix()+keys[i%benchKeys]).Err() })
	})
	b.Run("delete/store", func(b *testing.B) {
		storagetest.BenchOps(b, 1, func(i int) error { return st.Delete(ctx, keys[i%benchKeys], storage.Strong) })
	})
}

// pairedRoundOps is the number of operations of one variant in one round
// of BenchmarkStoreVsRawPaired.
const pairedRoundOps = 200

// BenchmarkStoreVsRawPaired runs the store and the raw go-redis command in
// interleaved rounds, one client: per sub-benchmark three variants (raw A,
// store, raw B as the A/A control) run pairedRoundOps operations each per
// round, in rotating order (testenv.PairedOrders), so that drift and load
// hit all three alike. b.N is the number of rounds. Reported as medians of
// the per-round ratios: store/raw (store time over the mean of raw A and
// B; 1.10 is 10 % slower), control (raw A over raw B), and ns/op and
// raw-ns/op (medians of the per-operation times).
//
//	put          raw SET vs the store's Strong Put (SET and index entry)
//	put-indexed  the store's MULTI/EXEC of ZADD and SET sent raw vs Put:
//	             the store's own overhead over the same Redis work
//	get          raw GET vs the store's Strong Get
func BenchmarkStoreVsRawPaired(b *testing.B) {
	ctx := context.Background()
	f := newBenchFixture(b)
	cl := f.raw.Client()
	rawSet := func(i int) error { return cl.Set(ctx, f.wireKeys[i%benchKeys], f.value, 0).Err() }
	rawIndexed := func(i int) error { return f.rawIndexedPut(ctx, i) }
	put := func(i int) error { return f.store.Put(ctx, f.keys[i%benchKeys], f.value, storage.Strong) }
	rawGet := func(i int) error {
		_, err := cl.Get(ctx, f.wireKeys[(i*7919)%benchKeys]).Bytes()
		return err
	}
	get := func(i int) error {
		_, err := f.store.Get(ctx, f.keys[(i*7919)%benchKeys], storage.Strong)
		return err
	}
	for _, c := range []struct {
		name    string
		raw, op func(int) error
	}{{"put", rawSet, put}, {"put-indexed", rawIndexed, put}, {"get", rawGet, get}} {
		b.Run(c.name, func(b *testing.B) {
			variants := [3]func(int) error{c.raw, c.op, c.raw}
			var next int
			run := func(k int) time.Duration {
				start := time.Now()
				for range pairedRoundOps {
					if err := variants[k](next); err != nil {
						b.Fatal(err)
					}
					next++
				}
				return time.Since(start)
			}
			for k := range variants { // warm every variant
				run(k)
			}
			var ratio, control, opNs, rawNs []float64
			var t [3]time.Duration
			b.ResetTimer()
			for r := range b.N {
				for _, k := range testenv.PairedOrders[r%len(testenv.PairedOrders)] {
					t[k] = run(k)
				}
				raw := (t[0] + t[2]).Seconds() / 2
				ratio = append(ratio, t[1].Seconds()/raw)
				control = append(control, t[0].Seconds()/t[2].Seconds())
				opNs = append(opNs, float64(t[1].Nanoseconds())/pairedRoundOps)
				rawNs = append(rawNs, raw*1e9/pairedRoundOps)
			}
			b.StopTimer()
			b.ReportMetric(testenv.Median(opNs), "ns/op")
			b.ReportMetric(testenv.Median(rawNs), "raw-ns/op")
			b.ReportMetric(testenv.Median(ratio), "store/raw")
			b.ReportMetric(testenv.Median(control), "control")
		})
	}
}
