package local

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxRateKeys bounds the distinct lines a rateLog remembers; past it the
// memory is reset, so a flood of distinct lines costs at most one line each.
const maxRateKeys = 256

// rateLog writes error lines through l at most once per interval for each
// key: a disk that stays full makes every write and every Pebble retry fail
// the same way, and one line per interval says so without flooding the log.
// The line that ends a quiet period carries "suppressed", the number of
// identical lines dropped since the previous one. A nil *rateLog or one
// without a logger discards everything.
type rateLog struct {
	l        *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[string]*rateEntry
}

type rateEntry struct {
	at         time.Time
	suppressed int
}

func newRateLog(l *slog.Logger, interval time.Duration, now func() time.Time) *rateLog {
	if now == nil {
		now = time.Now
	}
	return &rateLog{l: l, interval: interval, now: now, last: make(map[string]*rateEntry)}
}

// Error logs msg with attrs at error level unless a line with the same key
// was logged less than interval ago. It reports whether the line was written.
func (r *rateLog) Error(key, msg string, attrs ...any) bool {
	return r.log(slog.LevelError, key, msg, attrs...)
}

// Warn is Error at warning level.
func (r *rateLog) Warn(key, msg string, attrs ...any) bool {
	return r.log(slog.LevelWarn, key, msg, attrs...)
}

func (r *rateLog) log(level slog.Level, key, msg string, attrs ...any) bool {
	if r == nil || r.l == nil {
		return false
	}
	now := r.now()
	r.mu.Lock()
	e, ok := r.last[key]
	if ok && now.Sub(e.at) < r.interval {
		e.suppressed++
		r.mu.Unlock()
		return false
	}
	suppressed := 0
	if ok {
		suppressed = e.suppressed
		e.at, e.suppressed = now, 0
	} else {
		if len(r.last) >= maxRateKeys {
			clear(r.last)
		}
		r.last[key] = &rateEntry{at: now}
	}
	r.mu.Unlock()
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	r.l.Log(context.Background(), level, msg, attrs...)
	return true
}
