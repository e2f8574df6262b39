//go:build !linux

package metrics

// platformProcessReader has no portable implementation here: the process
// gauges are left absent instead of reporting invented values.
func platformProcessReader() readProcessFunc { return nil }
