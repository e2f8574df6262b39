// Package local is the embedded storage backend of the node: a Pebble
// database in <data_dir>/store. It implements storage.Store without checking
// keys or values (storage.Validate does that once for every backend) and
// without recording metrics (storage.Instrument does that).
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// Options tune the local store. The zero value is ready to use.
type Options struct {
	// Logger receives Pebble's own log lines at debug level (errors at
	// error level). Nil discards them.
	Logger *slog.Logger
	// CacheBytes is the size of Pebble's block cache; 0 keeps Pebble's
	// default (8 MiB).
	CacheBytes int64
	// MemTableBytes is the size of one memtable; 0 keeps Pebble's default
	// (4 MiB).
	MemTableBytes uint64
}

// Store is a storage.Store backed by Pebble. It is safe for concurrent use.
// Strong, ReadYourWrites and Causal writes are synced to the write-ahead log
// on disk before they return; Eventual writes return once they are in the
// log buffer and the memtable (they survive a process crash only if the OS
// flushed them). Pebble's commit pipeline groups concurrent synced writes
// into one fsync, so many concurrent Strong writers share the cost of a sync.
type Store struct {
	// mu is held for reading by every operation and for writing by Close,
	// so Close waits for in-flight operations and nothing touches the
	// database after it is closed.
	mu     sync.RWMutex
	db     *pebble.DB
	closed bool
	path   string
}

var _ storage.Store = (*Store)(nil)

// Open opens (creating it if needed) the Pebble database in directory path.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("local store: empty path")
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("local store: create %s: %w", path, err)
	}
	po := &pebble.Options{
		Logger:             pebbleLogger{l: opts.Logger},
		MemTableSize:       opts.MemTableBytes,
		FormatMajorVersion: pebble.FormatNewest,
	}
	if opts.CacheBytes > 0 {
		c := pebble.NewCache(opts.CacheBytes)
		defer c.Unref() // Pebble holds its own reference while open.
		po.Cache = c
	}
	db, err := pebble.Open(path, po)
	if err != nil {
		return nil, fmt.Errorf("local store: open %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path returns the directory of the database.
func (s *Store) Path() string { return s.path }

// DB returns the underlying Pebble database, for benchmarks that compare the
// store with raw Pebble. Callers must not use it after Close.
func (s *Store) DB() *pebble.DB { return s.db }

// writeOptions maps a consistency level to Pebble's durability.
func writeOptions(c storage.Consistency) *pebble.WriteOptions {
	if c.Durable() {
		return pebble.Sync
	}
	return pebble.NoSync
}

// bytesOf views a string as a byte slice without copying. Pebble never
// modifies the keys and bounds it is given, and copies keys it retains
// (into batches and memtables), so the view is safe and saves one
// allocation per operation.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// Get returns a copy of the value of key, or an error wrapping
// storage.ErrNotFound. Every consistency level reads the latest committed
// value: there is a single copy of the data.
func (s *Store) Get(ctx context.Context, key string, _ storage.Consistency) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, storage.ErrClosed
	}
	v, closer, err := s.db.Get(bytesOf(key))
	if err != nil {
		if errors.Is(err, pebble.ErrNotFound) {
			return nil, storage.ErrNotFound
		}
		return nil, fmt.Errorf("local get: %w", err)
	}
	out := make([]byte, len(v))
	copy(out, v)
	if err := closer.Close(); err != nil {
		return nil, fmt.Errorf("local get: release: %w", err)
	}
	return out, nil
}

// Put stores value under key; durable levels sync before returning.
func (s *Store) Put(ctx context.Context, key string, value []byte, c storage.Consistency) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
	}
	if err := s.db.Set(bytesOf(key), value, writeOptions(c)); err != nil {
		return fmt.Errorf("local put: %w", err)
	}
	return nil
}

// Delete removes key; deleting a missing key succeeds.
func (s *Store) Delete(ctx context.Context, key string, c storage.Consistency) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
	}
	if err := s.db.Delete(bytesOf(key), writeOptions(c)); err != nil {
		return fmt.Errorf("local delete: %w", err)
	}
	return nil
}

// List returns every key starting with prefix, in ascending byte order,
// with copies of their values. It reads a consistent snapshot (the
// iterator's implicit one) and stops early when ctx is done.
func (s *Store) List(ctx context.Context, prefix string, _ storage.Consistency) ([]storage.KV, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, storage.ErrClosed
	}
	io := &pebble.IterOptions{}
	if prefix != "" {
		io.LowerBound = bytesOf(prefix)
		io.UpperBound = PrefixUpperBound([]byte(prefix))
	}
	it, err := s.db.NewIterWithContext(ctx, io)
	if err != nil {
		return nil, fmt.Errorf("local list: %w", err)
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
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		return nil, "", fmt.Errorf("local list: %w: limit %d", storage.ErrInvalidPage, limit)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, "", storage.ErrClosed
	}
	io := &pebble.IterOptions{}
	if prefix != "" {
		io.LowerBound = bytesOf(prefix)
		io.UpperBound = PrefixUpperBound([]byte(prefix))
	}
	it, err := s.db.NewIterWithContext(ctx, io)
	if err != nil {
		return nil, "", fmt.Errorf("local list: %w", err)
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

// Close flushes nothing extra (synced writes are already durable), waits for
// in-flight operations and closes the database. It is idempotent; operations
// after Close return storage.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("local close: %w", err)
	}
	return nil
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

// pebbleLogger routes Pebble's log lines to slog: informational lines at
// debug level, errors at error level, so a healthy node stays quiet.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l != nil && p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l != nil {
		p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

// Fatalf is called by Pebble on unrecoverable internal errors (for example
// on-disk corruption); it must not return.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.l != nil {
		p.l.Error(msg, "component", "pebble", "fatal", true)
	}
	panic("pebble: " + msg)
}
