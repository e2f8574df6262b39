package storagetest

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchOps runs op b.N times, reporting allocations, the way the backends'
// benchmarks compare raw client calls with the store's: with goroutines 1
// a plain loop; otherwise RunParallel, its parallelism rounded up so that
// at least goroutines goroutines run on this machine. op gets a distinct
// sequence number per call; an error fails the benchmark.
func BenchOps(b *testing.B, goroutines int, op func(i int) error) {
	b.ReportAllocs()
	if goroutines == 1 {
		for i := 0; i < b.N; i++ {
			if err := op(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(int(seq.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
