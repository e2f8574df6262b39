package metrics

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Snapshot is the node's own counters at one instant, summed over their
// labels: what `p2p-agent top` turns into rates by taking two of them. It
// is read from the node's registry, so it says exactly what /metrics says.
type Snapshot struct {
	Time             time.Time `json:"time"`
	MessagesReceived float64   `json:"messages_received_total"`
	MessagesSent     float64   `json:"messages_sent_total"`
	MessageErrors    float64   `json:"message_errors_total"`
	// MessageBuckets is the cumulative count of handled messages at or
	// under each bound of MessageBuckets (all types), +Inf last.
	MessageBuckets []float64 `json:"message_duration_buckets"`
	MessageBounds  []float64 `json:"message_duration_bounds"`
	StorageOps     float64   `json:"storage_operations_total"`
	StorageErrors  float64   `json:"storage_errors_total"`
	TasksRunning   float64   `json:"tasks_running"`
	TasksQueued    float64   `json:"tasks_queued"`
	TasksTotal     float64   `json:"tasks_total"`
	CPUSeconds     float64   `json:"cpu_seconds_total"`
	ResidentBytes  float64   `json:"resident_memory_bytes"`
	PeersConnected float64   `json:"peers_connected"`
}

// TakeSnapshot gathers g and sums the families top shows.
func TakeSnapshot(g prometheus.Gatherer) (Snapshot, error) {
	fams, err := g.Gather()
	if err != nil {
		return Snapshot{}, fmt.Errorf("gather: %w", err)
	}
	s := Snapshot{Time: time.Now().UTC()}
	for _, f := range fams {
		if field, ok := summed[f.GetName()]; ok {
			*field(&s) = sum(f)
		} else if f.GetName() == "message_processing_duration_seconds" {
			s.MessageBounds, s.MessageBuckets = buckets(f)
		}
	}
	return s, nil
}

// summed names the families a Snapshot holds the sum of, and its field for
// each.
var summed = map[string]func(*Snapshot) *float64{
	"messages_received_total":         func(s *Snapshot) *float64 { return &s.MessagesReceived },
	"messages_sent_total":             func(s *Snapshot) *float64 { return &s.MessagesSent },
	"message_processing_errors_total": func(s *Snapshot) *float64 { return &s.MessageErrors },
	"storage_operations_total":        func(s *Snapshot) *float64 { return &s.StorageOps },
	"storage_operation_errors_total":  func(s *Snapshot) *float64 { return &s.StorageErrors },
	"tasks_running":                   func(s *Snapshot) *float64 { return &s.TasksRunning },
	"tasks_queued":                    func(s *Snapshot) *float64 { return &s.TasksQueued },
	"tasks_total":                     func(s *Snapshot) *float64 { return &s.TasksTotal },
	"process_cpu_seconds_total":       func(s *Snapshot) *float64 { return &s.CPUSeconds },
	"process_resident_memory_bytes":   func(s *Snapshot) *float64 { return &s.ResidentBytes },
	"agent_peers_connected":           func(s *Snapshot) *float64 { return &s.PeersConnected },
}

func sum(f *dto.MetricFamily) float64 {
	total := 0.0
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Untyped != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total
}

// buckets sums the classic buckets of a histogram family over its series.
func buckets(f *dto.MetricFamily) (bounds, counts []float64) {
	byBound := map[float64]float64{}
	total := 0.0
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		for _, b := range h.GetBucket() {
			byBound[b.GetUpperBound()] += float64(b.GetCumulativeCount())
		}
		total += float64(h.GetSampleCount())
	}
	for b := range byBound {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	for _, b := range bounds {
		counts = append(counts, byBound[b])
	}
	return bounds, append(counts, total)
}

// Rates are what happened between two snapshots, per second.
type Rates struct {
	Seconds         float64
	MessagesIn      float64
	MessagesOut     float64
	MessageErrors   float64
	StorageOps      float64
	StorageErrors   float64
	Tasks           float64
	CPU             float64 // cores busy
	MessageP99      float64 // seconds; NaN when no message was handled
	MessagesHandled float64 // in the interval
}

// Between returns the rates from a to b (b later).
func Between(a, b Snapshot) Rates {
	dt := b.Time.Sub(a.Time).Seconds()
	if dt <= 0 {
		dt = math.SmallestNonzeroFloat64
	}
	r := Rates{
		Seconds:       dt,
		MessagesIn:    (b.MessagesReceived - a.MessagesReceived) / dt,
		MessagesOut:   (b.MessagesSent - a.MessagesSent) / dt,
		MessageErrors: (b.MessageErrors - a.MessageErrors) / dt,
		StorageOps:    (b.StorageOps - a.StorageOps) / dt,
		StorageErrors: (b.StorageErrors - a.StorageErrors) / dt,
		Tasks:         (b.TasksTotal - a.TasksTotal) / dt,
		CPU:           (b.CPUSeconds - a.CPUSeconds) / dt,
		MessageP99:    math.NaN(),
	}
	if len(a.MessageBuckets) == len(b.MessageBuckets) && len(b.MessageBuckets) > 0 {
		delta := make([]float64, len(b.MessageBuckets))
		for i := range delta {
			delta[i] = b.MessageBuckets[i] - a.MessageBuckets[i]
		}
		r.MessagesHandled = delta[len(delta)-1]
		r.MessageP99 = quantile(0.99, append(slices.Clone(b.MessageBounds), math.Inf(1)), delta)
	}
	return r
}

// quantile estimates the q-quantile from cumulative bucket counts the way
// PromQL's histogram_quantile does: linear within the bucket, the lowest
// bucket starting at 0, and the highest finite bound for the +Inf bucket.
func quantile(q float64, bounds, cum []float64) float64 {
	n := len(cum)
	if n == 0 || cum[n-1] <= 0 {
		return math.NaN()
	}
	rank := q * cum[n-1]
	i := sort.Search(n, func(i int) bool { return cum[i] >= rank })
	if i == n-1 && math.IsInf(bounds[i], 1) {
		if n >= 2 {
			return bounds[n-2]
		}
		return math.NaN()
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = bounds[i-1], cum[i-1]
	}
	inBucket := cum[i] - below
	if inBucket <= 0 {
		return bounds[i]
	}
	return lo + (bounds[i]-lo)*(rank-below)/inBucket
}
