package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// processReading is one observation of the process's own resource use.
type processReading struct {
	cpuSeconds float64 // user+system CPU time consumed since process start
	rssBytes   float64 // resident set size
}

// readProcessFunc reads the current process's CPU time and RSS. It is nil on
// platforms where no real value is available: the gauges are then not
// registered at all rather than reporting an invented value.
type readProcessFunc func() (processReading, error)

// Sampler keeps process_cpu_usage and process_memory_bytes current by reading
// the process's own counters every interval.
type Sampler struct {
	cpu      prometheus.Gauge
	mem      prometheus.Gauge
	interval time.Duration
	read     readProcessFunc
	log      *slog.Logger

	mu       sync.Mutex
	last     processReading
	lastTime time.Time

	stop chan struct{}
	done chan struct{}
}

// NewSampler registers the two process gauges on reg and returns a sampler
// that updates them every interval once started. On platforms without a
// process reader it registers nothing and Start is a no-op.
func NewSampler(reg prometheus.Registerer, interval time.Duration, log *slog.Logger) *Sampler {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sampler{interval: interval, read: platformProcessReader(), log: log}
	if s.read == nil {
		return s
	}
	s.cpu = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "process_cpu_usage",
		Help: "CPU used by this node process since the previous sample, in percent of one core (100 = one full core; can exceed 100 on several cores). Sampled every metrics.sample_interval.",
	})
	s.mem = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "process_memory_bytes",
		Help: "Resident set size of this node process in bytes, sampled every metrics.sample_interval.",
	})
	reg.MustRegister(s.cpu, s.mem)
	return s
}

// Start takes a first sample (so memory is known from the first scrape) and
// then samples every interval until ctx ends or Stop is called.
func (s *Sampler) Start(ctx context.Context) {
	if s.read == nil || s.stop != nil {
		return
	}
	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	s.Sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.stop:
				return
			case <-t.C:
				s.Sample()
			}
		}
	}()
}

// Stop ends sampling and waits for the sampling goroutine to exit.
func (s *Sampler) Stop() {
	if s.stop == nil {
		return
	}
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// Sample reads the process counters once and updates the gauges. CPU usage
// is the CPU time consumed between this sample and the previous one divided
// by the wall time between them; the first sample sets only memory.
func (s *Sampler) Sample() {
	if s.read == nil {
		return
	}
	r, err := s.read()
	now := time.Now()
	if err != nil {
		s.log.Debug("process sample failed", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mem.Set(r.rssBytes)
	if !s.lastTime.IsZero() {
		wall := now.Sub(s.lastTime).Seconds()
		if wall > 0 {
			pct := (r.cpuSeconds - s.last.cpuSeconds) / wall * 100
			if pct < 0 {
				pct = 0
			}
			s.cpu.Set(pct)
		}
	}
	s.last, s.lastTime = r, now
}
