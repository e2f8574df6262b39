package node

import (
	"cmp"
	"context"
	"fmt"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
)

// openStore opens the configured backend and wraps it once: validation
// first, then the instrumenting decorator, so every operation of every
// backend is measured, rejected ones included.
func (n *Node) openStore(ctx context.Context) error {
	cfg := n.cfg
	var backend storage.Store
	switch cfg.Storage.Backend {
	case config.BackendRedis:
		r := cfg.Storage.Redis
		rs, err := redisstore.New(ctx, redisstore.Options{
			Addrs:        r.Addrs,
			URL:          r.URL,
			KeyPrefix:    r.KeyPrefix,
			Password:     r.Password,
			PoolSize:     r.PoolSize,
			DialTimeout:  r.DialTimeout,
			ReadTimeout:  r.ReadTimeout,
			WriteTimeout: r.WriteTimeout,
			MaxRetries:   cmp.Or(r.MaxRetries, -1), // 0 in the config: no retries
			RetryBackoff: r.RetryBackoff,
			MinReplicas:  r.MinReplicas,
			Logger:       n.log,
		})
		if err != nil {
			return fmt.Errorf("opening redis storage: %w", err)
		}
		metrics.RegisterRedisPool(n.reg, func() metrics.PoolStats {
			s := rs.Client().PoolStats()
			return metrics.PoolStats{
				Hits: uint64(s.Hits), Misses: uint64(s.Misses), Timeouts: uint64(s.Timeouts),
				TotalConns: uint64(s.TotalConns), IdleConns: uint64(s.IdleConns), StaleConns: uint64(s.StaleConns),
			}
		})
		backend = rs
	default:
		if err := n.dir.willCreate(cfg.StorePath()); err != nil {
			return fmt.Errorf("opening local storage at %s: %w", cfg.StorePath(), err)
		}
		ls, err := local.Open(cfg.StorePath(), local.Options{
			Logger:       n.log,
			MinFreeBytes: int64(cfg.Storage.Local.MinFreeBytes),
		})
		if err != nil {
			return fmt.Errorf("opening local storage at %s: %w", cfg.StorePath(), err)
		}
		backend = ls
	}
	n.backend = cfg.Storage.Backend
	n.store = storage.InstrumentTraced(storage.Validate(backend, cfg.Storage.MaxValueBytes), metrics.NewStorage(n.reg, config.Backends()), n.backend, n.tracing)
	return nil
}
