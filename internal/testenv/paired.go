package testenv

import "slices"

// PairedOrders are the six orders of three variants (raw A, instrumented
// or service, raw B) for paired benchmark rounds: round r uses
// PairedOrders[r%6], so each variant runs first, second and last equally
// often and drift hits all three alike.
var PairedOrders = [6][3]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}, {1, 0, 2}}

// Median returns the median of xs (0 for none), leaving xs unchanged.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else if n > 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return 0
}
