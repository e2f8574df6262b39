package task

import "github.com/p2p-ai-agents/p2p-agent/internal/metrics"

// Outcomes of an execution, the outcome label of tasks_total.
const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
	outcomeCancelled = "cancelled"
)

// Refusal reasons, the reason label of tasks_refused_total: the failure
// codes of the refused task.
const (
	reasonBusy     = CodeBusy
	reasonTooLarge = CodeTooLarge
)

// Removal reasons, the reason label of tasks_records_removed_total.
const (
	removedExpired   = "expired"    // older than task.retention
	removedOverLimit = "over_limit" // beyond task.max_records
)

// MetricLabels returns the label sets of metrics.NewTasks. The type label is
// BuiltinTypes(): an executor of another type is recorded as "unknown".
func MetricLabels() metrics.TaskLabels {
	return metrics.TaskLabels{
		Types:          BuiltinTypes(),
		Outcomes:       []string{outcomeSucceeded, outcomeFailed, outcomeCancelled},
		RefusalReasons: []string{reasonBusy, reasonTooLarge},
		RemovalReasons: []string{removedExpired, removedOverLimit},
	}
}
