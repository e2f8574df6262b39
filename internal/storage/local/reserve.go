package local

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// StatfsFree returns the bytes of the filesystem holding path that an
// unprivileged process may still write (statfs f_bavail * f_bsize).
func StatfsFree(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil //nolint:gosec // block counts fit in int64
}

// reserve refuses writes that would leave less than min bytes free on the
// store's filesystem. The free space is measured with statfs at most once
// per interval; between two measurements every admitted write is
// subtracted from the last one, so a burst of writes cannot overrun the
// reserve while the cached figure is stale. The hot path is a clock read,
// an atomic load and a compare-and-swap; only a refresh takes the mutex.
type reserve struct {
	min      int64
	interval time.Duration
	path     string
	free     func(path string) (int64, error)
	now      func() time.Time
	log      *rateLog

	avail   atomic.Int64 // bytes free at the last statfs minus bytes admitted since
	checked atomic.Int64 // UnixNano of the last successful statfs; 0: none
	refused atomic.Bool  // the last decision was a refusal
	mu      sync.Mutex   // serialises refreshes
}

// admit reports nil when n more bytes may be written, or an error wrapping
// storage.ErrInsufficientStorage. A failing statfs admits the write (the
// reserve is a safeguard, not a reason to stop a node that can still
// write) and is logged once per interval of the rate log.
func (r *reserve) admit(n int64) error {
	if r.min <= 0 {
		return nil
	}
	now := r.now().UnixNano()
	if c := r.checked.Load(); c == 0 || now-c >= int64(r.interval) {
		if !r.refresh(now) {
			return nil
		}
	}
	for {
		a := r.avail.Load()
		if a-n < r.min {
			r.refused.Store(true)
			return fmt.Errorf("local put: %w: %d bytes free on the filesystem of %s, %d needed above the reserve of %d (storage.local.min_free_bytes)",
				storage.ErrInsufficientStorage, max(a, 0), r.path, n, r.min)
		}
		if r.avail.CompareAndSwap(a, a-n) {
			break
		}
	}
	if r.refused.Load() {
		r.refused.Store(false)
	}
	return nil
}

// refresh measures the free space unless another writer just did; it
// reports false when the measurement failed.
func (r *reserve) refresh(now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.checked.Load(); c != 0 && now-c < int64(r.interval) {
		return true // refreshed while this writer waited
	}
	free, err := r.free(r.path)
	if err != nil {
		r.checked.Store(0)
		r.log.Warn("statfs", "local store: cannot measure free space; write admitted", "path", r.path, "err", err)
		return false
	}
	r.avail.Store(free)
	r.checked.Store(now)
	return true
}

// low reports whether the last write was refused.
func (r *reserve) low() bool { return r.refused.Load() }
