package redisstore

import (
	"context"
	"errors"
	"slices"

	"github.com/redis/go-redis/v9"
)

// clusterMembers merges the n smallest members in [start, stop) over the
// shards. Each shard holds about 1/16 of the members, so it is first asked
// for twice its share; a shard is asked for more (twice as many each time)
// only while it may still hold members below the n-th smallest found so
// far: it is not exhausted and its last member read is below that cut.
func (s *Store) clusterMembers(ctx context.Context, start, stop string, n int) ([]string, error) {
	type shard struct {
		key, from string
		got       []string
		done      bool
	}
	shards := make([]*shard, len(s.index))
	for i, k := range s.index {
		shards[i] = &shard{key: k, from: start}
	}
	per := min(n, 2*n/len(shards)+16)
	for {
		var ask []*shard
		var cmds []*redis.StringSliceCmd
		_, err := s.cluster.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, sh := range shards {
				if sh.done {
					continue
				}
				ask = append(ask, sh)
				cmds = append(cmds, p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: sh.key, Start: sh.from, Stop: stop, ByLex: true, Count: int64(per)}))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for i, sh := range ask {
			batch := cmds[i].Val()
			sh.got = append(sh.got, batch...)
			if len(batch) < per {
				sh.done = true
			} else {
				sh.from = "(" + batch[len(batch)-1]
			}
		}
		var all []string
		for _, sh := range shards {
			all = append(all, sh.got...)
		}
		// A member has one shard, so shards are disjoint; Compact only
		// guards against an entry added by hand to a second shard.
		slices.Sort(all)
		all = slices.Compact(all)
		more := false
		for _, sh := range shards {
			if !sh.done && (len(all) < n || sh.got[len(sh.got)-1] < all[n-1]) {
				more = true
			} else {
				sh.done = true
			}
		}
		if !more {
			return all[:min(n, len(all))], nil
		}
		per = min(n, 2*per)
	}
}

// clusterPut writes key in a cluster: index entry, value, then the check
// that no concurrent removal took the entry away (see the index comment).
func (s *Store) clusterPut(ctx context.Context, wait bool, key string, value []byte) error {
	ik, k := s.indexKey(key), s.prefix+key
	add := func(cmd redis.Cmdable) error { return cmd.ZAdd(ctx, ik, redis.Z{Member: key}).Err() }
	if err := s.exec(ctx, wait, ik, add); err != nil {
		return err
	}
	if err := s.exec(ctx, wait, k, func(cmd redis.Cmdable) error { return cmd.Set(ctx, k, value, 0).Err() }); err != nil {
		return err
	}
	switch err := s.client.ZScore(ctx, ik, key).Err(); {
	case errors.Is(err, redis.Nil):
		return s.exec(ctx, wait, ik, add)
	default:
		return err
	}
}

// clusterDelete deletes key in a cluster: value, index entry, then the
// check that no concurrent Put stored the key again meanwhile. The removal
// of the entry is not waited for: losing it in a failover only leaves a
// dangling entry.
func (s *Store) clusterDelete(ctx context.Context, wait bool, key string) error {
	ik, k := s.indexKey(key), s.prefix+key
	if err := s.exec(ctx, wait, k, func(cmd redis.Cmdable) error { return cmd.Del(ctx, k).Err() }); err != nil {
		return err
	}
	if err := s.client.ZRem(ctx, ik, key).Err(); err != nil {
		return err
	}
	n, err := s.client.Exists(ctx, k).Result()
	if err != nil || n == 0 {
		return err
	}
	return s.exec(ctx, wait, ik, func(cmd redis.Cmdable) error { return cmd.ZAdd(ctx, ik, redis.Z{Member: key}).Err() })
}

// clusterSweep removes the entries of members whose key listing found gone,
// then re-adds those whose key a concurrent Put stored meanwhile. Each step
// is one pipeline over the nodes.
func (s *Store) clusterSweep(ctx context.Context, gone []string) error {
	if _, err := s.cluster.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range gone {
			p.ZRem(ctx, s.indexKey(m), m)
		}
		return nil
	}); err != nil {
		return err
	}
	exists := make([]*redis.IntCmd, len(gone))
	if _, err := s.cluster.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range gone {
			exists[i] = p.Exists(ctx, s.prefix+m)
		}
		return nil
	}); err != nil {
		return err
	}
	_, err := s.cluster.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range gone {
			if exists[i].Val() == 1 {
				p.ZAdd(ctx, s.indexKey(m), redis.Z{Member: m})
			}
		}
		return nil
	})
	return err
}
