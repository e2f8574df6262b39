package local

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// errClass is the rate-limit key of an error: all out-of-space errors are
// one class whatever file they name.
func errClass(err error) string {
	if vfs.IsNoSpaceError(err) {
		return "ENOSPC"
	}
	return err.Error()
}

// write runs one Pebble write. Pebble treats a failed write to its log as
// fatal (it panics with the error, or calls Logger.Fatalf, which panics
// with a fatalError, see pebbleLogger): the panic is recovered here into
// an error, and since Pebble's commit
// pipeline cannot be used after it, the store refuses every later write
// with the same error until it is reopened. Reads go on.
func (s *Store) write(op string, f func() error) (err error) {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	defer func() {
		if r := recover(); r != nil {
			err = s.fail(op, asFatal(r))
		}
	}()
	if err := f(); err != nil {
		if vfs.IsNoSpaceError(err) {
			return fmt.Errorf("local %s: %w: %w", op, storage.ErrInsufficientStorage, err)
		}
		return fmt.Errorf("local %s: %w", op, err)
	}
	return nil
}

// fail records the first fatal write error and returns the error every
// later write gets.
func (s *Store) fail(op string, fe fatalError) error {
	class := storage.ErrUnavailable
	if fe.noSpace {
		class = storage.ErrInsufficientStorage
	}
	err := fmt.Errorf("local %s: %w: the store could not write its log (%s) and refuses writes until the node is restarted", op, class, fe.msg)
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error("fatal", "local store: write failed; the store is read-only until restart", "err", err)
	}
	return *s.failed.Load()
}

// pebbleLogger routes Pebble's log lines to slog: informational lines at
// debug level, errors at error level (identical ones once per interval), so
// a healthy node stays quiet and a full disk does not flood the log.
type pebbleLogger struct {
	l  *slog.Logger
	rl *rateLog
}

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l != nil && p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l == nil {
		return
	}
	key := "pebble:" + format
	if noSpace(args) {
		key += ":ENOSPC"
	}
	p.rl.Error(key, fmt.Sprintf(format, args...), "component", "pebble")
}

// fatalError is what pebbleLogger.Fatalf panics with. The store's write
// path and Close recover it into an error; anywhere else (a background
// flush that cannot write its MANIFEST) it ends the process, after the
// error line.
type fatalError struct {
	msg     string
	noSpace bool
}

func (fe fatalError) err() error {
	if fe.noSpace {
		return fmt.Errorf("%w: pebble: %s", storage.ErrInsufficientStorage, fe.msg)
	}
	return fmt.Errorf("%w: pebble: %s", storage.ErrUnavailable, fe.msg)
}

// asFatal converts what a Pebble call panicked with into a fatalError:
// Pebble's Fatalf (see pebbleLogger) panics with one, and Pebble itself
// panics with the error of a write to its log that failed at once (db.go,
// commitWrite). Any other panic is a bug and goes on panicking.
func asFatal(r any) fatalError {
	switch v := r.(type) {
	case fatalError:
		return v
	case error:
		return fatalError{msg: v.Error(), noSpace: vfs.IsNoSpaceError(v)}
	}
	panic(r)
}

// Fatalf is called by Pebble on errors it cannot continue from (a failed
// write to its log or MANIFEST, on-disk corruption); it must not return.
// It logs the error and panics with a fatalError.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if p.l != nil {
		p.l.Error(msg, "component", "pebble", "fatal", true)
	}
	panic(fatalError{msg: msg, noSpace: noSpace(args) || strings.Contains(msg, "no space left on device")})
}

// noSpace reports whether one of args is an out-of-space error.
func noSpace(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && vfs.IsNoSpaceError(err) {
			return true
		}
	}
	return false
}
