package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// decode reads one JSON object from a bounded body.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBodyBytes)))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body exceeds %d bytes", errTooLarge, s.cfg.MaxBodyBytes)
		}
		return fmt.Errorf("%w: invalid JSON body: %w", errBadRequest, err)
	}
	return nil
}

// fail answers err with the status code of its class.
func (s *Server) fail(w http.ResponseWriter, err error) {
	code := statusOf(err)
	// 507 is not logged per request: a full disk refuses every write, and
	// the store logs that once per interval.
	if code >= 500 && code != http.StatusInsufficientStorage {
		s.log.Warn("api request failed", "status", code, "err", err)
	}
	writeError(w, code, err.Error())
}

// statusOf maps an error to its HTTP status: the one place where the
// sentinels of the API, storage, task, p2p and message packages become
// status codes.
func statusOf(err error) int {
	var remote *message.RemoteError
	switch {
	case errors.Is(err, storage.ErrNotFound): // task.ErrNotFound wraps it
		return http.StatusNotFound
	case errors.Is(err, storage.ErrValueTooLarge), errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBadRequest),
		errors.Is(err, storage.ErrInvalidKey), errors.Is(err, storage.ErrInvalidConsistency), errors.Is(err, storage.ErrInvalidPage),
		errors.Is(err, task.ErrBadInput), errors.Is(err, task.ErrUnknownType),
		errors.Is(err, p2p.ErrBadPeer):
		return http.StatusBadRequest
	case errors.Is(err, storage.ErrInsufficientStorage):
		return http.StatusInsufficientStorage
	case errors.Is(err, task.ErrBusy), errors.Is(err, task.ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, message.ErrPeerUnreachable), errors.Is(err, message.ErrStreamClosed),
		errors.Is(err, task.ErrNoPeer), errors.As(err, &remote):
		return http.StatusBadGateway
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, storage.ErrClosed),
		errors.Is(err, message.ErrServiceClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// writeJSON encodes v before writing the status, so that a value that
// cannot be encoded answers 500 rather than a truncated 2xx body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(ErrorBody{Error: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// writeError answers with an ErrorBody; the message is flattened to one line
// here, at the edge, whatever layer it came from.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Error: oneline.Flatten(strings.TrimSpace(msg))})
}
