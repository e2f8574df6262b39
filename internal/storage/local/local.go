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
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

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
	// MinFreeBytes is the free-space reserve: a Put that would leave less
	// than this many bytes available on the store's filesystem is refused
	// with an error wrapping storage.ErrInsufficientStorage. Deletes are
	// always admitted, and Pebble's flushes and compactions (which turn
	// deletes into free space) run in the reserve, half of which (at
	// most 32 MiB, see BallastBytes) is held in a ballast file. 0
	// disables the check and the ballast.
	MinFreeBytes int64
	// BallastBytes is the size of the ballast file (BallastName) kept in
	// the store directory as part of the reserve and deleted when Pebble
	// meets a full disk anyway; 0 means half of MinFreeBytes, at most
	// 32 MiB; negative means none. There is none when MinFreeBytes is 0.
	BallastBytes int64
	// FreeBytes measures the bytes available on the filesystem of a path;
	// nil means StatfsFree. Tests inject a fake.
	FreeBytes func(path string) (int64, error)
	// FreeCheckInterval is how long one measurement of free space is
	// trusted (writes admitted since are subtracted from it); 0 means
	// DefaultFreeCheckInterval.
	FreeCheckInterval time.Duration
	// CloseTimeout bounds Close; 0 means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// LogInterval is the least time between two identical error lines
	// (refused writes, Pebble background errors); 0 means
	// DefaultLogInterval.
	LogInterval time.Duration
	// Now is the clock of the free-space cache and the log rate limit;
	// nil means time.Now.
	Now func() time.Time
}

// Defaults of Options.
const (
	DefaultFreeCheckInterval = 100 * time.Millisecond
	DefaultCloseTimeout      = 5 * time.Second
	DefaultLogInterval       = 10 * time.Second
)

// BallastName is the file in the store directory that holds half the
// free-space reserve (at most maxBallastBytes), freed when Pebble meets a
// full disk anyway; see reserve.
const BallastName = "BALLAST"

const maxBallastBytes = 32 << 20

// reclaimPause lets a burst of deletes land before the store compacts;
// reclaimSpacing is the least time between two such compactions.
const (
	reclaimPause   = 200 * time.Millisecond
	reclaimSpacing = 5 * time.Second
)

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

	res          *reserve
	log          *rateLog
	closeTimeout time.Duration
	// failed holds the error of a write Pebble could not complete (its
	// commit pipeline is unusable after one): every later write returns
	// it, reads go on.
	failed atomic.Pointer[error]

	reclaim   chan struct{} // a delete while writes are refused asks for a compaction
	bgCancel  context.CancelFunc
	bgDone    chan struct{}
	closeOnce sync.Once
	closeErr  chan error
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
	if opts.FreeBytes == nil {
		opts.FreeBytes = StatfsFree
	}
	if opts.FreeCheckInterval <= 0 {
		opts.FreeCheckInterval = DefaultFreeCheckInterval
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = DefaultCloseTimeout
	}
	if opts.LogInterval <= 0 {
		opts.LogInterval = DefaultLogInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	rl := newRateLog(opts.Logger, opts.LogInterval, opts.Now)
	res := &reserve{min: opts.MinFreeBytes, interval: opts.FreeCheckInterval, path: path,
		free: opts.FreeBytes, now: opts.Now, log: rl}
	if opts.BallastBytes == 0 {
		opts.BallastBytes = min(opts.MinFreeBytes/2, maxBallastBytes)
	}
	if opts.MinFreeBytes > 0 && opts.BallastBytes > 0 {
		res.ballast = filepath.Join(path, BallastName)
		res.ballastSize = opts.BallastBytes
	}
	po := &pebble.Options{
		Logger:             pebbleLogger{l: opts.Logger, rl: rl},
		MemTableSize:       opts.MemTableBytes,
		FormatMajorVersion: pebble.FormatNewest,
		FS:                 vfs.OnDiskFull(vfs.Default, res.onDiskFull),
		EventListener: &pebble.EventListener{
			// Pebble retries a failed flush or compaction at once and
			// reports every attempt here: on a full disk that is a
			// stream of identical errors, logged once per interval.
			BackgroundError: func(err error) {
				rl.Error("background:"+errClass(err), "local store: background flush or compaction failed; retrying",
					"component", "pebble", "err", err)
			},
		},
	}
	if opts.CacheBytes > 0 {
		c := pebble.NewCache(opts.CacheBytes)
		defer c.Unref() // Pebble holds its own reference while open.
		po.Cache = c
	}
	db, err := openPebble(path, po)
	if err != nil {
		return nil, fmt.Errorf("local store: open %s: %w", path, err)
	}
	// The ballast is touched only once Pebble holds the directory's lock.
	res.openBallast(path, opts.MinFreeBytes)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		db:           db,
		path:         path,
		res:          res,
		log:          rl,
		closeTimeout: opts.CloseTimeout,
		reclaim:      make(chan struct{}, 1),
		bgCancel:     cancel,
		bgDone:       make(chan struct{}),
		closeErr:     make(chan error, 1),
	}
	go s.reclaimLoop(ctx)
	return s, nil
}

// openPebble opens the database, turning a Fatalf during recovery (a WAL
// replay that cannot write its flush, say) into an error.
func openPebble(path string, po *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, asFatal(r).err()
		}
	}()
	return pebble.Open(path, po)
}

// errClass is the rate-limit key of an error: all out-of-space errors are
// one class whatever file they name.
func errClass(err error) string {
	if vfs.IsNoSpaceError(err) {
		return "ENOSPC"
	}
	return err.Error()
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
	if err := s.res.admit(int64(len(key) + len(value))); err != nil {
		s.log.Warn("refused", "local store: write refused, free space under the reserve", "err", err)
		return err
	}
	return s.write("put", func() error { return s.db.Set(bytesOf(key), value, writeOptions(c)) })
}

// write runs one Pebble write. Pebble treats a failed write to its log as
// fatal (it panics with the error, or calls Logger.Fatalf, which panics
// with a fatalError, see pebbleLogger): the panic is recovered here into
// an error, and since Pebble's commit
// pipeline cannot be used after it, the store refuses every later write
// with the same error until it is reopened. Reads go on.
func (s *Store) write(op string, f func() error) (err error) {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	defer func() {
		if r := recover(); r != nil {
			err = s.fail(op, asFatal(r))
		}
	}()
	if err := f(); err != nil {
		if vfs.IsNoSpaceError(err) {
			return fmt.Errorf("local %s: %w: %w", op, storage.ErrInsufficientStorage, err)
		}
		return fmt.Errorf("local %s: %w", op, err)
	}
	return nil
}

// fail records the first fatal write error and returns the error every
// later write gets.
func (s *Store) fail(op string, fe fatalError) error {
	class := storage.ErrUnavailable
	if fe.noSpace {
		class = storage.ErrInsufficientStorage
	}
	err := fmt.Errorf("local %s: %w: the store could not write its log (%s) and refuses writes until the node is restarted", op, class, fe.msg)
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error("fatal", "local store: write failed; the store is read-only until restart", "err", err)
	}
	return *s.failed.Load()
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
	if err := s.write("delete", func() error { return s.db.Delete(bytesOf(key), writeOptions(c)) }); err != nil {
		return err
	}
	if s.res.low() {
		// Writes are being refused: a delete only frees space once the
		// memtable is flushed and the deleted values are compacted away.
		select {
		case s.reclaim <- struct{}{}:
		default:
		}
	}
	return nil
}

// reclaimLoop flushes and compacts the whole key space when asked (a
// delete while writes are refused), reclaimPause after the request and at
// most once per reclaimSpacing, until ctx is done. The flush and compaction run in the reserve.
func (s *Store) reclaimLoop(ctx context.Context) {
	defer close(s.bgDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reclaim:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(reclaimPause):
		}
		s.compactAll(ctx)
		// A compaction of the whole key space rewrites a lot: deletes
		// arriving meanwhile wait for the next one.
		select {
		case <-ctx.Done():
			return
		case <-time.After(reclaimSpacing):
		}
	}
}

func (s *Store) compactAll(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			_ = s.fail("compact", asFatal(r))
		}
	}()
	if s.failed.Load() != nil {
		return
	}
	if err := s.db.Flush(); err != nil {
		s.log.Error("reclaim:"+errClass(err), "local store: flush to reclaim space failed", "err", err)
		return
	}
	// Keys are UTF-8 without NUL: every key lies in [0x00, 0xff).
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil && ctx.Err() == nil {
		s.log.Error("reclaim:"+errClass(err), "local store: compaction to reclaim space failed", "err", err)
	}
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

// Close stops the background compaction, waits for in-flight operations,
// syncs the write-ahead log (so Eventual writes acknowledged before are on
// disk) and closes the database. A failed sync or close, or a store left
// read-only by a failed write, is returned: the caller must not report a
// clean stop. Close gives up after Options.CloseTimeout (a write stuck on
// a full disk) with an error. It is idempotent; operations after Close
// return storage.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		go func() { s.closeErr <- s.close() }()
	})
	select {
	case err := <-s.closeErr:
		s.closeErr <- nil // later calls return at once, with nil
		return err
	case <-time.After(s.closeTimeout):
		return fmt.Errorf("local close: %w: not finished after %s; writes not yet synced may be lost", storage.ErrUnavailable, s.closeTimeout)
	}
}

func (s *Store) close() (err error) {
	s.bgCancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	<-s.bgDone
	defer func() {
		if r := recover(); r != nil {
			err = errors.Join(err, fmt.Errorf("local close: %w", asFatal(r).err()))
		}
	}()
	var errs []error
	if p := s.failed.Load(); p != nil {
		errs = append(errs, fmt.Errorf("local close: %w", *p))
	} else if err := s.db.LogData(nil, pebble.Sync); err != nil {
		errs = append(errs, fmt.Errorf("local close: sync log: %w", err))
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("local close: %w", err))
	}
	return errors.Join(errs...)
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
// debug level, errors at error level (identical ones once per interval), so
// a healthy node stays quiet and a full disk does not flood the log.
type pebbleLogger struct {
	l  *slog.Logger
	rl *rateLog
}

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l != nil && p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l == nil {
		return
	}
	key := "pebble:" + format
	if noSpace(args) {
		key += ":ENOSPC"
	}
	p.rl.Error(key, fmt.Sprintf(format, args...), "component", "pebble")
}

// fatalError is what pebbleLogger.Fatalf panics with. The store's write
// path and Close recover it into an error; anywhere else (a background
// flush that cannot write its MANIFEST) it ends the process, after the
// error line.
type fatalError struct {
	msg     string
	noSpace bool
}

func (fe fatalError) err() error {
	if fe.noSpace {
		return fmt.Errorf("%w: pebble: %s", storage.ErrInsufficientStorage, fe.msg)
	}
	return fmt.Errorf("%w: pebble: %s", storage.ErrUnavailable, fe.msg)
}

// asFatal converts what a Pebble call panicked with into a fatalError:
// Pebble's Fatalf (see pebbleLogger) panics with one, and Pebble itself
// panics with the error of a write to its log that failed at once (db.go,
// commitWrite). Any other panic is a bug and goes on panicking.
func asFatal(r any) fatalError {
	switch v := r.(type) {
	case fatalError:
		return v
	case error:
		return fatalError{msg: v.Error(), noSpace: vfs.IsNoSpaceError(v)}
	}
	panic(r)
}

// Fatalf is called by Pebble on errors it cannot continue from (a failed
// write to its log or MANIFEST, on-disk corruption); it must not return.
// It logs the error and panics with a fatalError.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.l != nil {
		p.l.Error(msg, "component", "pebble", "fatal", true)
	}
	panic(fatalError{msg: msg, noSpace: noSpace(args) || strings.Contains(msg, "no space left on device")})
}

// noSpace reports whether one of args is an out-of-space error.
func noSpace(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && vfs.IsNoSpaceError(err) {
			return true
		}
	}
	return false
}
