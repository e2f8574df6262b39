package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// ms is d in (fractional) milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func consistency(r *http.Request) (storage.Consistency, error) {
	c, err := storage.ParseConsistency(r.URL.Query().Get("consistency"))
	if err != nil {
		return c, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	return c, nil
}

func (s *Server) handleKVGet(w http.ResponseWriter, r *http.Request) {
	c, err := consistency(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	v, err := s.deps.Store.Get(r.Context(), r.PathValue("key"), c)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(v)
}

func (s *Server) handleKVPut(w http.ResponseWriter, r *http.Request) {
	c, err := consistency(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if r.ContentLength > int64(s.cfg.MaxValueBytes) {
		s.fail(w, fmt.Errorf("%w: %d bytes exceeds %d", storage.ErrValueTooLarge, r.ContentLength, s.cfg.MaxValueBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxValueBytes)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, fmt.Errorf("%w: more than %d bytes", storage.ErrValueTooLarge, s.cfg.MaxValueBytes))
			return
		}
		s.fail(w, fmt.Errorf("%w: reading body: %w", errBadRequest, err))
		return
	}
	key := r.PathValue("key")
	if err := s.deps.Store.Put(r.Context(), key, body, c); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KVPut{Key: key, Bytes: len(body), Consistency: c.String()})
}

func (s *Server) handleKVDelete(w http.ResponseWriter, r *http.Request) {
	c, err := consistency(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	key := r.PathValue("key")
	if err := s.deps.Store.Delete(r.Context(), key, c); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KVDeleted{Key: key, Deleted: true})
}

func (s *Server) handleKVList(w http.ResponseWriter, r *http.Request) {
	c, err := consistency(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	q := r.URL.Query()
	prefix, after := q.Get("prefix"), q.Get("after")
	limit := DefaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > storage.MaxPageLimit {
			s.fail(w, fmt.Errorf("%w: limit %q must be an integer from 1 to %d", errBadRequest, v, storage.MaxPageLimit))
			return
		}
		limit = n
	}
	kvs, next, err := s.deps.Store.ListPage(r.Context(), prefix, after, limit, c)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := KVList{Prefix: prefix, Count: len(kvs), Next: next, Items: make([]KVItem, len(kvs))}
	for i, kv := range kvs {
		out.Items[i] = KVItem{Key: kv.Key, Value: kv.Value}
	}
	writeJSON(w, http.StatusOK, out)
}
