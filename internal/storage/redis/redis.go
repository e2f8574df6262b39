// Package redisstore is the shared storage backend of the node: Redis,
// standalone or Cluster, through go-redis's UniversalClient. Every key is
// stored under a key prefix so that several applications (or tests) can share
// one Redis. Transient failures are retried here, with exponential backoff,
// and then surface as errors wrapping storage.ErrUnavailable; the store keeps
// working once Redis is back. Listing by prefix reads a key index the store
// keeps beside the data, in sorted sets, so that a page costs O(log n +
// page) rather than a SCAN of the keyspace (index.go). Like every backend it
// neither validates keys (storage.Validate does; the index relies on keys
// never containing NUL) nor records metrics (storage.Instrument does).
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// Defaults applied by New to zero-valued options. Those that are also
// configuration keys (storage.redis.*) equal the key's default; the node
// passes every configured value explicitly.
const (
	DefaultKeyPrefix       = "p2p-agent:"
	DefaultMaxRetries      = 3
	DefaultRetryBackoff    = 50 * time.Millisecond
	DefaultMaxRetryBackoff = time.Second
	DefaultDialTimeout     = 5 * time.Second
	DefaultReadTimeout     = 3 * time.Second
	DefaultWriteTimeout    = 3 * time.Second
	DefaultWaitTimeout     = time.Second
)

// scanCount is the COUNT hint of the SCAN of the index backfill, and the
// number of index members List reads at a time.
const scanCount = 1000

// Options configure a Redis store. Addrs or URL names the server; everything
// else has a default.
type Options struct {
	// Addrs are host:port addresses: one means a standalone server,
	// several mean the seed nodes of a Redis Cluster.
	Addrs []string
	// URL is a redis:// or rediss:// URL of a standalone server, an
	// alternative to Addrs (user, password and database are taken from it).
	URL string
	// KeyPrefix is prepended to every key ("" means DefaultKeyPrefix).
	KeyPrefix string
	// Password authenticates the connections; it overrides one in URL.
	Password string
	// PoolSize is the number of connections per node (0: go-redis's
	// default of 10 per GOMAXPROCS).
	PoolSize int
	// DialTimeout, ReadTimeout and WriteTimeout bound each network step of
	// one attempt (0: the Default* constants).
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	// MaxRetries is how many times a failed operation is retried after
	// its first attempt (0: DefaultMaxRetries; negative: never).
	MaxRetries int
	// RetryBackoff is the pause before the first retry; it doubles for each
	// further retry up to MaxRetryBackoff (0: the defaults). The actual
	// pause is drawn from [backoff/2, backoff] to spread retrying clients.
	RetryBackoff, MaxRetryBackoff time.Duration
	// MinReplicas, when positive, makes Strong writes (Put and Delete)
	// wait with WAIT until that many replicas acknowledged them; fewer
	// acknowledgements within WaitTimeout fail the write with an error
	// wrapping storage.ErrUnavailable (the write may still have been
	// applied on the primary).
	MinReplicas int
	// WaitTimeout bounds the WAIT of Strong writes (0: DefaultWaitTimeout).
	WaitTimeout time.Duration
	// Logger receives one warning when Redis becomes unavailable and one
	// info line when it is back; go-redis's own messages go to it at debug
	// level. Nil discards them.
	Logger *slog.Logger
}

// Store is a storage.Store backed by Redis. It is safe for concurrent use.
type Store struct {
	client  redis.UniversalClient // primary: writes, Strong/RYW/Causal reads
	reader  redis.UniversalClient // Eventual reads: replicas allowed in cluster mode
	cluster *redis.ClusterClient  // non-nil in cluster mode (same as client)
	single  *redis.Client         // non-nil in standalone mode (same as client)

	prefix      string
	index       []string // index sorted sets (see index.go)
	marker      string   // set once the keys of earlier versions are indexed
	maxRetries  int
	backoff     time.Duration
	maxBackoff  time.Duration
	minReplicas int
	waitTimeout time.Duration
	log         *slog.Logger
	target      string
	perAttempt  time.Duration // pool wait + dial + write + read timeouts

	closed    atomic.Bool
	healthy   atomic.Bool
	downSince atomic.Int64 // unix nanoseconds of the first failure of an outage
}

var _ storage.Store = (*Store)(nil)

// New connects to Redis and checks it answers PING, retrying like any
// operation; the first store opened on a key prefix also adds the keys stored
// there by earlier versions to the key index (see ensureIndex). It fails with an error wrapping storage.ErrUnavailable when
// Redis cannot be reached at start (the node refuses to start on an
// unreachable backend); later outages are survived and recovered from.
func New(ctx context.Context, opts Options) (*Store, error) {
	uo, err := universalOptions(opts)
	if err != nil {
		return nil, err
	}
	setDriverLogger(opts.Logger)
	s := &Store{
		prefix:      opts.KeyPrefix,
		maxRetries:  opts.MaxRetries,
		backoff:     opts.RetryBackoff,
		maxBackoff:  opts.MaxRetryBackoff,
		minReplicas: opts.MinReplicas,
		waitTimeout: opts.WaitTimeout,
		log:         opts.Logger,
		target:      strings.Join(uo.Addrs, ","),
		perAttempt:  uo.PoolTimeout + uo.DialTimeout + uo.WriteTimeout + uo.ReadTimeout,
	}
	if s.prefix == "" {
		s.prefix = DefaultKeyPrefix
	}
	switch {
	case s.maxRetries == 0:
		s.maxRetries = DefaultMaxRetries
	case s.maxRetries < 0:
		s.maxRetries = 0
	}
	if s.backoff <= 0 {
		s.backoff = DefaultRetryBackoff
	}
	if s.maxBackoff <= 0 {
		s.maxBackoff = DefaultMaxRetryBackoff
	}
	if s.maxBackoff < s.backoff {
		s.maxBackoff = s.backoff
	}
	if s.waitTimeout <= 0 {
		s.waitTimeout = DefaultWaitTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if len(uo.Addrs) > 1 {
		s.cluster = redis.NewClusterClient(uo.Cluster())
		ro := *uo
		ro.ReadOnly, ro.RouteRandomly = true, true
		s.client, s.reader = s.cluster, redis.NewClusterClient(ro.Cluster())
	} else {
		s.single = redis.NewClient(uo.Simple())
		s.client, s.reader = s.single, s.single
	}
	s.index = indexKeys(s.prefix, s.cluster != nil)
	s.marker = s.prefix + markerSuffix + strconv.Itoa(len(s.index))
	s.healthy.Store(true)
	if err := s.ping(ctx); err != nil {
		_ = s.closeClients()
		return nil, err
	}
	if err := s.ensureIndex(ctx); err != nil {
		_ = s.closeClients()
		return nil, err
	}
	return s, nil
}

// universalOptions validates opts and translates them for go-redis, with
// go-redis's own retries turned off: this package retries, so that it alone
// decides what is worth retrying and how long an operation may take.
func universalOptions(opts Options) (*redis.UniversalOptions, error) {
	if opts.MinReplicas < 0 {
		return nil, fmt.Errorf("redis store: min_replicas %d is negative", opts.MinReplicas)
	}
	uo := &redis.UniversalOptions{}
	switch {
	case opts.URL != "" && len(opts.Addrs) > 0:
		return nil, errors.New("redis store: set either addrs or url, not both")
	case opts.URL != "":
		po, err := redis.ParseURL(opts.URL)
		if err != nil {
			return nil, fmt.Errorf("redis store: url: %w", err)
		}
		uo.Addrs = []string{po.Addr}
		uo.Username, uo.Password, uo.DB, uo.TLSConfig = po.Username, po.Password, po.DB, po.TLSConfig
	case len(opts.Addrs) > 0:
		for _, a := range opts.Addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("redis store: address %q: %w", a, err)
			}
		}
		uo.Addrs = slices.Clone(opts.Addrs)
	default:
		return nil, errors.New("redis store: no address (set addrs or url)")
	}
	if opts.Password != "" {
		uo.Password = opts.Password
	}
	uo.PoolSize = opts.PoolSize
	uo.DialTimeout = orDefault(opts.DialTimeout, DefaultDialTimeout)
	uo.ReadTimeout = orDefault(opts.ReadTimeout, DefaultReadTimeout)
	uo.WriteTimeout = orDefault(opts.WriteTimeout, DefaultWriteTimeout)
	// Waiting for a free connection is bounded like establishing one.
	uo.PoolTimeout = uo.DialTimeout
	uo.MaxRetries = -1   // no retries inside go-redis
	uo.DialerRetries = 1 // one dial per attempt
	uo.ContextTimeoutEnabled = true
	uo.ClientName = "p2p-agent"
	return uo, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Client returns the primary client, so that the node can register its pool
// statistics. It must not be closed by the caller.
func (s *Store) Client() redis.UniversalClient { return s.client }

// PoolStats returns the connection pool statistics of the primary client
// (summed over nodes in cluster mode).
func (s *Store) PoolStats() *redis.PoolStats { return s.client.PoolStats() }

// Healthy reports whether the last operation that reached a verdict found
// Redis reachable.
func (s *Store) Healthy() bool { return s.healthy.Load() }

// KeyPrefix returns the prefix under which this store keeps its keys.
func (s *Store) KeyPrefix() string { return s.prefix }

// RetryBudget is the longest time one operation can take before it fails
// with ErrUnavailable, when every attempt runs into the pool, dial, write
// and read timeouts (and the WAIT timeout for Strong writes when
// MinReplicas is set) and every pause is the longest possible. List, and
// Put and Delete in cluster mode (three steps, see index.go), make several
// round trips per attempt and may take longer.
func (s *Store) RetryBudget() time.Duration {
	per := s.perAttempt
	if s.minReplicas > 0 {
		per += s.waitTimeout
	}
	total := time.Duration(s.maxRetries+1) * per
	for i := 0; i < s.maxRetries; i++ {
		total += s.pause(i)
	}
	return total
}

// pause returns the longest backoff before retry number attempt+1.
func (s *Store) pause(attempt int) time.Duration {
	d := s.backoff
	for i := 0; i < attempt && d < s.maxBackoff; i++ {
		d *= 2
	}
	return min(d, s.maxBackoff)
}

func (s *Store) ping(ctx context.Context) error {
	return s.retry(ctx, "ping "+s.target, func() error {
		if s.cluster != nil {
			return s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
				return c.Ping(ctx).Err()
			})
		}
		return s.single.Ping(ctx).Err()
	})
}

// Get returns the value of key, or an error wrapping storage.ErrNotFound.
// Eventual reads may be served by a replica in cluster mode; every other
// level reads from the primary.
func (s *Store) Get(ctx context.Context, key string, c storage.Consistency) ([]byte, error) {
	cl := s.client
	if c == storage.Eventual {
		cl = s.reader
	}
	k := s.prefix + key
	var v string
	err := s.retry(ctx, "get", func() (err error) {
		v, err = cl.Get(ctx, k).Result()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		return nil, storage.ErrNotFound
	case err != nil:
		return nil, err
	}
	return []byte(v), nil
}

// Put stores value under key and its index entry (standalone: in one
// MULTI/EXEC; cluster: see clusterPut). A Strong write with MinReplicas set
// also waits for that many replicas to acknowledge it.
func (s *Store) Put(ctx context.Context, key string, value []byte, c storage.Consistency) error {
	k := s.prefix + key
	wait := c == storage.Strong && s.minReplicas > 0
	return s.retry(ctx, "put", func() error {
		if s.cluster != nil {
			return s.clusterPut(ctx, wait, key, value)
		}
		return s.exec(ctx, wait, k, func(cmd redis.Cmdable) error {
			_, err := cmd.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZAdd(ctx, s.index[0], redis.Z{Member: key})
				p.Set(ctx, k, value, 0)
				return nil
			})
			return err
		})
	})
}

// Delete removes key and its index entry (standalone: in one MULTI/EXEC;
// cluster: see clusterDelete); deleting a missing key succeeds.
func (s *Store) Delete(ctx context.Context, key string, c storage.Consistency) error {
	k := s.prefix + key
	wait := c == storage.Strong && s.minReplicas > 0
	return s.retry(ctx, "delete", func() error {
		if s.cluster != nil {
			return s.clusterDelete(ctx, wait, key)
		}
		return s.exec(ctx, wait, k, func(cmd redis.Cmdable) error {
			_, err := cmd.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, k)
				p.ZRem(ctx, s.index[0], key)
				return nil
			})
			return err
		})
	})
}

// exec runs one write on key k (the commands it sends must all be in k's
// slot). With wait it runs it and WAIT on one connection of k's primary.
func (s *Store) exec(ctx context.Context, wait bool, k string, write func(redis.Cmdable) error) error {
	if wait {
		return s.writeAndWait(ctx, k, func(_ context.Context, cn *redis.Conn) error { return write(cn) })
	}
	return write(s.client)
}

// retry runs attempt until it succeeds, fails for good, or the retry
// budget is spent (see retryOrFail). redis.Nil (a missing key) is a
// successful round trip and is returned as is.
func (s *Store) retry(ctx context.Context, op string, attempt func() error) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	for n := 0; ; n++ {
		err := attempt()
		if err == nil || errors.Is(err, redis.Nil) {
			s.ok()
			return err
		}
		if err := s.retryOrFail(ctx, op, n, err); err != nil {
			return err
		}
	}
}

// replicaError reports a WAIT that got fewer acknowledgements than asked.
// It wraps storage.ErrUnavailable and is not retried: WAIT already waited.
type replicaError struct {
	got, want int64
	timeout   time.Duration
}

func (e *replicaError) Error() string {
	return fmt.Sprintf("%v: %d of %d replicas acknowledged the write within %v", storage.ErrUnavailable, e.got, e.want, e.timeout)
}

func (e *replicaError) Unwrap() error { return storage.ErrUnavailable }

// writeAndWait runs write and then WAIT on one connection of the key's
// primary: WAIT counts the acknowledgements of the writes made on its own
// connection, so both must share it.
func (s *Store) writeAndWait(ctx context.Context, k string, write func(context.Context, *redis.Conn) error) error {
	node := s.single
	if s.cluster != nil {
		var err error
		if node, err = s.cluster.MasterForKey(ctx, k); err != nil {
			return err
		}
	}
	cn := node.Conn()
	defer cn.Close()
	if err := write(ctx, cn); err != nil {
		return err
	}
	n, err := cn.Wait(ctx, s.minReplicas, s.waitTimeout).Result()
	if err != nil {
		return err
	}
	if n < int64(s.minReplicas) {
		return &replicaError{got: n, want: int64(s.minReplicas), timeout: s.waitTimeout}
	}
	return nil
}

// List returns every key with the given prefix and its value, sorted by key.
// It reads the key index a thousand members at a time (see index.go) and
// fetches their values; keys deleted in between are left out.
func (s *Store) List(ctx context.Context, prefix string, _ storage.Consistency) ([]storage.KV, error) {
	var all []storage.KV
	after := ""
	for {
		var (
			kvs  []storage.KV
			next string
		)
		err := s.retry(ctx, "list", func() (err error) {
			kvs, next, err = s.listIndexed(ctx, prefix, after, scanCount, 0)
			return err
		})
		if err != nil {
			return nil, err
		}
		all = append(all, kvs...)
		if next == "" {
			return all, nil
		}
		after = next
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

// Close closes the connection pools. It is idempotent; operations after
// Close return storage.ErrClosed.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := s.closeClients(); err != nil {
		return fmt.Errorf("redis close: %w", err)
	}
	return nil
}

func (s *Store) closeClients() error {
	var errs []error
	if s.reader != s.client {
		errs = append(errs, s.reader.Close())
	}
	errs = append(errs, s.client.Close())
	return errors.Join(errs...)
}

// retryOrFail decides what follows the failed attempt number attempt (0 is
// the first): it returns nil after pausing when the operation should be
// tried again, else the error to return to the caller.
func (s *Store) retryOrFail(ctx context.Context, op string, attempt int, err error) error {
	if s.closed.Load() || errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("redis %s: %w", op, storage.ErrClosed)
	}
	var re *replicaError
	if errors.As(err, &re) {
		return fmt.Errorf("redis %s: %w", op, err)
	}
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("redis %s: %w", op, err)
		}
		s.outage(err)
		return fmt.Errorf("%w: redis %s: %w after %d attempts: %w", storage.ErrUnavailable, op, cerr, attempt+1, err)
	}
	if !Retryable(err) {
		return fmt.Errorf("redis %s: %w", op, err)
	}
	if s.cluster != nil {
		// Any retryable failure in cluster mode may mean the topology
		// changed (a master died and its replica was promoted): reload the
		// slot map so that the next attempt goes to the new master instead
		// of dialling the dead one until the next MOVED. ReloadState is
		// lazy and deduplicated inside go-redis.
		s.cluster.ReloadState(ctx)
	}
	if attempt >= s.maxRetries {
		s.outage(err)
		return fmt.Errorf("%w: redis %s failed after %d attempts: %w", storage.ErrUnavailable, op, attempt+1, err)
	}
	d := s.pause(attempt)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		s.outage(err)
		return fmt.Errorf("%w: redis %s: %w after %d attempts: %w", storage.ErrUnavailable, op, ctx.Err(), attempt+1, err)
	}
}

// Retryable reports whether err is worth another attempt: network errors
// and timeouts, a closed or reset connection, an exhausted pool, and the
// server's transient states (LOADING, CLUSTERDOWN, TRYAGAIN, MASTERDOWN,
// READONLY after a failover, MOVED/ASK during resharding). Errors of the
// request itself (WRONGTYPE, syntax, ...) are not.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		if _, ok := redis.IsMovedError(err); ok {
			return true
		}
		if _, ok := redis.IsAskError(err); ok {
			return true
		}
		if redis.IsLoadingError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
			redis.IsMasterDownError(err) || redis.IsReadOnlyError(err) || redis.IsMaxClientsError(err) {
			return true
		}
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	var nerr net.Error
	switch {
	case errors.As(err, &nerr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted),
		// A deadline inside go-redis (dial timeout) when the caller's
		// context is still live: the caller's own is checked first.
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}

// outage records a failure after retries; the first one after a healthy
// period is logged, the rest of the outage is not.
func (s *Store) outage(err error) {
	if s.healthy.CompareAndSwap(true, false) {
		s.downSince.Store(time.Now().UnixNano())
		s.log.Warn("Redis unavailable; operations fail until it is back", "addrs", s.target, "err", err)
	}
}

// ok records a successful round trip; the first one after an outage is
// logged. On the hot path it costs one atomic load.
func (s *Store) ok() {
	if !s.healthy.Load() && s.healthy.CompareAndSwap(false, true) {
		down := time.Duration(time.Now().UnixNano() - s.downSince.Load())
		s.log.Info("Redis available again", "addrs", s.target, "down_for", down.Round(time.Millisecond))
	}
}

// driverLog routes go-redis's package-wide log lines (one per failed dial,
// for instance) to the Logger of the most recent store at debug level, so
// that an outage is reported once, by the store, not once per connection.
var driverLog struct {
	once sync.Once
	l    atomic.Pointer[slog.Logger]
}

type driverLogger struct{}

func (driverLogger) Printf(ctx context.Context, format string, v ...any) {
	if l := driverLog.l.Load(); l != nil && l.Enabled(ctx, slog.LevelDebug) {
		l.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
	}
}

func setDriverLogger(l *slog.Logger) {
	if l != nil {
		driverLog.l.Store(l)
	}
	driverLog.once.Do(func() { redis.SetLogger(driverLogger{}) })
}
