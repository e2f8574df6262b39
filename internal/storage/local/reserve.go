package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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

	// ballast is a file of ballastSize bytes, part of the reserve, that the
	// store deletes when Pebble meets ENOSPC anyway (another process
	// filled the disk between two measurements): Pebble retries the
	// failed file operation once, in the space the ballast leaves, instead
	// of failing a write to its log or MANIFEST, which it cannot survive.
	// Empty ballast: none.
	ballast     string
	ballastSize int64
	hasBallast  atomic.Bool

	avail   atomic.Int64 // bytes free at the last statfs (ballast included) minus bytes admitted since
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
	if r.ballast != "" && !r.hasBallast.Load() && free >= r.min {
		// Space is back: hold the ballast again; what is left free is
		// still at least the rest of the reserve.
		if err := r.makeBallast(); err != nil {
			r.log.Warn("ballast", "local store: cannot create the ballast file", "path", r.ballast, "err", err)
		} else {
			free -= r.ballastSize
		}
	}
	if r.hasBallast.Load() {
		free += r.ballastSize
	}
	r.avail.Store(free)
	r.checked.Store(now)
	return true
}

// openBallast takes over the ballast at Open: one of the right size left by
// the last run is kept; otherwise it is allocated when there is room (or
// later, by the first measurement with room). A ballast left over while
// none is configured is removed.
func (r *reserve) openBallast(dir string, minFree int64) {
	if r.ballast == "" {
		_ = os.Remove(filepath.Join(dir, BallastName))
		return
	}
	if fi, err := os.Stat(r.ballast); err == nil && fi.Size() == r.ballastSize {
		r.hasBallast.Store(true)
		return
	}
	_ = os.Remove(r.ballast)
	if free, err := r.free(dir); err == nil && free >= minFree {
		if err := r.makeBallast(); err != nil {
			r.log.Warn("ballast", "local store: cannot create the ballast file", "path", r.ballast, "err", err)
		}
	}
}

// makeBallast allocates the ballast file (fallocate, so the blocks are
// really taken, not a sparse file).
func (r *reserve) makeBallast() error {
	if fi, err := os.Stat(r.ballast); err == nil && fi.Size() == r.ballastSize {
		r.hasBallast.Store(true)
		return nil
	}
	_ = os.Remove(r.ballast)
	f, err := os.OpenFile(r.ballast, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, r.ballastSize)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(r.ballast)
		return err
	}
	r.hasBallast.Store(true)
	return nil
}

// onDiskFull is Pebble's disk-full callback (vfs.OnDiskFull): it frees the
// ballast, so that the operation Pebble retries has room, and makes the
// next write measure the disk again (it is refused until space returns).
func (r *reserve) onDiskFull() {
	// Serialised with refresh, which may be allocating the ballast; refresh
	// never waits on Pebble, so holding the mutex here cannot deadlock.
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.hasBallast.Load() {
		r.log.Error("diskfull", "local store: the disk is full and there is no ballast left to free")
		return
	}
	err := os.Remove(r.ballast)
	r.hasBallast.Store(false)
	r.checked.Store(0)
	r.log.Error("diskfull", "local store: the disk is full; ballast file removed so the store can finish its writes; puts are refused until space returns",
		"path", r.ballast, "bytes", r.ballastSize, "err", err)
}

// low reports whether the last write was refused.
func (r *reserve) low() bool { return r.refused.Load() }

// reclaimLoop flushes and compacts the whole key space when asked (a
// delete while writes are refused), reclaimPause after the request and at
// most once per reclaimSpacing, until ctx is done. The flush and compaction run in the reserve.
func (s *Store) reclaimLoop(ctx context.Context) {
	defer close(s.bgDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reclaim:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(reclaimPause):
		}
		s.compactAll(ctx)
		// A compaction of the whole key space rewrites a lot: deletes
		// arriving meanwhile wait for the next one.
		select {
		case <-ctx.Done():
			return
		case <-time.After(reclaimSpacing):
		}
	}
}

func (s *Store) compactAll(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			_ = s.fail("compact", asFatal(r))
		}
	}()
	if s.failed.Load() != nil {
		return
	}
	if err := s.db.Flush(); err != nil {
		s.log.Error("reclaim:"+errClass(err), "local store: flush to reclaim space failed", "err", err)
		return
	}
	// Keys are UTF-8 without NUL: every key lies in [0x00, 0xff).
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil && ctx.Err() == nil {
		s.log.Error("reclaim:"+errClass(err), "local store: compaction to reclaim space failed", "err", err)
	}
}
