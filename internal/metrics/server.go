package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/httplimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
	"golang.org/x/time/rate"
)

// ServerConfig configures the metrics HTTP server.
type ServerConfig struct {
	// Listen is the host:port to bind (port 0 picks a free port).
	Listen string
	// Path serves the metrics (default /metrics).
	Path string
	// WebConfigFile enables TLS, mTLS and basic auth in the exporter-toolkit format.
	WebConfigFile string
	// MaxRequestsInFlight bounds concurrent scrapes (beyond: 503).
	MaxRequestsInFlight int
	// RateLimit is the sustained scrape rate per second (beyond: 429); 0 disables it.
	RateLimit float64
	// Timeout bounds one scrape (default 10s).
	Timeout time.Duration
	// AuthFailureRate is the sustained rate per second of requests carrying
	// basic-auth credentials not yet seen to be valid; they are limited before
	// the (bcrypt) password check so wrong guesses stay cheap. 0 takes the
	// default of 1; negative disables the limit.
	AuthFailureRate float64
	// BodyTimeout and MinBodyRate cut slow request bodies (defaults of
	// package httplimit).
	BodyTimeout time.Duration
	MinBodyRate int64
	// MaxConnections caps open connections (default 64).
	MaxConnections int
	// MaxConnectionsPerClient caps the open connections of one client (a
	// source IPv4 address or IPv6 /64); 0 sets no per-client cap.
	MaxConnectionsPerClient int
	// ConnRefused, when set, counts a connection closed at accept, by the
	// limit that refused it (httplimit.RefusedMax, RefusedPerClient).
	ConnRefused func(reason string)
	// ShutdownGrace is how long Shutdown waits for scrapes in flight before
	// closing what remains (default 2s).
	ShutdownGrace time.Duration
	// Logger receives server logs.
	Logger *slog.Logger
	// SD, when set, serves GET /sd (Prometheus HTTP service discovery)
	// behind the same TLS, auth and rate limit as the metrics.
	SD SDSource
}

// Defaults of the metrics listener limits.
const (
	DefaultMaxConnections  = 64
	DefaultAuthFailureRate = 1.0
	authFailureBurst       = 5
)

// Server exposes one node's registry on /metrics beside /healthz and /readyz.
type Server struct {
	cfg   ServerConfig
	http  *http.Server
	ln    net.Listener
	tls   bool // the web config enables TLS
	ready func() bool
	log   *slog.Logger

	serveWG sync.WaitGroup
	errc    chan error
}

// NewServer builds (but does not start) the metrics server for reg. ready
// reports whether the node is active; /readyz answers 200 only when it does.
func NewServer(reg *prometheus.Registry, ready func() bool, cfg ServerConfig) *Server {
	if cfg.Path == "" {
		cfg.Path = "/metrics"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AuthFailureRate == 0 {
		cfg.AuthFailureRate = DefaultAuthFailureRate
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = httplimit.DefaultBodyTimeout
	}
	if cfg.MinBodyRate <= 0 {
		cfg.MinBodyRate = httplimit.DefaultMinBodyRate
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = httplimit.DefaultShutdownGrace
	}
	s := &Server{cfg: cfg, ready: ready, log: cfg.Logger, errc: make(chan error, 1)}

	// The scrape timeout is promhttp's own (http.TimeoutHandler, with its
	// message), but applied around the compression rather than inside it:
	// TimeoutHandler buffers the whole answer, and buffering the ≈9 KB
	// compressed instead of the ≈65 KB of text saves a large allocation and
	// a copy per scrape.
	metricsHandler := promhttp.InstrumentMetricHandler(reg, http.TimeoutHandler(gzipped(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg, // counts promhttp_metric_handler_errors_total
		MaxRequestsInFlight: cfg.MaxRequestsInFlight,
		EnableOpenMetrics:   true,
		DisableCompression:  true, // gzipped compresses, at BestSpeed
	})), cfg.Timeout, fmt.Sprintf("Exceeded configured timeout of %v.\n", cfg.Timeout)))

	mux := http.NewServeMux()
	mux.Handle(cfg.Path, rateLimit(metricsHandler, cfg.RateLimit))
	if cfg.SD != nil {
		mux.Handle("/sd", rateLimit(sdHandler(cfg.SD), cfg.RateLimit))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.ready != nil && !s.ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<html><head><title>p2p-agent</title></head><body><h1>p2p-agent</h1><p><a href=%q>Metrics</a> &middot; <a href=\"/healthz\">healthz</a> &middot; <a href=\"/readyz\">readyz</a></p></body></html>\n", cfg.Path)
	})

	s.http = &http.Server{
		Handler: httplimit.SlowBody(mux, httplimit.BodyLimits{
			Timeout: cfg.BodyTimeout, MinRate: cfg.MinBodyRate, Grace: httplimit.DefaultBodyGrace,
		}),
		ReadHeaderTimeout: httplimit.DefaultReadHeaderTimeout,
		// Bounds what escapes SlowBody: web.Serve's auth refuses before it.
		ReadTimeout:  10 * time.Second,
		WriteTimeout: cfg.Timeout + 5*time.Second,
		IdleTimeout:  httplimit.DefaultIdleTimeout,
		ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// rateLimit answers 429 with Retry-After once the token bucket of perSecond
// (burst of one second's worth) is empty. perSecond <= 0 disables it.
func rateLimit(next http.Handler, perSecond float64) http.Handler {
	if perSecond <= 0 {
		return next
	}
	burst := int(math.Ceil(perSecond))
	lim := rate.NewLimiter(rate.Limit(perSecond), burst)
	retry := strconv.Itoa(int(math.Max(1, math.Ceil(1/perSecond))))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !lim.Allow() {
			w.Header().Set("Retry-After", retry)
			http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Start binds the listener and serves in the background. A bind error is
// returned at once; TLS and basic auth come from WebConfigFile, validated here
// so that a bad file stops the start instead of failing the first scrape.
func (s *Server) Start() error {
	if s.cfg.WebConfigFile != "" {
		if err := web.Validate(s.cfg.WebConfigFile); err != nil {
			return fmt.Errorf("metrics.web_config_file %s: %w", s.cfg.WebConfigFile, err)
		}
		tlsOn, err := webConfigHasTLS(s.cfg.WebConfigFile)
		if err != nil {
			return fmt.Errorf("metrics.web_config_file %s: %w", s.cfg.WebConfigFile, err)
		}
		s.tls = tlsOn
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	webCfg := s.cfg.WebConfigFile
	flags := &web.FlagConfig{
		WebListenAddresses: &[]string{ln.Addr().String()},
		WebSystemdSocket:   new(bool),
		WebConfigFile:      &webCfg,
	}
	var served net.Listener = httplimit.LimitConns(ln, httplimit.ConnLimits{
		Max: s.cfg.MaxConnections, PerClient: s.cfg.MaxConnectionsPerClient, Refused: s.cfg.ConnRefused,
	})
	if s.cfg.WebConfigFile != "" && s.cfg.AuthFailureRate > 0 {
		g := newAuthGuard(s.cfg.AuthFailureRate)
		s.http.Handler = g.protect(s.http.Handler)
		// web.Serve wraps s.http.Handler with its basic-auth check (bcrypt).
		// The failed-auth limiter must run before it, so it wraps the
		// handler web.Serve installed, on the serving goroutine before the
		// first connection is accepted (hence before any handler runs).
		served = &onFirstAccept{Listener: served, fn: func() {
			g.next = s.http.Handler
			s.http.Handler = g
		}}
	}
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		err := web.Serve(served, s.http, flags, s.log)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server stopped", "err", err)
			s.errc <- err
		}
	}()
	return nil
}

// Err delivers a fatal serving error, if one happens after Start.
func (s *Server) Err() <-chan error { return s.errc }

// Addr is the bound address (valid after Start).
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// URL is the metrics URL an operator would scrape (valid after Start).
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	return scheme + "://" + displayAddr(s.ln.Addr().String()) + s.cfg.Path
}

// TLS reports whether the web config enables TLS (valid after Start).
func (s *Server) TLS() bool { return s.tls }

// Path is the metrics path.
func (s *Server) Path() string { return s.cfg.Path }

// displayAddr turns a wildcard bind address into one a person can open.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// Shutdown stops accepting scrapes, waits for those in flight for the
// shutdown grace (or until ctx ends) and then closes what remains.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	err := httplimit.Shutdown(ctx, s.http, s.cfg.ShutdownGrace)
	s.serveWG.Wait()
	return err
}

// webConfigHasTLS reports whether an exporter-toolkit web config enables TLS
// (a tls_server_config with a certificate), as opposed to basic auth alone.
func webConfigHasTLS(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var c struct {
		TLS struct {
			CertFile string `yaml:"cert_file"`
			Cert     string `yaml:"cert"`
		} `yaml:"tls_server_config"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return false, err
	}
	return c.TLS.CertFile != "" || c.TLS.Cert != "", nil
}
