package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/httplimit"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
	"github.com/p2p-ai-agents/p2p-agent/internal/ui"
)

// Errors of the API's own request parsing; statusOf maps them with the
// sentinels of the packages it serves.
var (
	// errBadRequest marks an invalid request (400).
	errBadRequest = errors.New("bad request")
	// errTooLarge marks a request body over its limit (413).
	errTooLarge = errors.New("too large")
)

// StatusSource reports the node's status.
type StatusSource interface {
	Status() Status
}

// Peers is what the API needs of the p2p host (*p2p.Host): the connected
// peers, and the resolution of a peer named by ID or multiaddr.
type Peers interface {
	Peers() []p2p.PeerInfo
	Resolve(ctx context.Context, target string) (peer.ID, error)
}

// Pinger pings a peer named by ID or multiaddr count times (*p2p.Pinger).
type Pinger interface {
	Ping(ctx context.Context, target string, count int) (p2p.PingStats, error)
}

// Tasks is what the API needs of the task engine (*task.Engine).
type Tasks interface {
	Submit(ctx context.Context, req task.SubmitRequest) (task.Record, error)
	Get(ctx context.Context, id string) (task.Record, error)
}

// Deps are the parts of the node the API serves. Status is required; a nil
// Store, Peers, Pinger or Tasks (a node without that subsystem) makes the
// routes that need it answer 503.
type Deps struct {
	Status StatusSource
	Store  storage.Store
	Peers  Peers
	Pinger Pinger
	Tasks  Tasks
	// Traces assembles traces for GET /api/v1/traces/{id}.
	Traces TraceSource
	// Stats reads the node's counters for GET /api/v1/stats.
	Stats StatsSource
	// Network builds GET /api/v1/network (the mesh as the node sees it).
	Network NetworkSource
	// Accepting reports whether the node takes new work; while it returns
	// false, every route but status answers 503 (the node is starting or
	// draining). Nil means always.
	Accepting func() bool
}

// ServerConfig configures the control API server.
type ServerConfig struct {
	Listen        string
	Token         string
	MaxValueBytes int
	// MaxBodyBytes bounds JSON request bodies (task input); default 1 MiB.
	MaxBodyBytes int
	Logger       *slog.Logger
	// Limits bounds slow and greedy clients (zero fields take the defaults
	// of package httplimit).
	Limits Limits
	// Tracing traces sampled requests (a span "api" per request, child of a
	// sampled traceparent header); nil traces nothing.
	Tracing *tracing.Tracing
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
	// ConnRefused, when set, counts a connection closed at accept
	// (httplimit.RefusedMax).
	ConnRefused func(reason string)
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
	deps    Deps
	log     *slog.Logger
	http    *http.Server
	budget  *httplimit.Budget
	ln      net.Listener
	serveWG sync.WaitGroup
}

// NewServer builds the control API over deps.
func NewServer(cfg ServerConfig, deps Deps) *Server {
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
	s := &Server{cfg: cfg, deps: deps, log: cfg.Logger}
	store, peers, pinger, tasks, traces, stats := deps.Store != nil, deps.Peers != nil, deps.Pinger != nil, deps.Tasks != nil, deps.Traces != nil, deps.Stats != nil
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status", s.handleStatus)
	mux.HandleFunc("GET /api/v1/peers", s.work(peers, "p2p", s.handlePeers))
	mux.HandleFunc("GET /api/v1/kv", s.work(store, "storage", s.handleKVList))
	mux.HandleFunc("GET /api/v1/kv/{key...}", s.work(store, "storage", s.handleKVGet))
	mux.HandleFunc("PUT /api/v1/kv/{key...}", s.work(store, "storage", s.handleKVPut))
	mux.HandleFunc("DELETE /api/v1/kv/{key...}", s.work(store, "storage", s.handleKVDelete))
	mux.HandleFunc("POST /api/v1/ping", s.work(pinger, "p2p", s.handlePing))
	mux.HandleFunc("POST /api/v1/tasks", s.work(tasks, "task engine", s.handleTaskSubmit))
	mux.HandleFunc("GET /api/v1/tasks/{id}", s.work(tasks, "task engine", s.handleTaskGet))
	mux.HandleFunc("GET /api/v1/traces/{id}", s.work(traces, "tracing", s.handleTrace))
	mux.HandleFunc("GET /api/v1/stats", s.work(stats, "metrics", s.handleStats))
	mux.HandleFunc("GET /api/v1/network", s.work(deps.Network != nil, "p2p", s.handleNetwork))
	mux.Handle("GET /ui/", ui.Handler("/ui/"))
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
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
		if err := s.http.Serve(httplimit.LimitConns(ln, httplimit.ConnLimits{Max: s.cfg.Limits.MaxConnections, Refused: s.cfg.Limits.ConnRefused})); err != nil && !errors.Is(err, http.ErrServerClosed) {
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
		// The web view's assets hold no data; the page asks for the token
		// and sends it with every data request.
		if r.Method == http.MethodGet && (r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/")) {
			next.ServeHTTP(w, r)
			return
		}
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="p2p-agent"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// work refuses new work while the node is not accepting it, and answers
// 503 when the subsystem the route needs (what) is not running.
func (s *Server) work(running bool, what string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.deps.Accepting != nil && !s.deps.Accepting() {
			writeError(w, http.StatusServiceUnavailable, "node is not active (starting or draining)")
			return
		}
		if !running {
			writeError(w, http.StatusServiceUnavailable, what+" is not running")
			return
		}
		s.traced(w, r, h)
	}
}
