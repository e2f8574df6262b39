package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/httplimit"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// Sentinel errors the API maps to status codes; the node's adapters wrap
// their own failures with them when no package sentinel fits.
var (
	// ErrBadRequest marks invalid input (400).
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound marks a missing resource (404).
	ErrNotFound = errors.New("not found")
	// ErrPeerUnavailable marks a peer that cannot be reached (502).
	ErrPeerUnavailable = errors.New("peer unavailable")
	// ErrUnavailable marks a node or backend that cannot serve now (503).
	ErrUnavailable = errors.New("unavailable")
	// ErrTooLarge marks a request body over its limit (413).
	ErrTooLarge = errors.New("too large")
)

// StatusSource reports the node's status.
type StatusSource interface {
	Status() Status
}

// Network is what the API needs of the p2p layer.
type Network interface {
	Peers() []Peer
	Ping(ctx context.Context, peer string, count int) (PingResult, error)
}

// Tasks is what the API needs of the task engine. Records are returned as
// JSON-encodable values.
type Tasks interface {
	Submit(ctx context.Context, req TaskRequest) (any, error)
	Task(ctx context.Context, id string) (any, error)
}

// ServerConfig configures the control API server.
type ServerConfig struct {
	Listen        string
	Token         string
	MaxValueBytes int
	// MaxBodyBytes bounds JSON request bodies (task input); default 1 MiB.
	MaxBodyBytes int
	Logger       *slog.Logger
	// Classify maps errors of other packages onto the API sentinels; it may
	// be nil. It is consulted before the built-in storage mapping.
	Classify func(error) error
	// Limits bounds slow and greedy clients (zero fields take the defaults
	// of package httplimit).
	Limits Limits
	// Tracing traces sampled requests (a span "api" per request, child of a
	// sampled traceparent header); nil traces nothing.
	Tracing *tracing.Tracing
	// Traces assembles traces for GET /api/v1/traces/{id}; nil answers 503.
	Traces TraceSource
}

// Limits bounds what slow and greedy clients can cost the API listener.
type Limits struct {
	// ReadHeaderTimeout bounds reading request headers.
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds reading one request body in total.
	BodyTimeout time.Duration
	// MinBodyRate is the floor rate of a request body in bytes per second
	// (after a short grace); slower bodies are cut.
	MinBodyRate int64
	// MaxConnections caps open connections; excess ones are closed at accept.
	MaxConnections int
	// MaxBodyBytesInFlight bounds the request-body bytes held at once; beyond
	// it requests answer 503 with Retry-After without being read.
	MaxBodyBytesInFlight int64
	// ShutdownGrace is how long Shutdown waits for requests in flight before
	// closing the connections that remain.
	ShutdownGrace time.Duration
}

func (l *Limits) defaults() {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = httplimit.DefaultReadHeaderTimeout
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = httplimit.DefaultBodyTimeout
	}
	if l.MinBodyRate <= 0 {
		l.MinBodyRate = httplimit.DefaultMinBodyRate
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.MaxBodyBytesInFlight <= 0 {
		l.MaxBodyBytesInFlight = DefaultMaxBodyBytesInFlight
	}
	if l.ShutdownGrace <= 0 {
		l.ShutdownGrace = httplimit.DefaultShutdownGrace
	}
}

// Defaults of the API limits.
const (
	DefaultMaxConnections       = 256
	DefaultMaxBodyBytesInFlight = 32 << 20
)

// Server is the control API HTTP server.
type Server struct {
	cfg     ServerConfig
	status  StatusSource
	store   storage.Store
	net     Network
	tasks   Tasks
	accept  func() bool
	log     *slog.Logger
	http    *http.Server
	budget  *httplimit.Budget
	ln      net.Listener
	serveWG sync.WaitGroup
}

// NewServer builds the control API. store, network and tasks may be nil
// until their subsystems exist; their routes then answer 503. accepting
// reports whether the node takes new work; when false, everything but
// status answers 503 (the node is draining).
func NewServer(cfg ServerConfig, status StatusSource, store storage.Store, network Network, tasks Tasks, accepting func() bool) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxValueBytes <= 0 {
		cfg.MaxValueBytes = storage.DefaultMaxValueBytes
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	cfg.Limits.defaults()
	s := &Server{cfg: cfg, status: status, store: store, net: network, tasks: tasks, accept: accepting, log: cfg.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status", s.handleStatus)
	mux.HandleFunc("GET /api/v1/peers", s.work(s.handlePeers))
	mux.HandleFunc("GET /api/v1/kv", s.work(s.handleKVList))
	mux.HandleFunc("GET /api/v1/kv/{key...}", s.work(s.handleKVGet))
	mux.HandleFunc("PUT /api/v1/kv/{key...}", s.work(s.handleKVPut))
	mux.HandleFunc("DELETE /api/v1/kv/{key...}", s.work(s.handleKVDelete))
	mux.HandleFunc("POST /api/v1/ping", s.work(s.handlePing))
	mux.HandleFunc("POST /api/v1/tasks", s.work(s.handleTaskSubmit))
	mux.HandleFunc("GET /api/v1/tasks/{id}", s.work(s.handleTaskGet))
	mux.HandleFunc("GET /api/v1/traces/{id}", s.work(s.handleTrace))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	lim := cfg.Limits
	perRequest := int64(max(cfg.MaxValueBytes, cfg.MaxBodyBytes)) + 1
	s.budget = httplimit.NewBudget(lim.MaxBodyBytesInFlight, perRequest)
	handler := s.budget.Limit(mux, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many request bytes in flight; retry later")
	})
	// The body limits wrap authentication too: a request refused 401 has
	// its unread body drained by the server under the same deadlines.
	handler = httplimit.SlowBody(s.auth(handler), httplimit.BodyLimits{
		Timeout: lim.BodyTimeout, MinRate: lim.MinBodyRate, Grace: httplimit.DefaultBodyGrace,
	})
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       httplimit.DefaultIdleTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the full handler (authentication included), for tests.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Start binds api.listen and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("api listener %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		if err := s.http.Serve(httplimit.LimitListener(ln, s.cfg.Limits.MaxConnections)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", "err", err)
		}
	}()
	return nil
}

// Addr is the bound address (valid after Start).
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops the listener, waits for requests in flight for the
// shutdown grace (or until ctx ends) and then closes the connections left.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	err := httplimit.Shutdown(ctx, s.http, s.cfg.Limits.ShutdownGrace)
	s.serveWG.Wait()
	return err
}

// auth requires "Authorization: Bearer <token>" on every request when a token is configured.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + s.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="p2p-agent"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// work refuses new work while the node is not accepting it.
func (s *Server) work(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.accept != nil && !s.accept() {
			writeError(w, http.StatusServiceUnavailable, "node is not active (starting or draining)")
			return
		}
		s.traced(w, r, h)
	}
}

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.status.Status())
}

func (s *Server) handlePeers(w http.ResponseWriter, _ *http.Request) {
	if s.net == nil {
		writeError(w, http.StatusServiceUnavailable, "p2p is not running")
		return
	}
	peers := s.net.Peers()
	if peers == nil {
		peers = []Peer{}
	}
	writeJSON(w, http.StatusOK, peers)
}

func consistency(r *http.Request) (storage.Consistency, error) {
	c, err := storage.ParseConsistency(r.URL.Query().Get("consistency"))
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return c, nil
}

func (s *Server) handleKVGet(w http.ResponseWriter, r *http.Request) {
	c, err := consistency(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	v, err := s.store.Get(r.Context(), r.PathValue("key"), c)
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
		s.fail(w, fmt.Errorf("%w: reading body: %w", ErrBadRequest, err))
		return
	}
	key := r.PathValue("key")
	if err := s.store.Put(r.Context(), key, body, c); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": key, "bytes": len(body), "consistency": c.String()})
}

func (s *Server) handleKVDelete(w http.ResponseWriter, r *http.Request) {
	c, err := consistency(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	key := r.PathValue("key")
	if err := s.store.Delete(r.Context(), key, c); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"key": key, "deleted": true})
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
			s.fail(w, fmt.Errorf("%w: limit %q must be an integer from 1 to %d", ErrBadRequest, v, storage.MaxPageLimit))
			return
		}
		limit = n
	}
	kvs, next, err := s.store.ListPage(r.Context(), prefix, after, limit, c)
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

func (s *Server) handlePing(w http.ResponseWriter, r *http.Request) {
	if s.net == nil {
		writeError(w, http.StatusServiceUnavailable, "p2p is not running")
		return
	}
	var req PingRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Peer == "" {
		s.fail(w, fmt.Errorf("%w: peer is required", ErrBadRequest))
		return
	}
	if req.Count <= 0 {
		req.Count = 1
	}
	if req.Count > 1000 {
		s.fail(w, fmt.Errorf("%w: count %d exceeds 1000", ErrBadRequest, req.Count))
		return
	}
	res, err := s.net.Ping(r.Context(), req.Peer, req.Count)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleTaskSubmit(w http.ResponseWriter, r *http.Request) {
	if s.tasks == nil {
		writeError(w, http.StatusServiceUnavailable, "task engine is not running")
		return
	}
	var req TaskRequest
	if err := s.decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	rec, err := s.tasks.Submit(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, rec)
}

func (s *Server) handleTaskGet(w http.ResponseWriter, r *http.Request) {
	if s.tasks == nil {
		writeError(w, http.StatusServiceUnavailable, "task engine is not running")
		return
	}
	rec, err := s.tasks.Task(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// decode reads one JSON object from a bounded body.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBodyBytes)))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body exceeds %d bytes", ErrTooLarge, s.cfg.MaxBodyBytes)
		}
		return fmt.Errorf("%w: invalid JSON body: %w", ErrBadRequest, err)
	}
	return nil
}

// fail answers err with the status code of its class.
func (s *Server) fail(w http.ResponseWriter, err error) {
	code := StatusCode(err, s.cfg.Classify)
	// 507 is not logged per request: a full disk refuses every write, and
	// the store logs that once per interval.
	if code >= 500 && code != http.StatusInsufficientStorage {
		s.log.Warn("api request failed", "status", code, "err", err)
	}
	writeError(w, code, err.Error())
}

// StatusCode maps an error to its HTTP status: the one place where error
// classes become status codes.
func StatusCode(err error, classify func(error) error) int {
	if classify != nil {
		if c := classify(err); c != nil {
			err = c
		}
	}
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, storage.ErrValueTooLarge), errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, storage.ErrInvalidKey), errors.Is(err, storage.ErrInvalidConsistency), errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, storage.ErrInsufficientStorage):
		return http.StatusInsufficientStorage
	case errors.Is(err, ErrPeerUnavailable):
		return http.StatusBadGateway
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, storage.ErrClosed), errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Error: strings.TrimSpace(msg)})
}
