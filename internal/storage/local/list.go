package local

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// List returns every key starting with prefix, in ascending byte order,
// with copies of their values. It reads a consistent snapshot (the
// iterator's implicit one) and stops early when ctx is done.
func (s *Store) List(ctx context.Context, prefix string, _ storage.Consistency) ([]storage.KV, error) {
	release, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	it, err := s.prefixIter(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []storage.KV
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				_ = it.Close()
				return nil, err
			}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("local list: value of %q: %w", it.Key(), err)
		}
		out = append(out, storage.KV{Key: string(it.Key()), Value: append([]byte{}, v...)})
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("local list: %w", err)
	}
	return out, nil
}

// slabBytes is the size of the buffers ListPage copies small values into.
const slabBytes = 64 << 10

// ListPage returns up to limit entries with prefix whose key is greater
// than after, from one iterator bounded to the prefix and positioned with
// SeekGE(after). The values of a page are copied into 64 KiB slabs (a
// few allocations per page, not one per entry); the page ends early once they reach
// storage.MaxPageBytes. next is "" exactly when no further key exists.
func (s *Store) ListPage(ctx context.Context, prefix, after string, limit int, _ storage.Consistency) ([]storage.KV, string, error) {
	if limit <= 0 && ctx.Err() == nil { // a done ctx is reported first, a closed store after
		return nil, "", fmt.Errorf("local list: %w: limit %d", storage.ErrInvalidPage, limit)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, "", err
	}
	defer release()
	it, err := s.prefixIter(ctx, prefix)
	if err != nil {
		return nil, "", err
	}
	var ok bool
	if after != "" && after >= prefix {
		ok = it.SeekGE(bytesOf(after))
		if ok && string(it.Key()) == after {
			ok = it.Next()
		}
	} else {
		ok = it.First()
	}
	var (
		out  = make([]storage.KV, 0, min(limit, 1024))
		slab []byte // values are copied into shared slabs: few allocations per page
		size int
		next string
	)
	for ; ok; ok = it.Next() {
		if len(out) == limit || size >= storage.MaxPageBytes {
			next = out[len(out)-1].Key
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, "", fmt.Errorf("local list: value of %q: %w", it.Key(), err)
		}
		var cp []byte
		switch {
		case len(v) > slabBytes/4:
			cp = append(make([]byte, 0, len(v)), v...)
		default:
			if cap(slab)-len(slab) < len(v) {
				slab = make([]byte, 0, slabBytes)
			}
			n := len(slab)
			slab = append(slab, v...)
			cp = slab[n:len(slab):len(slab)]
		}
		size += len(v)
		out = append(out, storage.KV{Key: string(it.Key()), Value: cp})
	}
	if err := it.Close(); err != nil {
		return nil, "", fmt.Errorf("local list: %w", err)
	}
	return out, next, nil
}

// prefixIter opens an iterator over the keys with prefix (every key when
// prefix is empty).
func (s *Store) prefixIter(ctx context.Context, prefix string) (*pebble.Iterator, error) {
	io := &pebble.IterOptions{}
	if prefix != "" {
		io.LowerBound = bytesOf(prefix)
		io.UpperBound = PrefixUpperBound([]byte(prefix))
	}
	it, err := s.db.NewIterWithContext(ctx, io)
	if err != nil {
		return nil, fmt.Errorf("local list: %w", err)
	}
	return it, nil
}

// PrefixUpperBound returns the smallest key greater than every key that
// starts with prefix, or nil when there is none (prefix is empty or all
// 0xff bytes), meaning "no upper bound". It does not modify prefix.
func PrefixUpperBound(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			end := make([]byte, i+1)
			copy(end, prefix[:i+1])
			end[i]++
			return end
		}
	}
	return nil
}
