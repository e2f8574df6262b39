package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// Retries are go-redis's own. Standalone, a command (or a pipeline, or a
// MULTI/EXEC) is tried at most MaxRetries+1 times, with the errors go-redis
// deems retryable (network errors and timeouts, an exhausted pool, LOADING,
// READONLY, CLUSTERDOWN, TRYAGAIN, MASTERDOWN, ...), and before retry k
// (k ≥ 1) go-redis pauses for a time drawn from [RetryBackoff,
// RetryBackoff·(1+2^k)), at most MaxRetryBackoff. In a cluster the same
// budget is the cluster client's (ClusterOptions.MaxRedirects), which also
// spends it on MOVED and ASK redirects (without pausing), and the node
// clients it calls do not retry, so that retries do not nest: again at most
// MaxRetries+1 attempts. Each new connection dials once (DialerRetries 1).
// This file keeps what go-redis does not do: the verdict on the final error
// (ErrUnavailable or not), the once-per-outage log and, in a cluster, a slot
// map reload as soon as a node fails (see reloadOnFailure).

// handshakeTrips is the number of round trips go-redis makes to set up a new
// connection before the first command: HELLO, the CLIENT SETNAME/SETINFO
// pipeline, CLIENT MAINT_NOTIFICATIONS.
const handshakeTrips = 3

// RetryBudget is the longest time one command can take before it fails with
// ErrUnavailable: each of its MaxRetries+1 attempts waits for a pooled
// connection (pool timeout), dials (dial timeout), sets the connection up
// and sends the command (write and read timeouts for each round trip, and the
// WAIT timeout for Strong writes when MinReplicas is set), and every pause is
// the longest go-redis may draw. Standalone Put and Delete are one command
// (a MULTI/EXEC); Get is one; List, and Put and Delete in cluster mode (three
// steps, see index.go), send several commands one after the other, each with
// this budget. In a cluster the bound holds once the client knows the slot
// map.
func (s *Store) RetryBudget() time.Duration {
	per := s.perAttempt
	if s.minReplicas > 0 {
		per += s.waitTimeout
	}
	total := time.Duration(s.maxRetries+1) * per
	for k := 1; k <= s.maxRetries; k++ {
		total += s.longestPause(k)
	}
	return total
}

// longestPause bounds the pause go-redis makes before retry k (k ≥ 1):
// RetryBackoff plus a random duration below RetryBackoff<<k, at most
// MaxRetryBackoff.
func (s *Store) longestPause(k int) time.Duration {
	span := s.backoff << k
	if span < s.backoff || s.backoff+span < s.backoff {
		return s.maxBackoff // overflow: go-redis returns the maximum too
	}
	return min(s.backoff+span, s.maxBackoff)
}

// call runs one operation, whose commands go-redis retries, and turns its
// final error into the store's: redis.Nil (a missing key) is a successful
// round trip and is returned as is; see fail for the others.
func (s *Store) call(ctx context.Context, op string, run func() error) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		// Expired before anything was sent: not Redis's fault.
		return fmt.Errorf("redis %s: %w", op, err)
	}
	err := run()
	if err == nil || errors.Is(err, redis.Nil) {
		s.ok()
		return err
	}
	return s.fail(op, err)
}

// fail maps the final error of op: a closed store or client gives
// ErrClosed; too few WAIT acknowledgements (replicaError, never retried) and
// a cancelled context are returned as they are, as are errors of the request
// itself (WRONGTYPE, syntax, ...); what says Redis could not serve the
// request, including the caller's deadline expiring while go-redis was still
// trying, wraps ErrUnavailable and counts towards an outage.
func (s *Store) fail(op string, err error) error {
	var re *replicaError
	switch {
	case s.closed.Load() || errors.Is(err, redis.ErrClosed):
		return fmt.Errorf("redis %s: %w", op, storage.ErrClosed)
	case errors.As(err, &re), errors.Is(err, context.Canceled), !Unavailable(err):
		return fmt.Errorf("redis %s: %w", op, err)
	}
	s.outage(err)
	return fmt.Errorf("%w: redis %s failed: %w", storage.ErrUnavailable, op, err)
}

// Unavailable reports whether err, the final error of a command after
// go-redis's retries, means Redis could not serve it: network errors and
// timeouts (an expired deadline included), a closed or reset connection, an
// exhausted pool, and the server's transient states (LOADING, CLUSTERDOWN,
// TRYAGAIN, MASTERDOWN, READONLY after a failover, too many clients).
// Errors of the request itself (WRONGTYPE, syntax, NOAUTH, ...) are not.
func Unavailable(err error) bool {
	var nerr net.Error // also syscall.Errno and context.DeadlineExceeded
	return err != nil && (errors.As(err, &nerr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) ||
		redis.IsLoadingError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsMasterDownError(err) || redis.IsReadOnlyError(err) || redis.IsMaxClientsError(err))
}

// reloadOnFailure makes a cluster client reload its slot map whenever one of
// its nodes fails a command or pipeline with an error that says the node is
// unavailable (Unavailable): after a master dies and its replica is promoted,
// go-redis would otherwise keep dialling the dead master until a MOVED or the
// periodic reload. It reloads on MOVED and READONLY itself. ReloadState is
// lazy and deduplicated (at most one reload per 200 ms), and the cluster
// client picks the node again for its later attempts, so those reach the
// promoted replica.
func reloadOnFailure(cc *redis.ClusterClient) {
	h := reloadHook{cc}
	cc.OnNewNode(func(node *redis.Client) { node.AddHook(h) })
}

type reloadHook struct{ cc *redis.ClusterClient }

func (h reloadHook) check(ctx context.Context, err error) {
	if err != nil && !errors.Is(err, redis.Nil) && Unavailable(err) {
		h.cc.ReloadState(ctx)
	}
}

func (reloadHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(ctx, err)
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.check(ctx, err)
		return err
	}
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
