package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// pageFetch is the number of values fetched by one pipeline of ListPage.
const pageFetch = 128

// ListPage returns up to limit entries with prefix whose key is greater than
// after, in ascending byte order. The keys come from the key index (see
// index.go): one ZRANGE BYLEX LIMIT per index sorted set, O(log n + limit),
// whatever the size of the keyspace. Their values are then fetched in
// pipelines, in key order, and the page ends early once they reach
// storage.MaxPageBytes. Keys deleted between the two steps are left out and
// the page is refilled past them.
func (s *Store) ListPage(ctx context.Context, prefix, after string, limit int, _ storage.Consistency) ([]storage.KV, string, error) {
	if limit <= 0 || limit > storage.MaxPageLimit {
		return nil, "", fmt.Errorf("redis list: %w: limit %d", storage.ErrInvalidPage, limit)
	}
	var (
		kvs  []storage.KV
		next string
	)
	err := s.call(ctx, "list", func() (err error) {
		kvs, next, err = s.listIndexed(ctx, prefix, after, limit, storage.MaxPageBytes)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return kvs, next, nil
}

// fetch returns the values of full keys, nil for a missing key.
func (s *Store) fetch(ctx context.Context, keys []string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if s.cluster != nil {
		// Keys live in different slots: pipeline single-key GETs, which
		// the cluster client groups by node.
		cmds := make([]*redis.StringCmd, len(keys))
		_, err := s.cluster.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.Get(ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for i, cmd := range cmds {
			v, err := cmd.Bytes()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if v == nil {
				v = []byte{}
			}
			out[i] = v
		}
		return out, nil
	}
	vals, err := s.single.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[i] = []byte(str)
		}
	}
	return out, nil
}
