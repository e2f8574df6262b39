package local

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRateLog: identical lines are written once per interval per key, the
// next line carries the number suppressed, and distinct keys do not hide
// each other.
func TestRateLog(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1_700_000_000, 0)
	rl := newRateLog(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, func() time.Time { return now })
	written := 0
	for i := 0; i < 100; i++ {
		if rl.Error("enospc", "disk full", "attempt", i) {
			written++
		}
		now = now.Add(50 * time.Millisecond) // 100 attempts over 5s
	}
	if written != 1 {
		t.Fatalf("%d lines for 100 identical errors within the interval, want 1", written)
	}
	if !rl.Warn("other", "statfs failed") {
		t.Fatal("a different key was suppressed")
	}
	now = now.Add(5 * time.Second) // 10s after the first line
	if !rl.Error("enospc", "disk full", "attempt", 100) {
		t.Fatal("line after the interval was suppressed")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), buf.String())
	}
	var first, last map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[2]), &last); err != nil {
		t.Fatal(err)
	}
	if _, ok := first["suppressed"]; ok || first["level"] != "ERROR" {
		t.Errorf("first line %v: want level ERROR and no suppressed count", first)
	}
	if last["suppressed"] != float64(99) || last["attempt"] != float64(100) {
		t.Errorf("last line %v: want suppressed 99, attempt 100", last)
	}
	var nilLog *rateLog
	if nilLog.Error("k", "m") || newRateLog(nil, time.Second, nil).Error("k", "m") {
		t.Error("a rateLog without a logger reported a written line")
	}
}

// TestRateLogBoundedKeys: a flood of distinct keys does not grow the map
// past maxRateKeys.
func TestRateLogBoundedKeys(t *testing.T) {
	var buf bytes.Buffer
	rl := newRateLog(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour, nil)
	for i := 0; i < 10*maxRateKeys; i++ {
		rl.Error(string(rune('a'+i%26))+strings.Repeat("x", i), "m")
	}
	if n := len(rl.last); n > maxRateKeys {
		t.Fatalf("%d keys remembered, want at most %d", n, maxRateKeys)
	}
}

// TestPebbleLoggerFatalf: Fatalf logs the line and panics with a
// fatalError that knows an out-of-space cause.
func TestPebbleLoggerFatalf(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, nil))
	p := pebbleLogger{l: l, rl: newRateLog(l, time.Second, nil)}
	defer func() {
		fe, ok := recover().(fatalError)
		if !ok || !fe.noSpace {
			t.Fatalf("recovered %#v, want a fatalError with noSpace", fe)
		}
		if !strings.Contains(buf.String(), `"fatal":true`) {
			t.Errorf("no fatal log line: %s", buf.String())
		}
	}()
	p.Fatalf("pebble: fatal commit error: %v", errNoSpace())
}

func errNoSpace() error { return &os.PathError{Op: "write", Path: "000007.log", Err: syscall.ENOSPC} }
