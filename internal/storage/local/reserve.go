package local

import (
	"fmt"
	"sync"
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
// reserve while the cached figure is stale, and the hot path is a mutex and
// two comparisons.
type reserve struct {
	min      int64
	interval time.Duration
	path     string
	free     func(path string) (int64, error)
	now      func() time.Time
	log      *rateLog

	mu      sync.Mutex
	avail   int64 // bytes free at the last statfs minus bytes admitted since
	checked time.Time
	valid   bool
	refused bool // the last decision was a refusal
}

// admit reports nil when n more bytes may be written, or an error wrapping
// storage.ErrInsufficientStorage. A failing statfs admits the write (the
// reserve is a safeguard, not a reason to stop a node that can still
// write) and is logged once per interval of the rate log.
func (r *reserve) admit(n int64) error {
	if r.min <= 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if !r.valid || now.Sub(r.checked) >= r.interval {
		free, err := r.free(r.path)
		if err != nil {
			r.valid = false
			r.log.Warn("statfs", "local store: cannot measure free space; write admitted", "path", r.path, "err", err)
			return nil
		}
		r.avail, r.checked, r.valid = free, now, true
	}
	if r.avail-n < r.min {
		r.refused = true
		return fmt.Errorf("local put: %w: %d bytes free on the filesystem of %s, %d needed above the reserve of %d (storage.local.min_free_bytes)",
			storage.ErrInsufficientStorage, max(r.avail, 0), r.path, n, r.min)
	}
	r.refused = false
	r.avail -= n
	return nil
}

// low reports whether the last write was refused.
func (r *reserve) low() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}
