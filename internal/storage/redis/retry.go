package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

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
