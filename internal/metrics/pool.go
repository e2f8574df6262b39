package metrics

import "github.com/prometheus/client_golang/prometheus"

// PoolStats is a snapshot of a connection pool (the Redis backend's).
type PoolStats struct {
	Hits, Misses, Timeouts uint64
	TotalConns, IdleConns  uint64
	StaleConns             uint64
}

// poolCollector reads pool statistics at scrape time.
type poolCollector struct {
	read                          func() PoolStats
	hits, misses, timeouts, stale *prometheus.Desc
	total, idle                   *prometheus.Desc
}

// RegisterRedisPool registers the Redis connection-pool statistics, read from
// read at every scrape, as storage_redis_pool_* series.
func RegisterRedisPool(reg prometheus.Registerer, read func() PoolStats) {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("storage_redis_pool_"+name, help, nil, nil)
	}
	reg.MustRegister(&poolCollector{
		read:     read,
		hits:     d("hits_total", "Times a free connection was found in the Redis pool."),
		misses:   d("misses_total", "Times no free connection was found in the Redis pool and one was dialled."),
		timeouts: d("timeouts_total", "Times waiting for a Redis pool connection timed out."),
		stale:    d("stale_connections_removed_total", "Stale Redis connections removed from the pool."),
		total:    d("connections", "Connections currently in the Redis pool."),
		idle:     d("idle_connections", "Idle connections currently in the Redis pool."),
	})
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.hits, c.misses, c.timeouts, c.stale, c.total, c.idle} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(c.timeouts, prometheus.CounterValue, float64(s.Timeouts))
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.CounterValue, float64(s.StaleConns))
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(s.TotalConns))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.IdleConns))
}
