package local

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// TestCloseBounded: an operation that never returns (a write stuck in
// Pebble on a full disk holds the store's read lock like this) does not
// hold Close past CloseTimeout; Close says so with an error, and once the
// operation ends the store closes.
func TestCloseBounded(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "store"), Options{CloseTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.RLock() // the stuck operation
	start := time.Now()
	err = s.Close()
	took := time.Since(start)
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Close with a stuck operation = %v, want ErrUnavailable", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Close returned after %s, want about 300ms", took)
	}
	s.mu.RUnlock()
	if err := s.Close(); err != nil {
		t.Fatalf("Close once the operation ended: %v", err)
	}
	if _, err := s.Get(t.Context(), "k", storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
}
