package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// pageFetch is the number of values fetched by one pipeline of ListPage.
const pageFetch = 128

// ListPage returns up to limit entries with prefix whose key is greater than
// after, in ascending byte order. Redis has no ordered key index, so every
// page SCANs the whole keyspace of every primary for the escaped prefix
// (O(keyspace) time) while keeping only the limit+1 smallest keys above
// after in a bounded max-heap (O(limit) memory); the values of the first
// limit keys are then fetched in pipelines, in key order, and the page ends
// early once they reach storage.MaxPageBytes. Keys deleted between the scan
// and the fetch are left out.
func (s *Store) ListPage(ctx context.Context, prefix, after string, limit int, _ storage.Consistency) ([]storage.KV, string, error) {
	if limit <= 0 || limit > storage.MaxPageLimit {
		return nil, "", fmt.Errorf("redis list: %w: limit %d", storage.ErrInvalidPage, limit)
	}
	var (
		kvs  []storage.KV
		next string
	)
	err := s.retry(ctx, "list", func() (err error) {
		kvs, next, err = s.listPage(ctx, prefix, after, limit)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return kvs, next, nil
}

func (s *Store) listPage(ctx context.Context, prefix, after string, limit int) ([]storage.KV, string, error) {
	pattern := EscapeGlob(s.prefix+prefix) + "*"
	floor := s.prefix + after // full keys above this one qualify
	if after == "" {
		floor = ""
	}
	best := newKeyHeap(limit + 1)
	scan := func(ctx context.Context, node *redis.Client) error {
		var cursor uint64
		for {
			batch, nextCursor, err := node.Scan(ctx, cursor, pattern, scanCount).Result()
			if err != nil {
				return err
			}
			best.offerAll(batch, floor)
			if nextCursor == 0 {
				return nil
			}
			cursor = nextCursor
		}
	}
	var err error
	if s.cluster != nil {
		err = s.cluster.ForEachMaster(ctx, scan)
	} else {
		err = scan(ctx, s.single)
	}
	if err != nil {
		return nil, "", err
	}
	keys := best.sorted()
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]storage.KV, 0, len(keys))
	size := 0
	for start := 0; start < len(keys); start += pageFetch {
		chunk := keys[start:min(start+pageFetch, len(keys))]
		vals, err := s.fetch(ctx, chunk)
		if err != nil {
			return nil, "", err
		}
		for i, v := range vals {
			if v == nil {
				continue // deleted since SCAN
			}
			out = append(out, storage.KV{Key: chunk[i][len(s.prefix):], Value: v})
			size += len(v)
			if size >= storage.MaxPageBytes && (more || start+i+1 < len(keys)) {
				return out, out[len(out)-1].Key, nil
			}
		}
	}
	if more {
		return out, keys[len(keys)-1][len(s.prefix):], nil
	}
	return out, "", nil
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

// keyHeap keeps the n smallest distinct keys offered to it: a max-heap
// (largest kept key at the root) plus a set of its members, since SCAN may
// return a key more than once.
type keyHeap struct {
	mu   sync.Mutex // ForEachMaster scans the primaries concurrently
	n    int
	keys []string
	in   map[string]struct{}
}

func newKeyHeap(n int) *keyHeap {
	return &keyHeap{n: n, keys: make([]string, 0, min(n, 1024)), in: make(map[string]struct{}, min(n, 1024))}
}

// offerAll offers every key of batch greater than floor.
func (h *keyHeap) offerAll(batch []string, floor string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range batch {
		if k > floor {
			h.offer(k)
		}
	}
}

func (h *keyHeap) offer(k string) {
	if _, dup := h.in[k]; dup {
		return
	}
	if len(h.keys) < h.n {
		h.in[k] = struct{}{}
		h.keys = append(h.keys, k)
		for i := len(h.keys) - 1; i > 0; {
			p := (i - 1) / 2
			if h.keys[p] >= h.keys[i] {
				break
			}
			h.keys[p], h.keys[i] = h.keys[i], h.keys[p]
			i = p
		}
		return
	}
	if k >= h.keys[0] {
		return
	}
	delete(h.in, h.keys[0])
	h.in[k] = struct{}{}
	h.keys[0] = k
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h.keys) && h.keys[l] > h.keys[m] {
			m = l
		}
		if r < len(h.keys) && h.keys[r] > h.keys[m] {
			m = r
		}
		if m == i {
			return
		}
		h.keys[i], h.keys[m] = h.keys[m], h.keys[i]
		i = m
	}
}

// sorted returns the kept keys in ascending order.
func (h *keyHeap) sorted() []string {
	out := slices.Clone(h.keys)
	slices.Sort(out)
	return out
}
