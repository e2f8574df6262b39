package api_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

func TestStatusCodeInsufficientStorage(t *testing.T) {
	err := fmt.Errorf("local: put k: %w", storage.ErrInsufficientStorage)
	if got := api.StatusCode(err, nil); got != http.StatusInsufficientStorage {
		t.Fatalf("StatusCode(%v) = %d, want %d", err, got, http.StatusInsufficientStorage)
	}
}
