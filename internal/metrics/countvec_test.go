package metrics

import (
	"bytes"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCountVecCountsObservations: every observation, in the native array or
// on the slow path (out of range, zero, NaN), is one in the counter, and the
// family's exposition is that of a client_golang CounterVec with the same
// values.
func TestCountVecCountsObservations(t *testing.T) {
	opts := prometheus.CounterOpts{Name: "storage_operations_total", Help: "Operations."}
	for _, native := range []bool{true, false} {
		hopts := durationOpts("storage_operation_duration_seconds", "Durations.", StorageBuckets)
		if !native {
			hopts.NativeHistogramBucketFactor = 0
		}
		h := NewHistogramVec(hopts, []string{"operation", "backend"})
		ours := NewCountVec(opts, h)
		theirs := prometheus.NewCounterVec(opts, []string{"operation", "backend"})
		for op, vs := range map[string][]float64{
			"get":    {0, 1e-6, 3e-5, 0.5, 1e9, 1e-15, math.NaN()},
			"put":    {2e-4, 2e-4, 2e-4},
			"delete": nil,
		} {
			h.WithLabelValues(op, "local")
			theirs.WithLabelValues(op, "local")
			for _, v := range vs {
				h.WithLabelValues(op, "local").Observe(v)
				theirs.WithLabelValues(op, "local").Inc()
			}
			if got := testutil.ToFloat64(ours.WithLabelValues(op, "local")); got != float64(len(vs)) {
				t.Errorf("native %v: %s count %v, want %d", native, op, got, len(vs))
			}
		}
		if a, b := text(t, gather(t, ours)), text(t, gather(t, theirs)); !bytes.Equal(a, b) {
			t.Errorf("native %v: exposition\n%s\nwant\n%s", native, a, b)
		}
	}
}
