package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/identity"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// DrainTimeout bounds how long Shutdown waits for work in flight.
const DrainTimeout = 10 * time.Second

// ErrStoreClose marks a Shutdown whose store did not close cleanly (its
// final sync failed, or it had refused writes after a failed one):
// acknowledged writes may be missing, so the process must not report a
// clean stop.
var ErrStoreClose = errors.New("store did not close cleanly")

// Node is one running p2p-agent: every subsystem, built and owned here.
type Node struct {
	cfg     *config.Config
	version string
	log     *slog.Logger
	state   stateBox
	started time.Time

	priv   crypto.PrivKey
	peerID peer.ID

	reg     *prometheus.Registry
	sampler *metrics.Sampler
	store   storage.Store // instrumented, validated backend
	backend string

	host    *p2p.Host
	service *message.Service
	tasks   *task.Engine
	tracing *tracing.Tracing
	fleet   *fleetState

	metricsSrv *metrics.Server
	apiSrv     *api.Server

	stopOnce sync.Once
	stopErr  error
	cancel   context.CancelFunc

	// dir is the locked data directory; failed makes closing it remove what
	// this start created (a new identity, a new store, the directory).
	dir             *dataDir
	failed          atomic.Bool
	createdIdentity bool
}

// New builds a node from a validated configuration: data dir lock, identity,
// registry, store, p2p host, message service, task engine and servers.
// Nothing listens until Start. On error everything already opened is closed
// and what this start created is removed; an existing identity is never
// written. A data dir locked by another process fails with ErrDataDirInUse.
func New(ctx context.Context, cfg *config.Config, version string, log *slog.Logger) (n *Node, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n = &Node{cfg: cfg, version: version, log: log}
	n.state.Store(Initializing)
	// The error paths return (nil, err), so the clean-up keeps its own
	// reference to the half-built node instead of reading the named result.
	built := n
	defer func() {
		if err != nil {
			built.failed.Store(true)
			built.closeAll(context.Background())
		}
	}()

	// Locked before anything is created in it, so that a second node on the
	// same directory stops here with nothing to undo.
	if n.dir, err = claimDataDir(cfg.Node.DataDir, log); err != nil {
		return nil, err
	}
	priv, id, created, err := identity.LoadOrCreate(cfg.IdentityPath())
	if err != nil {
		return nil, err
	}
	n.priv, n.peerID = priv, id
	if created {
		// Logged once the node has started: a failed start removes it again.
		n.dir.didCreate(cfg.IdentityPath())
		n.createdIdentity = true
	}

	n.reg = metrics.NewRegistry(version, id.String())
	n.sampler = metrics.NewSampler(n.reg, cfg.Metrics.SampleInterval, log)
	if n.tracing, err = tracing.New(tracing.Config{
		SampleRatio: cfg.Tracing.SampleRatio, MaxSpans: cfg.Tracing.MaxSpans, Retention: cfg.Tracing.Retention,
		OTLPEndpoint: cfg.Tracing.OTLPEndpoint, RemoteRate: cfg.Tracing.RemoteRate, Node: cfg.Node.Name, PeerID: id.String(), Version: version,
	}); err != nil {
		return nil, err
	}

	if err := n.openStore(ctx); err != nil {
		return nil, err
	}

	// The host announces the task types (task.BuiltinTypes, those the
	// engine executes) from its first identify, so the engine can come after
	// the host and the message service and get its transport at construction.
	n.host, err = p2p.NewHost(ctx, priv, p2p.HostConfig{
		ListenAddrs:  cfg.P2P.Listen,
		Bootstrap:    cfg.P2P.Bootstrap,
		MDNS:         cfg.P2P.MDNS,
		Registerer:   n.reg,
		Logger:       log,
		UserAgent:    "p2p-agent/" + version,
		Capabilities: task.BuiltinTypes(),
	})
	if err != nil {
		return nil, fmt.Errorf("starting p2p host: %w", err)
	}
	metrics.RegisterPeers(n.reg, n.host.ConnectedPeers)

	msgMetrics := metrics.NewMessages(n.reg, message.MetricLabels())
	n.service = message.NewService(n.host.Libp2p(), msgMetrics, message.ServiceConfig{
		MaxMessageBytes:    cfg.P2P.MaxMessageBytes,
		MaxInflightBytes:   cfg.P2P.MaxInflightBytes,
		MaxHandlersPerPeer: cfg.P2P.MaxHandlersPerPeer,
		Tracing:            n.tracing,
		Logger:             log,
	})

	taskMetrics := metrics.NewTasks(n.reg, task.MetricLabels())
	n.tasks = task.NewEngine(n.store, taskMetrics, p2p.NewTaskTransport(n.host, n.service), id, task.Options{
		Timeout:               cfg.Task.Timeout,
		Logger:                log.With("component", "tasks"),
		MaxConcurrent:         cfg.Task.MaxConcurrent,
		MaxConcurrentSearches: cfg.Task.MaxConcurrentSearches,
		MaxQueued:             cmp.Or(cfg.Task.MaxQueued, -1), // 0 in the config: no queue
		MaxMessageBytes:       cfg.P2P.MaxMessageBytes,
		MaxValueBytes:         cfg.Storage.MaxValueBytes,
		Retention:             cfg.Task.Retention,
		MaxRecords:            cfg.Task.MaxRecords,
		Tracing:               n.tracing,
	})
	n.service.Handle(message.TypeTaskRequest, p2p.TaskHandler(n.tasks))
	n.service.Handle(tracing.TypeGet, traceHandler(n.tracing.Store(), cfg.P2P.MaxMessageBytes))
	n.fleet = newFleetState(n, msgMetrics, taskMetrics)
	if err := n.fleet.start(ctx); err != nil {
		return nil, err
	}
	// tasks this node was running when it last stopped will never finish
	if k, err := n.tasks.Recover(ctx); err != nil {
		log.Warn("recovering interrupted tasks", "err", err)
	} else if k > 0 {
		log.Info("marked interrupted tasks as failed", "count", k)
	}

	refusals := metrics.NewConnRefusals(n.reg)
	if cfg.Metrics.Enabled {
		n.metricsSrv = metrics.NewServer(n.reg, n.Ready, metrics.ServerConfig{
			Listen:                  cfg.Metrics.Listen,
			Path:                    cfg.Metrics.Path,
			WebConfigFile:           cfg.Metrics.WebConfigFile,
			MaxRequestsInFlight:     cfg.Metrics.MaxRequestsInFlight,
			RateLimit:               cfg.Metrics.RateLimit,
			AuthFailureRate:         authFailureRate(cfg.Metrics.AuthFailureRate),
			MaxConnections:          cfg.Metrics.MaxConnections,
			MaxConnectionsPerClient: cfg.Metrics.MaxConnectionsPerClient,
			ConnRefused:             refusals.For("metrics"),
			ShutdownGrace:           cfg.API.ShutdownGrace,
			BodyTimeout:             cfg.API.BodyTimeout,
			MinBodyRate:             int64(cfg.API.MinBodyRate),
			Logger:                  log.With("component", "metrics"),
			SD:                      n.fleet.sd,
		})
	}
	n.apiSrv = api.NewServer(api.ServerConfig{
		Listen:        cfg.API.Listen,
		Token:         cfg.API.Token,
		MaxValueBytes: cfg.Storage.MaxValueBytes,
		MaxBodyBytes:  cfg.P2P.MaxMessageBytes,
		Logger:        log.With("component", "api"),
		Tracing:       n.tracing,
		Limits: api.Limits{
			ReadHeaderTimeout:    cfg.API.ReadHeaderTimeout,
			BodyTimeout:          cfg.API.BodyTimeout,
			MinBodyRate:          int64(cfg.API.MinBodyRate),
			MaxConnections:       cfg.API.MaxConnections,
			ConnRefused:          refusals.For("api"),
			MaxBodyBytesInFlight: int64(cfg.API.MaxBodyBytesInFlight),
			ShutdownGrace:        cfg.API.ShutdownGrace,
		},
	}, api.Deps{
		Status:    n,
		Store:     n.store,
		Peers:     n.host,
		Pinger:    p2p.NewPinger(n.host, n.service),
		Tasks:     n.tasks,
		Traces:    n.Trace,
		Stats:     func() (metrics.Snapshot, error) { return metrics.TakeSnapshot(n.reg) },
		Network:   n.fleet.network,
		Accepting: n.Ready,
	})
	return n, nil
}

// authFailureRate maps metrics.auth_failure_rate (0 = unlimited) onto
// metrics.ServerConfig.AuthFailureRate (negative = unlimited).
func authFailureRate(r float64) float64 {
	if r == 0 {
		return -1
	}
	return r
}

// Start opens the listeners and the sampler and moves the node to active.
// On error the caller calls Shutdown, which closes what New opened and, the
// start having failed, removes what New created.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			n.failed.Store(true)
		}
	}()
	n.started = time.Now()
	sctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.sampler.Start(sctx)
	if n.metricsSrv != nil {
		if err := n.metricsSrv.Start(); err != nil {
			return err
		}
	} else {
		n.log.Info("Metrics endpoint disabled")
	}
	if err := n.apiSrv.Start(); err != nil {
		return err
	}
	n.state.Store(Active)
	if n.createdIdentity {
		n.log.Info("created node identity", "path", n.cfg.IdentityPath(), "peer_id", n.peerID.String())
	}
	n.log.Info("node started",
		"peer_id", n.peerID.String(),
		"name", n.cfg.Node.Name,
		"p2p_addrs", n.host.Addrs(),
		"metrics_url", n.MetricsURL(),
		"api_url", n.APIURL(),
		"storage_backend", n.backend,
		"duration_clock", metrics.ClockSource(),
		"version", n.version,
	)
	return nil
}

// Ready reports whether the node is active (what /readyz answers).
func (n *Node) Ready() bool { return n.state.Load() == Active }

// State returns the current lifecycle state.
func (n *Node) State() State { return n.state.Load() }

// PeerID is the node's libp2p identity.
func (n *Node) PeerID() peer.ID { return n.peerID }

// Registry is the node's own metrics registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Store is the node's instrumented store.
func (n *Node) Store() storage.Store { return n.store }

// Host is the node's p2p host.
func (n *Node) Host() *p2p.Host { return n.host }

// Service is the node's message service.
func (n *Node) Service() *message.Service { return n.service }

// Tasks is the node's task engine.
func (n *Node) Tasks() *task.Engine { return n.tasks }

// MetricsAddr is the bound metrics address, or nil when metrics are disabled.
func (n *Node) MetricsAddr() net.Addr {
	if n.metricsSrv == nil {
		return nil
	}
	return n.metricsSrv.Addr()
}

// MetricsURL is the URL to scrape, or "" when metrics are disabled.
func (n *Node) MetricsURL() string {
	if n.metricsSrv == nil {
		return ""
	}
	return n.metricsSrv.URL()
}

// APIAddr is the bound control API address.
func (n *Node) APIAddr() net.Addr { return n.apiSrv.Addr() }

// APIURL is the control API's base URL.
func (n *Node) APIURL() string {
	if a := n.apiSrv.Addr(); a != nil {
		return "http://" + a.String()
	}
	return ""
}

// Status reports the node's status for the control API.
func (n *Node) Status() api.Status {
	up := time.Duration(0)
	if !n.started.IsZero() {
		up = time.Since(n.started)
	}
	st := api.Status{
		PeerID:         n.peerID.String(),
		Name:           n.cfg.Node.Name,
		State:          n.State().String(),
		Version:        n.version,
		StartedAt:      n.started,
		UptimeSeconds:  up.Seconds(),
		Uptime:         up.Round(time.Second).String(),
		StorageBackend: n.backend,
		MetricsURL:     n.MetricsURL(),
		APIURL:         n.APIURL(),
	}
	if n.host != nil {
		st.Addresses = n.host.Addrs()
		st.Peers = n.host.ConnectedPeers()
	}
	return st
}

// Shutdown stops taking new work, drains what is in flight (bounded by ctx
// and DrainTimeout), then closes the servers, the p2p host and the store.
// It is safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		n.state.Store(Stopping)
		n.log.Info("node stopping", "drain_timeout", DrainTimeout.String())
		dctx, cancel := context.WithTimeout(ctx, DrainTimeout)
		defer cancel()
		n.stopErr = n.closeAll(dctx)
		n.state.Store(Stopped)
		n.log.Info("node stopped")
	})
	return n.stopErr
}

// closeAll closes whatever has been opened, in reverse dependency order.
func (n *Node) closeAll(ctx context.Context) error {
	var errs []error
	if n.apiSrv != nil {
		errs = append(errs, n.apiSrv.Shutdown(ctx))
	}
	if n.tasks != nil {
		errs = append(errs, n.tasks.Close(ctx))
	}
	n.fleet.close()
	if n.service != nil {
		errs = append(errs, n.service.Shutdown(ctx))
	}
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	if n.metricsSrv != nil {
		errs = append(errs, n.metricsSrv.Shutdown(ctx))
	}
	if n.sampler != nil {
		n.sampler.Stop()
	}
	if n.cancel != nil {
		n.cancel()
	}
	if n.store != nil {
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrStoreClose, err))
		}
	}
	// Last spans (the stop itself) go to the collector, if any.
	errs = append(errs, n.tracing.Shutdown(ctx))
	if n.dir != nil {
		errs = append(errs, n.dir.release(n.failed.Load()))
	}
	return errors.Join(errs...)
}

// Err delivers a fatal error of a running subsystem (the metrics listener).
func (n *Node) Err() <-chan error {
	if n.metricsSrv == nil {
		return nil
	}
	return n.metricsSrv.Err()
}
