// Package redisstore is the shared storage backend of the node: Redis,
// standalone or Cluster, through go-redis's UniversalClient. Every key is
// stored under a key prefix so that several applications (or tests) can share
// one Redis. go-redis retries transient failures, with exponential backoff
// (retry.go); what still fails surfaces as errors wrapping
// storage.ErrUnavailable, and the store keeps working once Redis is back.
// Listing by prefix reads a key index the store keeps beside the data, in
// sorted sets, so that a page costs O(log n + page) rather than a SCAN of
// the keyspace (index.go). Like every backend it
// neither validates keys (storage.Validate does; the index relies on keys
// never containing NUL) nor records metrics (storage.Instrument does).
package redisstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
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
	// MaxRetries is how many times go-redis retries a failed command after
	// its first attempt (0: DefaultMaxRetries; negative: never). In a
	// cluster, redirects (MOVED, ASK) count as retries.
	MaxRetries int
	// RetryBackoff and MaxRetryBackoff bound go-redis's pauses between
	// attempts (0: the defaults): before retry k (k ≥ 1) it pauses for a
	// random time in [RetryBackoff, RetryBackoff·(1+2^k)), at most
	// MaxRetryBackoff, which spreads retrying clients.
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
	perAttempt  time.Duration // pool wait + dial + round trips (see RetryBudget)

	closed    atomic.Bool
	healthy   atomic.Bool
	downSince atomic.Int64 // unix nanoseconds of the first failure of an outage
}

var _ storage.Store = (*Store)(nil)

// New connects to Redis and checks it answers PING (standalone: with
// go-redis's retries; cluster: every master once, after the slot map was read
// from any seed); the first store opened on a key prefix also adds the keys
// stored there by earlier versions to the key index (see ensureIndex). It
// fails with an error wrapping storage.ErrUnavailable when Redis cannot be
// reached at start (the node refuses to start on an unreachable backend);
// later outages are survived and recovered from.
func New(ctx context.Context, opts Options) (*Store, error) {
	switch {
	case opts.MaxRetries == 0:
		opts.MaxRetries = DefaultMaxRetries
	case opts.MaxRetries < 0:
		opts.MaxRetries = 0
	}
	opts.RetryBackoff = orDefault(opts.RetryBackoff, DefaultRetryBackoff)
	opts.MaxRetryBackoff = max(orDefault(opts.MaxRetryBackoff, DefaultMaxRetryBackoff), opts.RetryBackoff)
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
		waitTimeout: orDefault(opts.WaitTimeout, DefaultWaitTimeout),
		log:         opts.Logger,
		target:      strings.Join(uo.Addrs, ","),
		perAttempt:  uo.PoolTimeout + uo.DialTimeout + (1+handshakeTrips)*(uo.WriteTimeout+uo.ReadTimeout),
	}
	if s.prefix == "" {
		s.prefix = DefaultKeyPrefix
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if len(uo.Addrs) > 1 {
		s.cluster = newCluster(uo, opts.MaxRetries, false)
		s.client, s.reader = s.cluster, newCluster(uo, opts.MaxRetries, true)
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

// universalOptions validates opts and translates them for go-redis; retries
// and backoff are go-redis's (see retry.go).
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
	uo.MaxRetries = cmp.Or(opts.MaxRetries, -1) // go-redis: -1 is none, 0 its default
	uo.MinRetryBackoff, uo.MaxRetryBackoff = opts.RetryBackoff, opts.MaxRetryBackoff
	uo.DialerRetries = 1 // one dial per attempt: MaxRetries alone counts attempts
	// Pipelines and MULTI/EXEC share the one pool: PoolSize bounds every
	// connection, the pool statistics see them all, and a failed attempt
	// dials once (go-redis's dedicated pipeline pool would dial, then spill
	// to the main pool and dial again).
	uo.PipelinePoolSize = -1
	uo.ContextTimeoutEnabled = true
	uo.ClientName = "p2p-agent"
	return uo, nil
}

// newCluster returns a cluster client whose own loop has the whole retry
// budget (MaxRedirects, spent on redirects and retries alike) and whose node
// clients do not retry (MaxRetries -1), so that attempts do not multiply;
// reloadOnFailure follows failovers. The read-only one serves Eventual reads
// from masters and replicas at random.
func newCluster(uo *redis.UniversalOptions, retries int, readOnly bool) *redis.ClusterClient {
	co := uo.Cluster()
	co.MaxRedirects = cmp.Or(retries, -1) // go-redis: -1 is none, 0 its default
	co.MaxRetries = -1
	co.ReadOnly, co.RouteRandomly = readOnly, readOnly
	cc := redis.NewClusterClient(co)
	reloadOnFailure(cc)
	return cc
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

func (s *Store) ping(ctx context.Context) error {
	return s.call(ctx, "ping "+s.target, func() error {
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
	err := s.call(ctx, "get", func() (err error) {
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
	return s.call(ctx, "put", func() error {
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
	return s.call(ctx, "delete", func() error {
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
// connection, so both must share it. go-redis retries a failed dial for that
// connection, and errors the server returns on it (LOADING, ...), but once
// the connection broke it is not replaced (the WAIT would then count
// nothing) and the write fails; in a cluster the node clients do not retry
// (see newCluster), so the write is tried once.
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
		err := s.call(ctx, "list", func() (err error) {
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
