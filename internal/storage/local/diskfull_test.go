package local_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
)

// fakeDisk is an injected free-space function and clock: the unit tests of
// the reserve decide exactly what statfs answers and when the cached
// answer expires.
type fakeDisk struct {
	free  atomic.Int64
	calls atomic.Int64
	err   atomic.Pointer[error]

	mu  sync.Mutex
	now time.Time
}

func newFakeDisk(free int64) *fakeDisk {
	d := &fakeDisk{now: time.Unix(1_700_000_000, 0)}
	d.free.Store(free)
	return d
}

func (d *fakeDisk) FreeBytes(string) (int64, error) {
	d.calls.Add(1)
	if p := d.err.Load(); p != nil {
		return 0, *p
	}
	return d.free.Load(), nil
}

func (d *fakeDisk) Now() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

func (d *fakeDisk) Advance(dt time.Duration) {
	d.mu.Lock()
	d.now = d.now.Add(dt)
	d.mu.Unlock()
}

const mib = 1 << 20

func openReserve(t *testing.T, d *fakeDisk, minFree int64, log *slog.Logger) *local.Store {
	t.Helper()
	s, err := local.Open(filepath.Join(t.TempDir(), "store"), local.Options{
		Logger:            log,
		MinFreeBytes:      minFree,
		FreeBytes:         d.FreeBytes,
		FreeCheckInterval: time.Second,
		Now:               d.Now,
		BallastBytes:      -1, // the fake disk does not see a ballast file
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestReserveRefusesPuts: with 10 MiB free and a 4 MiB reserve, exactly six
// 1 MiB puts are admitted on one statfs (the cached figure is decremented
// by each admitted write), the seventh is refused with
// ErrInsufficientStorage, deletes and reads still work, and once the cache
// expires and the disk has room again writes are admitted.
func TestReserveRefusesPuts(t *testing.T) {
	ctx := context.Background()
	d := newFakeDisk(10 * mib)
	var logs bytes.Buffer
	s := openReserve(t, d, 4*mib, slog.New(slog.NewJSONHandler(&logs, nil)))
	val := bytes.Repeat([]byte("x"), mib-2) // key "kN" + value = 1 MiB
	admitted := 0
	var refusal error
	for i := 0; i < 10; i++ {
		if err := s.Put(ctx, fmt.Sprintf("k%d", i), val, storage.Strong); err != nil {
			refusal = err
			break
		}
		admitted++
	}
	if admitted != 6 {
		t.Fatalf("admitted %d puts, want 6", admitted)
	}
	if !errors.Is(refusal, storage.ErrInsufficientStorage) {
		t.Fatalf("refusal = %v, want ErrInsufficientStorage", refusal)
	}
	if !strings.Contains(refusal.Error(), "storage.local.min_free_bytes") {
		t.Errorf("refusal does not name the key: %v", refusal)
	}
	if got := d.calls.Load(); got != 1 {
		t.Errorf("statfs called %d times for 7 puts within the interval, want 1", got)
	}
	// Repeated refusals are logged once per interval.
	for i := 0; i < 5; i++ {
		if err := s.Put(ctx, "more", val, storage.Eventual); !errors.Is(err, storage.ErrInsufficientStorage) {
			t.Fatalf("put %d under the reserve: %v", i, err)
		}
	}
	if n := strings.Count(logs.String(), "write refused"); n != 1 {
		t.Errorf("%d 'write refused' log lines for 6 refusals, want 1:\n%s", n, logs.String())
	}
	// Deletes are admitted under the reserve; reads go on.
	if err := s.Delete(ctx, "k5", storage.Strong); err != nil {
		t.Fatalf("delete under the reserve: %v", err)
	}
	if v, err := s.Get(ctx, "k0", storage.Strong); err != nil || len(v) != len(val) {
		t.Fatalf("get under the reserve: %d bytes, %v", len(v), err)
	}
	// The cached figure is trusted for the interval, then measured again.
	d.free.Store(100 * mib)
	d.Advance(999 * time.Millisecond)
	if err := s.Put(ctx, "after", []byte("v"), storage.Strong); !errors.Is(err, storage.ErrInsufficientStorage) {
		t.Fatalf("put before the cache expired: %v, want a refusal", err)
	}
	d.Advance(time.Millisecond)
	if err := s.Put(ctx, "after", []byte("v"), storage.Strong); err != nil {
		t.Fatalf("put after space returned: %v", err)
	}
	if got := d.calls.Load(); got != 2 {
		t.Errorf("statfs called %d times, want 2", got)
	}
}

// TestReserveExactBoundary: a put leaving exactly the reserve is admitted,
// one byte more is refused.
func TestReserveExactBoundary(t *testing.T) {
	ctx := context.Background()
	d := newFakeDisk(5000)
	s := openReserve(t, d, 1000, nil)
	if err := s.Put(ctx, "a", make([]byte, 4000), storage.Strong); !errors.Is(err, storage.ErrInsufficientStorage) {
		t.Fatalf("put leaving 999 bytes: %v, want a refusal", err)
	}
	if err := s.Put(ctx, "a", make([]byte, 3999), storage.Strong); err != nil {
		t.Fatalf("put leaving exactly 1000 bytes: %v", err)
	}
	if err := s.Put(ctx, "b", nil, storage.Strong); !errors.Is(err, storage.ErrInsufficientStorage) {
		t.Fatalf("put of one more byte: %v, want a refusal", err)
	}
}

// TestReserveDisabled: MinFreeBytes 0 never measures the disk.
func TestReserveDisabled(t *testing.T) {
	d := newFakeDisk(0)
	s := openReserve(t, d, 0, nil)
	for i := 0; i < 100; i++ {
		if err := s.Put(context.Background(), fmt.Sprintf("k%d", i), []byte("v"), storage.Strong); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.calls.Load(); got != 0 {
		t.Errorf("statfs called %d times with the reserve disabled", got)
	}
}

// TestReserveStatfsError: a disk that cannot be measured does not stop
// writes; the failure is logged once per interval.
func TestReserveStatfsError(t *testing.T) {
	d := newFakeDisk(0)
	e := errors.New("statfs broke")
	d.err.Store(&e)
	var logs bytes.Buffer
	s := openReserve(t, d, mib, slog.New(slog.NewJSONHandler(&logs, nil)))
	for i := 0; i < 3; i++ {
		if err := s.Put(context.Background(), "k", []byte("v"), storage.Strong); err != nil {
			t.Fatalf("put with statfs failing: %v", err)
		}
	}
	if d.calls.Load() != 3 {
		t.Errorf("statfs called %d times, want 3 (a failed measurement is not cached)", d.calls.Load())
	}
	if n := strings.Count(logs.String(), "statfs broke"); n != 1 {
		t.Errorf("%d log lines for 3 statfs failures, want 1", n)
	}
}

func TestStatfsFree(t *testing.T) {
	dir := t.TempDir()
	free, err := local.StatfsFree(dir)
	if err != nil || free <= 0 {
		t.Fatalf("StatfsFree(%s) = %d, %v", dir, free, err)
	}
	if _, err := local.StatfsFree(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("StatfsFree of a missing path succeeded")
	}
}

// TestCloseSyncsEventualWrites: writes acknowledged at Eventual are on disk
// after Close and present on reopen.
func TestCloseSyncsEventualWrites(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if err := s.Put(ctx, fmt.Sprintf("e%04d", i), []byte("v"), storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s, err = local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kvs, err := s.List(ctx, "e", storage.Strong)
	if err != nil || len(kvs) != 1000 {
		t.Fatalf("after reopen: %d keys, %v; want 1000", len(kvs), err)
	}
}

// mountTmpfs mounts a tmpfs of size bytes at a new directory and unmounts
// it at cleanup. It needs root (CI runs the tests as root).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs tests as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestFullDiskWithoutReserve fills a real 8 MiB tmpfs with the reserve
// disabled, so Pebble itself runs into ENOSPC: the write that fails returns
// an error wrapping ErrInsufficientStorage instead of panicking, every later
// write fails the same way, reads still answer, Close reports the failure
// within its timeout, and after a reopen with room every write synced
// before the failure is there.
func TestFullDiskWithoutReserve(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	ctx := context.Background()
	var logs bytes.Buffer
	var logMu sync.Mutex
	s, err := local.Open(filepath.Join(dir, "store"), local.Options{
		Logger:       slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs, mu: &logMu}, nil)),
		MinFreeBytes: 0,
		CloseTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("z"), 64<<10)
	var failure error
	written := 0
	for i := 0; i < 1000; i++ {
		c := storage.Strong
		if i%2 == 1 {
			c = storage.Eventual
		}
		if err := s.Put(ctx, fmt.Sprintf("k%04d", i), val, c); err != nil {
			failure = err
			break
		}
		written++
	}
	t.Logf("wrote %d values of 64 KiB (%d KiB) before: %v", written, written*64, failure)
	if !errors.Is(failure, storage.ErrInsufficientStorage) {
		t.Fatalf("failure = %v, want ErrInsufficientStorage", failure)
	}
	if err := s.Put(ctx, "again", []byte("v"), storage.Strong); !errors.Is(err, storage.ErrInsufficientStorage) {
		t.Fatalf("put after the failure: %v", err)
	}
	if _, err := s.Get(ctx, "k0000", storage.Strong); err != nil {
		t.Fatalf("get after the failure: %v", err)
	}
	logMu.Lock()
	fatal := strings.Count(logs.String(), "read-only until restart")
	logMu.Unlock()
	if fatal != 1 {
		t.Errorf("%d 'read-only' log lines, want 1", fatal)
	}
	start := time.Now()
	err = s.Close()
	took := time.Since(start)
	t.Logf("Close after %s: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, storage.ErrInsufficientStorage) {
		t.Errorf("Close = %v, want an error wrapping ErrInsufficientStorage", err)
	}
	if took > 6*time.Second {
		t.Errorf("Close took %s", took)
	}

	// Every write acknowledged before the failure, Eventual ones included,
	// is there when the store is reopened with room on the disk.
	if out, err := exec.Command("mount", "-o", "remount,size=32m", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	s, err = local.Open(filepath.Join(dir, "store"), local.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	// Eventual writes answered after the last Strong one were only in the
	// log buffer that could not be written: they may be lost (and Close
	// said so). Every earlier one was synced with a Strong write.
	sure := written
	if sure%2 == 0 { // the last acknowledged write, sure-1, was Eventual
		sure--
	}
	for i := 0; i < sure; i++ {
		v, err := s.Get(ctx, fmt.Sprintf("k%04d", i), storage.Strong)
		if err != nil || !bytes.Equal(v, val) {
			t.Fatalf("acknowledged key k%04d after reopen: %d bytes, %v", i, len(v), err)
		}
	}
	if err := s.Put(ctx, "again", []byte("v"), storage.Strong); err != nil {
		t.Fatalf("put after reopen with room: %v", err)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// fillFS writes a filler file into dir until the filesystem is full.
func fillFS(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	_ = f.Close()
	return name
}

// TestBallastSavesPebble: another process fills the disk while the store's
// free-space figure is stale, so writes reach Pebble with no room left.
// Pebble meets ENOSPC, the store frees its ballast, Pebble's retry succeeds
// (no fatal error, no read-only store), the next put is refused, and once
// the space is back puts are admitted and the ballast is held again.
// Without the ballast this ends the process: a failed WAL rotation makes
// Pebble unlock a mutex twice, a Go runtime fatal error no recover catches.
func TestBallastSavesPebble(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	ctx := context.Background()
	d := newFakeDisk(0) // only its clock
	var logs bytes.Buffer
	var logMu sync.Mutex
	path := filepath.Join(dir, "store")
	s, err := local.Open(path, local.Options{
		Logger:            slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs, mu: &logMu}, nil)),
		MemTableBytes:     1 << 20,
		MinFreeBytes:      4 << 20,
		FreeCheckInterval: time.Hour,
		Now:               d.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ballast := filepath.Join(path, local.BallastName)
	if fi, err := os.Stat(ballast); err != nil || fi.Size() != 2<<20 {
		t.Fatalf("ballast after Open: %v, %v; want 2 MiB", fi, err)
	}
	if err := s.Put(ctx, "first", []byte("v"), storage.Strong); err != nil {
		t.Fatal(err) // measures the disk: the figure is now stale for an hour
	}
	filler := fillFS(t, dir)
	val := bytes.Repeat([]byte("z"), 16<<10)
	acked := 0
	var refusal error
	for i := 0; i < 400; i++ {
		c := storage.Strong
		if i%2 == 1 {
			c = storage.Eventual
		}
		if err := s.Put(ctx, fmt.Sprintf("k%04d", i), val, c); err != nil {
			refusal = err
			break
		}
		acked++
	}
	t.Logf("%d puts of 16 KiB after the disk filled, then: %v", acked, refusal)
	if !errors.Is(refusal, storage.ErrInsufficientStorage) || !strings.Contains(refusal.Error(), "min_free_bytes") {
		t.Fatalf("refusal = %v, want the reserve's refusal (not a read-only store)", refusal)
	}
	if _, err := os.Stat(ballast); !os.IsNotExist(err) {
		t.Fatalf("ballast still there after ENOSPC: %v", err)
	}
	logMu.Lock()
	freed := strings.Count(logs.String(), "ballast file removed")
	logMu.Unlock()
	if freed != 1 {
		t.Errorf("%d 'ballast file removed' lines, want 1", freed)
	}
	if _, err := s.Get(ctx, "first", storage.Strong); err != nil {
		t.Fatal(err)
	}
	// Space returns: the next measurement admits puts and takes the
	// ballast again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d.Advance(time.Hour)
	if err := s.Put(ctx, "after", val, storage.Strong); err != nil {
		t.Fatalf("put after space returned: %v", err)
	}
	if fi, err := os.Stat(ballast); err != nil || fi.Size() != 2<<20 {
		t.Fatalf("ballast after space returned: %v, %v", fi, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = local.Open(path, local.Options{MinFreeBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < acked; i++ {
		if v, err := s.Get(ctx, fmt.Sprintf("k%04d", i), storage.Strong); err != nil || !bytes.Equal(v, val) {
			t.Fatalf("k%04d after reopen: %d bytes, %v", i, len(v), err)
		}
	}
}

// TestBallastLifecycle: Open allocates the ballast (half the reserve),
// keeps it across a reopen, and removes it when the reserve is disabled;
// Pebble ignores the file.
func TestBallastLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	ballast := filepath.Join(path, local.BallastName)
	open := func(minFree int64) *local.Store {
		t.Helper()
		s, err := local.Open(path, local.Options{MinFreeBytes: minFree})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	size := func() int64 {
		fi, err := os.Stat(ballast)
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	s := open(6 << 20)
	if got := size(); got != 3<<20 {
		t.Fatalf("ballast %d bytes, want %d", got, 3<<20)
	}
	if err := s.Put(context.Background(), "k", []byte("v"), storage.Strong); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(256 << 20) // half would be 128 MiB: capped at 32 MiB
	if got := size(); got != 32<<20 {
		t.Fatalf("ballast %d bytes, want 32 MiB", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(0)
	defer s.Close()
	if got := size(); got != -1 {
		t.Fatalf("ballast of %d bytes left with the reserve disabled", got)
	}
	if v, err := s.Get(context.Background(), "k", storage.Strong); err != nil || string(v) != "v" {
		t.Fatalf("Get after reopens: %q, %v", v, err)
	}
}
