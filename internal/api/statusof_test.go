package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// TestStatusOf: every sentinel the API serves, wrapped as its package
// returns it, has its status.
func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{storage.ErrNotFound, http.StatusNotFound},
		{fmt.Errorf("%w: 0123", task.ErrNotFound), http.StatusNotFound},
		{storage.ErrValueTooLarge, http.StatusRequestEntityTooLarge},
		{errTooLarge, http.StatusRequestEntityTooLarge},
		{errBadRequest, http.StatusBadRequest},
		{storage.ErrInvalidKey, http.StatusBadRequest},
		{storage.ErrInvalidConsistency, http.StatusBadRequest},
		{storage.ErrInvalidPage, http.StatusBadRequest},
		{fmt.Errorf("%w: input must be a JSON object", task.ErrBadInput), http.StatusBadRequest},
		{fmt.Errorf("%w: %q", task.ErrUnknownType, "x"), http.StatusBadRequest},
		{fmt.Errorf("%w: empty", p2p.ErrBadPeer), http.StatusBadRequest},
		{fmt.Errorf("local: put k: %w", storage.ErrInsufficientStorage), http.StatusInsufficientStorage},
		{task.ErrBusy, http.StatusServiceUnavailable},
		{task.ErrClosed, http.StatusServiceUnavailable},
		{fmt.Errorf("%w: dial", message.ErrPeerUnreachable), http.StatusBadGateway},
		{message.ErrStreamClosed, http.StatusBadGateway},
		{fmt.Errorf("%w: peer x", task.ErrNoPeer), http.StatusBadGateway},
		{fmt.Errorf("ping: %w", &message.RemoteError{Code: message.CodeBusy}), http.StatusBadGateway},
		{fmt.Errorf("redis: %w", storage.ErrUnavailable), http.StatusServiceUnavailable},
		{storage.ErrClosed, http.StatusServiceUnavailable},
		{message.ErrServiceClosed, http.StatusServiceUnavailable},
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
		{errors.New("anything else"), http.StatusInternalServerError},
	} {
		if got := statusOf(tc.err); got != tc.want {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
