package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// rawClient is a plain go-redis client on the same server(s), which knows
// nothing of the index.
func rawClient(t *testing.T, addrs []string) redis.UniversalClient {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func listKeys(t *testing.T, s storage.Store, prefix string) []string {
	t.Helper()
	kvs, err := s.List(context.Background(), prefix, storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}

// TestIndexBackfill writes keys the way earlier versions did (a plain SET
// of prefix+key, no index entry), then opens several stores at once on that
// prefix: each sees every old key in List and ListPage. The backfill runs
// once per prefix (a key written raw afterwards is not listed) and again
// when its marker is deleted.
func TestIndexBackfill(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		r := testenv.StartRedis(t)
		testIndexBackfill(t, []string{r.Addr()})
	})
	t.Run("cluster", func(t *testing.T) {
		c := testenv.StartRedisCluster(t, 3)
		testIndexBackfill(t, c.Addrs())
	})
}

func testIndexBackfill(t *testing.T, addrs []string) {
	ctx := context.Background()
	raw := rawClient(t, addrs)
	prefix := uniquePrefix(t)
	const n = 2500
	var want []string
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("old/%05d", i)
		want = append(want, k)
		if err := raw.Set(ctx, prefix+k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Another application's key that starts like the prefix.
	if err := raw.Set(ctx, strings.TrimSuffix(prefix, ":")+"X:old/0", "other", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The index of a store whose prefix extends this one is not a key.
	if err := raw.ZAdd(ctx, prefix+"nested:\x00idx", redis.Z{Member: "k"}).Err(); err != nil {
		t.Fatal(err)
	}

	stores := make([]*redisstore.Store, 4)
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = redisstore.New(ctx, redisstore.Options{Addrs: addrs, KeyPrefix: prefix})
		}()
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("New %d: %v", i, errs[i])
		}
		t.Cleanup(func() { _ = s.Close() })
	}
	for i, s := range stores {
		if got := listKeys(t, s, "old/"); !slices.Equal(got, want) {
			t.Fatalf("store %d lists %d keys, want %d (first %q)", i, len(got), n, got[:min(3, len(got))])
		}
	}
	s := stores[0]
	kvs, next, err := s.ListPage(ctx, "old/", "old/00099", 100, storage.Strong)
	if err != nil || len(kvs) != 100 || kvs[0].Key != "old/00100" || string(kvs[99].Value) != "old/00199" || next != "old/00199" {
		t.Fatalf("ListPage after old/00099 = %d entries, next %q, %v", len(kvs), next, err)
	}
	if got, err := raw.Exists(ctx, redisstore.MarkerKey(s)).Result(); err != nil || got != 1 {
		t.Fatalf("marker %q exists = %d, %v", redisstore.MarkerKey(s), got, err)
	}

	// Once done, the backfill does not run again: a key written raw now
	// has no index entry and is not listed by a new store...
	if err := raw.Set(ctx, prefix+"old/99999", "late", 0).Err(); err != nil {
		t.Fatal(err)
	}
	again := newStore(t, redisstore.Options{Addrs: addrs, KeyPrefix: prefix})
	if got := listKeys(t, again, "old/9"); len(got) != 0 {
		t.Fatalf("a raw key written after the backfill is listed: %q", got)
	}
	// ...until the marker is deleted.
	if err := raw.Del(ctx, redisstore.MarkerKey(s)).Err(); err != nil {
		t.Fatal(err)
	}
	rebuilt := newStore(t, redisstore.Options{Addrs: addrs, KeyPrefix: prefix})
	if got := listKeys(t, rebuilt, "old/9"); !slices.Equal(got, []string{"old/99999"}) {
		t.Fatalf("after a second backfill: %q", got)
	}
	if got := listKeys(t, rebuilt, ""); len(got) != n+1 {
		t.Fatalf("List(\"\") = %d keys, want %d", len(got), n+1)
	}
}

// TestIndexOnTheWire checks the index itself: a Put adds the key (without
// the prefix) to its index sorted set with score 0, a Delete removes it, and
// the index and marker keys start with the prefix and NUL.
func TestIndexOnTheWire(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		r := testenv.StartRedis(t)
		testIndexOnTheWire(t, []string{r.Addr()}, 1)
	})
	t.Run("cluster", func(t *testing.T) {
		c := testenv.StartRedisCluster(t, 3)
		testIndexOnTheWire(t, c.Addrs(), 16)
	})
}

func testIndexOnTheWire(t *testing.T, addrs []string, shards int) {
	ctx := context.Background()
	s := newStore(t, redisstore.Options{Addrs: addrs})
	raw := rawClient(t, addrs)
	keys := redisstore.IndexKeys(s)
	if len(keys) != shards {
		t.Fatalf("%d index keys, want %d", len(keys), shards)
	}
	for _, k := range append(slices.Clone(keys), redisstore.MarkerKey(s)) {
		if !strings.HasPrefix(k, s.KeyPrefix()+"\x00") {
			t.Fatalf("index key %q does not start with the prefix and NUL", k)
		}
	}
	for _, key := range []string{"a", "b/c", "日本", "z"} {
		if err := s.Put(ctx, key, []byte("v"), storage.Strong); err != nil {
			t.Fatal(err)
		}
		score, err := raw.ZScore(ctx, redisstore.IndexKeyOf(s, key), key).Result()
		if err != nil || score != 0 {
			t.Fatalf("index entry of %q: score %v, %v", key, score, err)
		}
		if got, err := raw.Get(ctx, s.KeyPrefix()+key).Result(); err != nil || got != "v" {
			t.Fatalf("data key %q on the wire: %q, %v", s.KeyPrefix()+key, got, err)
		}
	}
	if err := s.Delete(ctx, "b/c", storage.Strong); err != nil {
		t.Fatal(err)
	}
	if err := raw.ZScore(ctx, redisstore.IndexKeyOf(s, "b/c"), "b/c").Err(); err != redis.Nil {
		t.Fatalf("index entry of a deleted key: %v", err)
	}
	total := int64(0)
	for _, k := range keys {
		n, err := raw.ZCard(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 3 {
		t.Fatalf("index holds %d members, want 3", total)
	}
}

// TestClusterIndexShardsSpread checks, against the servers' own slot map,
// that the 16 index shards are spread over the three masters of a cluster.
func TestClusterIndexShardsSpread(t *testing.T) {
	c := testenv.StartRedisCluster(t, 3)
	s := newStore(t, redisstore.Options{Addrs: c.Addrs()})
	cl := s.Client().(*redis.ClusterClient)
	ctx := context.Background()
	perMaster := map[string]int{}
	for _, k := range redisstore.IndexKeys(s) {
		node, err := cl.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		perMaster[node.Options().Addr]++
	}
	if len(perMaster) != 3 {
		t.Fatalf("shards per master %v, want all 3 masters", perMaster)
	}
	for addr, n := range perMaster {
		if n < 4 || n > 7 {
			t.Fatalf("master %s holds %d of 16 shards: %v", addr, n, perMaster)
		}
	}
}

// TestDanglingIndexEntries adds index entries whose key does not exist (as
// a crash between the two writes of a cluster Put or Delete leaves them):
// pages skip them, are refilled to their limit, and remove them.
func TestDanglingIndexEntries(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		r := testenv.StartRedis(t)
		testDangling(t, []string{r.Addr()})
	})
	t.Run("cluster", func(t *testing.T) {
		c := testenv.StartRedisCluster(t, 3)
		testDangling(t, c.Addrs())
	})
}

func testDangling(t *testing.T, addrs []string) {
	ctx := context.Background()
	s := newStore(t, redisstore.Options{Addrs: addrs})
	raw := rawClient(t, addrs)
	var live []string
	for i := 0; i < 60; i++ {
		k := fmt.Sprintf("k%03d", i)
		if i%3 == 1 {
			// Every third key exists only in the index.
			if err := raw.ZAdd(ctx, redisstore.IndexKeyOf(s, k), redis.Z{Member: k}).Err(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		live = append(live, k)
		if err := s.Put(ctx, k, []byte(k), storage.Strong); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		kvs, next, err := s.ListPage(ctx, "k", after, 10, storage.Strong)
		if err != nil {
			t.Fatal(err)
		}
		if next != "" && len(kvs) != 10 {
			t.Fatalf("page %d after %q has %d entries and next %q: not refilled", pages, after, len(kvs), next)
		}
		for _, kv := range kvs {
			if string(kv.Value) != kv.Key {
				t.Fatalf("%q = %q", kv.Key, kv.Value)
			}
			got = append(got, kv.Key)
		}
		if next == "" {
			break
		}
		after = next
	}
	if !slices.Equal(got, live) {
		t.Fatalf("pages = %q, want %q", got, live)
	}
	dangling := 0
	for i := 1; i < 60; i += 3 {
		k := fmt.Sprintf("k%03d", i)
		if err := raw.ZScore(ctx, redisstore.IndexKeyOf(s, k), k).Err(); err == nil {
			dangling++
		}
	}
	if dangling != 0 {
		t.Fatalf("%d of 20 dangling entries left after listing", dangling)
	}
	if got := listKeys(t, s, "k"); !slices.Equal(got, live) {
		t.Fatalf("List = %q", got)
	}
}

// TestListPrefixBytes lists prefixes whose successor is computed on bytes
// inside multi-byte UTF-8 sequences: é is C3 A9 and ê C3 AA, so the range of
// "é" must stop before "ê" and the range of "z" must include "z\u00ff".
func TestListPrefixBytes(t *testing.T) {
	r := testenv.StartRedis(t)
	s := storage.Validate(newStore(t, redisstore.Options{Addrs: []string{r.Addr()}}), 0)
	ctx := context.Background()
	for _, k := range []string{"e", "é", "é1", "éz", "é\U0010FFFF", "ê", "f", "z", "zÿ", "z\U0010FFFF", "{"} {
		if err := s.Put(ctx, k, []byte(k), storage.Strong); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string][]string{
		"é": {"é", "é1", "éz", "é\U0010FFFF"},
		"z": {"z", "zÿ", "z\U0010FFFF"},
		"ê": {"ê"},
		"":  {"e", "f", "z", "zÿ", "z\U0010FFFF", "{", "é", "é1", "éz", "é\U0010FFFF", "ê"},
	} {
		if got := listKeys(t, s, prefix); !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q, want %q", prefix, got, want)
		}
	}
}

// TestIndexWithMinReplicas runs Put and Delete with WAIT: the index entry
// is written in the transaction that WAIT covers, so it is on the replica
// when Put returns.
func TestIndexWithMinReplicas(t *testing.T) {
	primary := testenv.StartRedis(t)
	replica := testenv.StartRedis(t)
	if _, err := testenv.RedisCommand(primary.Addr(), time.Second, "CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		t.Fatal(err)
	}
	replica.ReplicaOf(t, primary)
	s := newStore(t, redisstore.Options{Addrs: []string{primary.Addr()}, MinReplicas: 1, WaitTimeout: 5 * time.Second})
	ctx := context.Background()
	if err := s.Put(ctx, "w", []byte("v"), storage.Strong); err != nil {
		t.Fatal(err)
	}
	if got, err := testenv.RedisCommand(replica.Addr(), time.Second, "ZSCORE", redisstore.IndexKeyOf(s, "w"), "w"); err != nil || got != "0" {
		t.Fatalf("replica ZSCORE of the index entry = %q, %v", got, err)
	}
	if err := s.Delete(ctx, "w", storage.Strong); err != nil {
		t.Fatal(err)
	}
	if got, err := testenv.RedisCommand(replica.Addr(), time.Second, "ZCARD", redisstore.IndexKeyOf(s, "w")); err != nil || got != "0" {
		t.Fatalf("replica ZCARD of the index = %q, %v", got, err)
	}
}

// TestIndexUnderConcurrentWrites races a Put and a Delete of the same key
// from two stores, for several keys at once, round after round, with Lists
// (which sweep dangling entries) running beside them, and checks the
// invariant after every round: a key that exists has its index entry and is
// listed.
func TestIndexUnderConcurrentWrites(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		r := testenv.StartRedis(t)
		testConcurrentIndex(t, []string{r.Addr()})
	})
	t.Run("cluster", func(t *testing.T) {
		c := testenv.StartRedisCluster(t, 3)
		testConcurrentIndex(t, c.Addrs())
	})
}

func testConcurrentIndex(t *testing.T, addrs []string) {
	ctx := context.Background()
	prefix := uniquePrefix(t)
	const (
		nKeys   = 8
		nRounds = 100
	)
	a := newStore(t, redisstore.Options{Addrs: addrs, KeyPrefix: prefix})
	b := newStore(t, redisstore.Options{Addrs: addrs, KeyPrefix: prefix})
	raw := rawClient(t, addrs)
	storedAtEnd := 0
	for round := 0; round < nRounds; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 2*nKeys+1)
		for i := 0; i < nKeys; i++ {
			key := fmt.Sprintf("c%d", i)
			put, del := a, b
			if (round+i)%2 == 1 {
				put, del = b, a
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := put.Put(ctx, key, []byte(key), storage.Eventual); err != nil {
					errs <- err
				}
			}()
			go func() {
				defer wg.Done()
				if err := del.Delete(ctx, key, storage.Eventual); err != nil {
					errs <- err
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.List(ctx, "c", storage.Eventual); err != nil {
				errs <- err
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var stored []string
		for i := 0; i < nKeys; i++ {
			key := fmt.Sprintf("c%d", i)
			n, err := raw.Exists(ctx, prefix+key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				stored = append(stored, key)
				if err := raw.ZScore(ctx, redisstore.IndexKeyOf(a, key), key).Err(); err != nil {
					t.Fatalf("round %d: stored key %q has no index entry: %v", round, key, err)
				}
			}
		}
		if got := listKeys(t, b, "c"); !slices.Equal(got, stored) {
			t.Fatalf("round %d: List = %q, stored keys %q", round, got, stored)
		}
		storedAtEnd += len(stored)
	}
	// Both orders must have happened for the test to mean anything.
	if storedAtEnd == 0 || storedAtEnd == nKeys*nRounds {
		t.Fatalf("%d of %d races ended with the key stored: no real race", storedAtEnd, nKeys*nRounds)
	}
	t.Logf("%d of %d races ended with the key stored", storedAtEnd, nKeys*nRounds)
}

// TestClusterPageFromOneShard pages through keys that all live in one index
// shard, below keys spread over the others: the merge must keep asking that
// shard for more instead of stopping at its first share.
func TestClusterPageFromOneShard(t *testing.T) {
	c := testenv.StartRedisCluster(t, 3)
	s := newStore(t, redisstore.Options{Addrs: c.Addrs()})
	ctx := context.Background()
	shard := redisstore.IndexKeyOf(s, "a0000")
	var want []string
	for i := 0; len(want) < 300; i++ {
		k := fmt.Sprintf("a%04d", i)
		if redisstore.IndexKeyOf(s, k) != shard {
			continue
		}
		want = append(want, k)
		if err := s.Put(ctx, k, []byte(k), storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 300; i++ {
		if err := s.Put(ctx, fmt.Sprintf("b%04d", i), []byte("b"), storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	kvs, next, err := s.ListPage(ctx, "", "", 250, storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(kvs))
	for i, kv := range kvs {
		got[i] = kv.Key
	}
	if !slices.Equal(got, want[:250]) || next != want[249] {
		t.Fatalf("first page: %d keys (first %q), next %q; want the 250 smallest of one shard", len(got), got[:min(3, len(got))], next)
	}
	kvs, next, err = s.ListPage(ctx, "", next, 100, storage.Strong)
	if err != nil || len(kvs) != 100 || kvs[49].Key != want[299] || kvs[50].Key != "b0000" || next != "b0049" {
		t.Fatalf("second page: %d keys, next %q, %v", len(kvs), next, err)
	}
	if got := listKeys(t, s, ""); len(got) != 600 || got[299] != want[299] || got[599] != "b0299" {
		t.Fatalf("List = %d keys", len(got))
	}
}

// TestClusterIndexWithMinReplicas writes with WAIT on a 3+3 cluster: the
// index entry's ZADD and the SET each wait on their own master's replica.
func TestClusterIndexWithMinReplicas(t *testing.T) {
	c := testenv.StartRedisClusterWithReplicas(t, 3, 1)
	s := newStore(t, redisstore.Options{Addrs: c.Addrs(), MinReplicas: 1, WaitTimeout: 5 * time.Second})
	ctx := context.Background()
	var want []string
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("w%02d", i)
		want = append(want, k)
		if err := s.Put(ctx, k, []byte(k), storage.Strong); err != nil {
			t.Fatalf("Strong Put with replicas: %v", err)
		}
	}
	if got := listKeys(t, s, "w"); !slices.Equal(got, want) {
		t.Fatalf("List = %q", got)
	}
	for _, k := range want[:10] {
		if err := s.Delete(ctx, k, storage.Strong); err != nil {
			t.Fatalf("Strong Delete with replicas: %v", err)
		}
	}
	if got := listKeys(t, s, "w"); !slices.Equal(got, want[10:]) {
		t.Fatalf("List after deletes = %q", got)
	}
}
