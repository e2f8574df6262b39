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

// enter starts one operation: it checks ctx, then takes the read side of
// s.mu (Close waits for the operations under way) and refuses a closed
// store. The caller defers release.
func (s *Store) enter(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, storage.ErrClosed
	}
	return s.mu.RUnlock, nil
}

// Get returns a copy of the value of key, or an error wrapping
// storage.ErrNotFound. Every consistency level reads the latest committed
// value: there is a single copy of the data.
func (s *Store) Get(ctx context.Context, key string, _ storage.Consistency) ([]byte, error) {
	release, err := s.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
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
	release, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer release()
	if err := s.res.admit(int64(len(key) + len(value))); err != nil {
		s.log.Warn("refused", "local store: write refused, free space under the reserve", "err", err)
		return err
	}
	return s.write("put", func() error { return s.db.Set(bytesOf(key), value, writeOptions(c)) })
}

// Delete removes key; deleting a missing key succeeds.
func (s *Store) Delete(ctx context.Context, key string, c storage.Consistency) error {
	release, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer release()
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
