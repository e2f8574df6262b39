package redisstore

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// The key index. Redis keeps no ordered index of its keyspace, so the store
// keeps one: sorted sets whose members are the store's keys (without the key
// prefix), all with score 0, so that ZRANGE ... BYLEX LIMIT returns the
// members with a prefix above a cursor in byte order, in O(log n + answer).
//
// Index keys are the key prefix followed by NUL, which no store key contains
// (storage.Validate refuses it), so they never collide with a data key:
//
//	<prefix>\x00idx            the index of a standalone server
//	<prefix>\x00idx{<tag>}     one of clusterShards shards in a Redis Cluster
//	<prefix>\x00idx:v1:<n>     marker: the keys present before the index
//	                           existed have been added to it (n shards)
//
// Invariant: every stored key has an index entry; the index may also hold
// members whose key is gone ("dangling"), which listing skips.
//
// Standalone: the index entry is written in the same MULTI/EXEC as the SET or
// DEL, one round trip, atomically. Dangling entries (left by the backfill
// racing a Delete) are removed by listing with a script that removes a member
// only if its key does not exist, atomically with respect to the writes.
//
// Cluster: a key and its index shard are in different slots, so they cannot
// share a transaction, and the invariant is kept by ordering and re-checking
// (every step below is one round trip):
//
//	Put:     ZADD entry; SET key; ZSCORE entry, ZADD it again if missing
//	Delete:  DEL key; ZREM entry; EXISTS key, ZADD the entry again if present
//	sweep:   (GET key was nil) ZREM entry; EXISTS key, ZADD again if present
//
// Whatever the interleaving, once the operations are over a stored key has
// its entry: if a removal's ZREM lands between a Put's ZADD and SET, either
// the removal's EXISTS comes after the SET and re-adds the entry, or it comes
// before, and then so does the ZREM and the Put's ZSCORE, after the SET, sees
// the entry missing and re-adds it. Adding before the SET and removing after
// the DEL means a failure or crash between two steps leaves at most a dangling
// entry, never an unlisted key; the one exception is a process dying between
// a Put's SET and its ZSCORE while a Delete or sweep of the same key runs
// between its ZADD and SET. The price: three round trips per Put and Delete
// instead of one.
const (
	indexSuffix   = "\x00idx"
	markerSuffix  = "\x00idx:v1:"
	clusterShards = 16
	clusterSlots  = 16384
)

// indexKeys returns the index sorted sets for prefix: one for a standalone
// server, clusterShards in a cluster, with hash tags chosen so that the
// shards' slots fall in clusterShards equal slot ranges and spread over the
// masters of a cluster whose masters own contiguous ranges (the usual
// layout). The choice is deterministic: every node computes the same keys.
func indexKeys(prefix string, cluster bool) []string {
	if !cluster {
		return []string{prefix + indexSuffix}
	}
	out := make([]string, clusterShards)
	found := 0
	for j := 0; found < clusterShards; j++ {
		tag := strconv.Itoa(j)
		b := int(crc16(tag)%clusterSlots) / (clusterSlots / clusterShards)
		if out[b] == "" {
			out[b] = prefix + indexSuffix + "{" + tag + "}"
			found++
		}
	}
	return out
}

// crc16 is the CRC16-XMODEM of Redis Cluster's key slots (slot = crc16 mod
// 16384).
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// indexKey returns the index sorted set that holds key's entry.
func (s *Store) indexKey(key string) string {
	if len(s.index) == 1 {
		return s.index[0]
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return s.index[h.Sum32()%uint32(len(s.index))]
}

// lexRange returns the ZRANGE BYLEX bounds of the members that start with
// prefix and are greater than after ("" means no lower bound but prefix).
// Members compare as bytes (memcmp), so arbitrary UTF-8 sorts like Go
// strings. The upper bound is exclusive at the smallest string greater than
// every string with prefix: prefix without its trailing 0xff bytes, last
// byte incremented; "+" when there is none (prefix empty or all 0xff).
func lexRange(prefix, after string) (start, stop string) {
	switch {
	case after != "" && after >= prefix:
		start = "(" + after
	case prefix == "":
		start = "-"
	default:
		start = "[" + prefix
	}
	stop = "+"
	if end, ok := prefixEnd(prefix); ok {
		stop = "(" + end
	}
	return start, stop
}

// prefixEnd returns the smallest string greater than every string that
// starts with p, and false when there is none.
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// members returns up to n index members with prefix above after, in
// ascending byte order (reading every shard in one pipeline in a cluster).
func (s *Store) members(ctx context.Context, prefix, after string, n int) ([]string, error) {
	start, stop := lexRange(prefix, after)
	if start[0] != '-' && stop[0] != '+' && start[1:] >= stop[1:] {
		return nil, nil // after is past every key with prefix
	}
	arg := func(k string) redis.ZRangeArgs {
		return redis.ZRangeArgs{Key: k, Start: start, Stop: stop, ByLex: true, Count: int64(n)}
	}
	if s.cluster == nil {
		return s.single.ZRangeArgs(ctx, arg(s.index[0])).Result()
	}
	return s.clusterMembers(ctx, start, stop, n)
}

// sweepScript removes index members whose key does not exist: KEYS[1] is
// the index, KEYS[i+1] the data key of member ARGV[i]. A script runs
// atomically, so it cannot remove the entry of a key a MULTI/EXEC Put has
// just written.
var sweepScript = redis.NewScript(`
local n = 0
for i, m in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    n = n + redis.call('ZREM', KEYS[1], m)
  end
end
return n`)

// sweep removes the dangling index entries gone, best effort: listing found
// no value for them.
func (s *Store) sweep(ctx context.Context, gone []string) {
	if len(gone) == 0 {
		return
	}
	var err error
	if s.cluster != nil {
		err = s.clusterSweep(ctx, gone)
	} else {
		keys := make([]string, 0, len(gone)+1)
		keys = append(keys, s.index[0])
		args := make([]any, len(gone))
		for i, m := range gone {
			keys = append(keys, s.prefix+m)
			args[i] = m
		}
		err = sweepScript.Run(ctx, s.single, keys, args...).Err()
	}
	if err != nil {
		s.log.Debug("Redis index sweep failed", "err", err)
	}
}

// ensureIndex adds the keys stored before the index existed (by an earlier
// version of the store) to the index, once per key prefix and layout: when
// the marker is absent it SCANs the prefix on every primary, adds every key
// found (ZADD is idempotent, so several nodes may do it at once), then sets
// the marker. A key deleted while this runs may be added after its DEL and
// stays as a dangling entry, which listing ignores.
func (s *Store) ensureIndex(ctx context.Context) error {
	return s.call(ctx, "index backfill", func() error {
		n, err := s.client.Exists(ctx, s.marker).Result()
		if err != nil || n == 1 {
			return err
		}
		added, err := s.backfill(ctx)
		if err != nil {
			return err
		}
		if err := s.client.Set(ctx, s.marker, strconv.Itoa(added), 0).Err(); err != nil {
			return err
		}
		if added > 0 {
			s.log.Info("Redis key index built for keys stored by an earlier version", "key_prefix", s.prefix, "keys", added)
		}
		return nil
	})
}

func (s *Store) backfill(ctx context.Context) (int, error) {
	pattern := EscapeGlob(s.prefix) + "*"
	var total atomic.Int64
	scan := func(ctx context.Context, node *redis.Client) error {
		var cursor uint64
		for {
			batch, next, err := node.Scan(ctx, cursor, pattern, scanCount).Result()
			if err != nil {
				return err
			}
			byShard := make(map[string][]redis.Z)
			n := 0
			for _, k := range batch {
				m := k[len(s.prefix):]
				if strings.Contains(m, "\x00") {
					// Not a store key: this store's index and marker,
					// or those of a store whose prefix extends ours.
					continue
				}
				ik := s.indexKey(m)
				byShard[ik] = append(byShard[ik], redis.Z{Member: m})
				n++
			}
			if n > 0 {
				if _, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
					for ik, zs := range byShard {
						p.ZAdd(ctx, ik, zs...)
					}
					return nil
				}); err != nil {
					return err
				}
				total.Add(int64(n))
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	var err error
	if s.cluster != nil {
		err = s.cluster.ForEachMaster(ctx, scan)
	} else {
		err = scan(ctx, s.single)
	}
	if err != nil {
		return 0, fmt.Errorf("scan: %w", err)
	}
	return int(total.Load()), nil
}

// listIndexed returns up to limit entries with prefix above after, in key
// order, and the cursor of the next page ("" at the end). With budget > 0 the
// page also ends once its values reach budget bytes. Members whose key is
// gone are skipped, and the page is refilled past them.
func (s *Store) listIndexed(ctx context.Context, prefix, after string, limit, budget int) ([]storage.KV, string, error) {
	var out []storage.KV
	size := 0
	cursor := after
	for {
		need := limit - len(out)
		members, err := s.members(ctx, prefix, cursor, need+1)
		if err != nil {
			return nil, "", err
		}
		more := len(members) > need
		if more {
			members = members[:need]
		}
		var gone []string
		for start := 0; start < len(members); start += pageFetch {
			chunk := members[start:min(start+pageFetch, len(members))]
			keys := make([]string, len(chunk))
			for i, m := range chunk {
				keys[i] = s.prefix + m
			}
			vals, err := s.fetch(ctx, keys)
			if err != nil {
				return nil, "", err
			}
			for i, v := range vals {
				if v == nil {
					gone = append(gone, chunk[i])
					continue
				}
				out = append(out, storage.KV{Key: chunk[i], Value: v})
				size += len(v)
				if budget > 0 && size >= budget && (more || start+i+1 < len(members)) {
					s.sweep(ctx, gone)
					return out, chunk[i], nil
				}
			}
		}
		s.sweep(ctx, gone)
		switch {
		case !more:
			return out, "", nil
		case len(out) == limit:
			return out, out[len(out)-1].Key, nil
		}
		cursor = members[len(members)-1] // refill past the dangling ones
	}
}

// EscapeGlob escapes the characters that are special in a Redis MATCH
// pattern (* ? [ ] \) so that s matches only itself.
func EscapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
