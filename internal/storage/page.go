package storage

import (
	"context"
	"fmt"
)

// DefaultPageSize is the page size of Each when it is given 0.
const DefaultPageSize = 256

// Each calls fn for every entry of s whose key has prefix, in ascending key
// order, reading one page of pageSize entries at a time (0 means
// DefaultPageSize) so that at most one page is held in memory. It stops at
// the first error of the store or of fn and returns it (fn's error as is,
// so callers can branch on it). Entries written or deleted during the walk
// may or may not be seen; none is seen twice.
func Each(ctx context.Context, s Store, prefix string, c Consistency, pageSize int, fn func(KV) error) error {
	if pageSize == 0 {
		pageSize = DefaultPageSize
	}
	after := ""
	for {
		kvs, next, err := s.ListPage(ctx, prefix, after, pageSize, c)
		if err != nil {
			return err
		}
		for i := range kvs {
			if err := fn(kvs[i]); err != nil {
				return err
			}
			kvs[i] = KV{} // let the value go before the page ends
		}
		if next == "" {
			return nil
		}
		if next <= after {
			return fmt.Errorf("list page of %q: cursor %q does not advance past %q", prefix, next, after)
		}
		after = next
	}
}
