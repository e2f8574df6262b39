package local

import (
	"testing"
	"time"
)

// BenchmarkReserveAdmit measures the reserve check on the write path, with
// the real clock and a free-space figure refreshed every 100 ms (the fake
// statfs costs nothing, so this is the check's own cost).
func BenchmarkReserveAdmit(b *testing.B) {
	r := &reserve{min: 64 << 20, interval: DefaultFreeCheckInterval, path: "x",
		free: func(string) (int64, error) { return 1 << 50, nil }, now: time.Now}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := r.admit(1024); err != nil {
				b.Fatal(err)
			}
		}
	})
}
