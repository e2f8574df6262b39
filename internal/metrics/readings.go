package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Last returns the latest CPU percent (100 = one core) and resident set
// size sampled; zeros before the first sample or where the platform has
// no process reader.
func (s *Sampler) Last() (cpuPercent, rssBytes float64) {
	if s == nil || s.cpu == nil {
		return 0, 0
	}
	return metricValue(s.cpu), metricValue(s.mem)
}

// ReceivedTotal is the number of messages received so far, all types.
func (m *Messages) ReceivedTotal() float64 {
	sum := m.unknown.Received.Value()
	for _, t := range m.byType {
		sum += t.Received.Value()
	}
	return float64(sum)
}

// RunningNow is the current value of tasks_running.
func (t *Tasks) RunningNow() float64 { return metricValue(t.Running) }

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}
