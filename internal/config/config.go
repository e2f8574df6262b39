// Package config holds the node's configuration: the typed Config, its defaults, the
// list of keys, and Load, which merges a YAML file, the environment and command-line
// flags (precedence flag > env > file > default) and validates the result before
// anything starts.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Storage backends accepted by storage.backend.
const (
	BackendLocal = "local"
	BackendRedis = "redis"
)

// Backends returns the storage backends accepted by storage.backend: the
// closed set of the backend label of the storage metrics.
func Backends() []string { return []string{BackendLocal, BackendRedis} }

// Log formats accepted by log.format.
const (
	LogFormatJSON = "json"
	LogFormatText = "text"
)

// Config is the complete, validated configuration of a node. Its yaml tags are the
// keys of the configuration file, so a marshalled Config is itself a valid file.
type Config struct {
	Node    NodeConfig    `yaml:"node"`
	Log     LogConfig     `yaml:"log"`
	P2P     P2PConfig     `yaml:"p2p"`
	Storage StorageConfig `yaml:"storage"`
	Metrics MetricsConfig `yaml:"metrics"`
	API     APIConfig     `yaml:"api"`
	Task    TaskConfig    `yaml:"task"`
	Tracing TracingConfig `yaml:"tracing"`
}

// NodeConfig is the node section: where the node keeps its state and what it is called.
type NodeConfig struct {
	// DataDir holds the identity key and the local store; "~" is expanded by Load.
	DataDir string `yaml:"data_dir"`
	// Name is a human-readable node name; empty means the host name.
	Name string `yaml:"name"`
}

// LogConfig is the log section.
type LogConfig struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is json or text (the two slog handlers).
	Format string `yaml:"format"`
}

// P2PConfig is the p2p section: the libp2p host and peer discovery.
type P2PConfig struct {
	// Listen are the multiaddrs the host listens on; at least one is required.
	Listen []string `yaml:"listen"`
	// Bootstrap are peers dialled at start, each a multiaddr ending in /p2p/<peer id>.
	Bootstrap []string `yaml:"bootstrap"`
	// MDNS enables local-network discovery.
	MDNS bool `yaml:"mdns"`
	// MaxMessageBytes is the largest frame accepted from a peer.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxInflightBytes bounds the inbound request bytes held by handlers.
	MaxInflightBytes int `yaml:"max_inflight_bytes"`
	// MaxHandlersPerPeer bounds the inbound requests of one peer handled at once.
	MaxHandlersPerPeer int `yaml:"max_handlers_per_peer"`
	// PeerTTL is how long a node unseen stays in /sd and the network view.
	PeerTTL time.Duration `yaml:"peer_ttl"`
}

// StorageConfig is the storage section.
type StorageConfig struct {
	// Backend is BackendLocal or BackendRedis.
	Backend string `yaml:"backend"`
	// MaxValueBytes is the largest value a Put accepts.
	MaxValueBytes int `yaml:"max_value_bytes"`
	// Local configures the embedded store.
	Local LocalConfig `yaml:"local"`
	// Redis configures the Redis backend.
	Redis RedisConfig `yaml:"redis"`
}

// LocalConfig configures the embedded local store.
type LocalConfig struct {
	// Path of the store directory; empty means <data_dir>/store (see Config.StorePath).
	Path string `yaml:"path"`
	// MinFreeBytes is the free-space reserve: puts that would leave less free
	// on the store's filesystem are refused; 0 disables the check.
	MinFreeBytes int `yaml:"min_free_bytes"`
}

// RedisConfig configures the Redis backend. URL, when set, replaces Addrs.
type RedisConfig struct {
	// Addrs are host:port addresses; more than one means Redis Cluster. Load empties
	// it when URL is set.
	Addrs []string `yaml:"addrs"`
	// URL is a redis:// or rediss:// URL of a standalone server; when set it
	// overrides Addrs.
	URL string `yaml:"url"`
	// KeyPrefix is prepended to every key the node stores.
	KeyPrefix string `yaml:"key_prefix"`
	// Password authenticates to Redis; empty means none.
	Password string `yaml:"password"`
	// PoolSize is the connection pool size per node; 0 means the client library default.
	PoolSize int `yaml:"pool_size"`
	// DialTimeout bounds establishing a connection.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReadTimeout bounds reading a reply.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing a command.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxRetries is how often go-redis retries a failed command.
	MaxRetries int `yaml:"max_retries"`
	// RetryBackoff is the least pause before a retry; go-redis draws the
	// pause before retry k from [RetryBackoff, RetryBackoff·(1+2^k)), at most 1s.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// MinReplicas is how many replicas a Strong write waits for (WAIT); 0 disables it.
	MinReplicas int `yaml:"min_replicas"`
}

// MetricsConfig is the metrics section: the Prometheus endpoint and the process sampler.
type MetricsConfig struct {
	// Enabled starts the metrics server; when false no listener is opened.
	Enabled bool `yaml:"enabled"`
	// Listen is the host:port of the metrics server; the host may be empty (all
	// interfaces) and port 0 picks a free port.
	Listen string `yaml:"listen"`
	// Path serves the metrics; /healthz and /readyz are reserved.
	Path string `yaml:"path"`
	// WebConfigFile is an exporter-toolkit web config (TLS, mTLS, basic auth); empty
	// means plain HTTP.
	WebConfigFile string `yaml:"web_config_file"`
	// AdvertiseURL is the metrics URL told to peers; empty derives it.
	AdvertiseURL string `yaml:"advertise_url"`
	// MaxRequestsInFlight limits concurrent scrapes.
	MaxRequestsInFlight int `yaml:"max_requests_in_flight"`
	// RateLimit is the number of requests per second served before answering 429;
	// 0 means unlimited.
	RateLimit float64 `yaml:"rate_limit"`
	// AuthFailureRate limits requests with unverified basic-auth credentials
	// before the bcrypt check; 0 means unlimited.
	AuthFailureRate float64 `yaml:"auth_failure_rate"`
	// MaxConnections caps open connections to the metrics listener.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerClient caps the open connections of one client (an
	// IPv4 address or an IPv6 /64) to the metrics listener; 0: no cap.
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
	// SampleInterval is how often CPU and memory usage are sampled.
	SampleInterval time.Duration `yaml:"sample_interval"`
}

// APIConfig is the api section: the local control API the CLI talks to.
type APIConfig struct {
	// Listen is the host:port of the control API; port 0 picks a free port.
	Listen string `yaml:"listen"`
	// Token, when set, is the bearer token every request must carry.
	Token string `yaml:"token"`
	// ReadHeaderTimeout bounds reading request headers.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// BodyTimeout bounds reading one request body (both listeners).
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// MinBodyRate is the floor body rate in bytes per second (both listeners).
	MinBodyRate int `yaml:"min_body_rate"`
	// MaxConnections caps open connections to the control API.
	MaxConnections int `yaml:"max_connections"`
	// MaxBodyBytesInFlight bounds request-body bytes held at once.
	MaxBodyBytesInFlight int `yaml:"max_body_bytes_in_flight"`
	// ShutdownGrace is how long requests in flight may finish at shutdown.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// TracingConfig is the tracing section (DESIGN.md section 10).
type TracingConfig struct {
	// SampleRatio is the share of new traces that are sampled.
	SampleRatio float64 `yaml:"sample_ratio"`
	// MaxSpans bounds the finished spans kept by this node.
	MaxSpans int `yaml:"max_spans"`
	// Retention is how long finished spans are kept.
	Retention time.Duration `yaml:"retention"`
	// RemoteRate bounds, per peer and per second, the messages whose trace
	// context this node honours.
	RemoteRate float64 `yaml:"remote_rate"`
	// OTLPEndpoint is an OTLP/HTTP collector URL; empty exports nothing.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
}

// TaskConfig is the task section.
type TaskConfig struct {
	// Timeout bounds each attempt of a task, remote or local.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConcurrent bounds the tasks executing at once.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxConcurrentSearches bounds the index.search scans running at once.
	MaxConcurrentSearches int `yaml:"max_concurrent_searches"`
	// MaxQueued bounds the tasks waiting for a slot; beyond, busy.
	MaxQueued int `yaml:"max_queued"`
	// Retention is how long task records are kept.
	Retention time.Duration `yaml:"retention"`
	// MaxRecords bounds the task records kept.
	MaxRecords int `yaml:"max_records"`
}

// Default returns the built-in defaults: the def of every key of the key table,
// parsed by the same code as a value from a file, the environment or a flag. node.data_dir
// is expanded to the user's home directory and node.name set to the host name where
// they can be determined.
func Default() *Config {
	c := &Config{}
	for i := range keyTable {
		d := &keyTable[i]
		if fe := apply(c, setting{def: d, raw: d.def, source: "default"}); fe != nil {
			if !d.path {
				panic(fmt.Sprintf("config: default of %s: %v", d.key, fe))
			}
			// no home directory: keep "~" for Load to report
			*d.field(c).(*string) = d.def
		}
	}
	c.Node.Name = hostname()
	return c
}

// hostname is the default node name; a node must have some name even where the
// operating system will not say.
func hostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "p2p-agent"
}

// StorePath is the directory of the local store: storage.local.path, or
// <data_dir>/store when that is empty.
func (c *Config) StorePath() string {
	if c.Storage.Local.Path != "" {
		return c.Storage.Local.Path
	}
	return filepath.Join(c.Node.DataDir, "store")
}

// IdentityPath is the file holding the node's private key: <data_dir>/identity.key.
func (c *Config) IdentityPath() string {
	return filepath.Join(c.Node.DataDir, "identity.key")
}

// ListenAddrs parses p2p.listen. It cannot fail on a Config returned by Load.
func (c *Config) ListenAddrs() ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(c.P2P.Listen))
	for _, s := range c.P2P.Listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p.listen %q: %w", s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// BootstrapPeers parses p2p.bootstrap, merging addresses of the same peer. It cannot
// fail on a Config returned by Load.
func (c *Config) BootstrapPeers() ([]peer.AddrInfo, error) {
	addrs := make([]ma.Multiaddr, 0, len(c.P2P.Bootstrap))
	for _, s := range c.P2P.Bootstrap {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("p2p.bootstrap %q: %w", s, err)
		}
		addrs = append(addrs, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, fmt.Errorf("p2p.bootstrap: %w", err)
	}
	return infos, nil
}

// SlogLevel is log.level as a slog.Level; an unknown level (impossible after
// validation) is treated as info.
func (l LogConfig) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Redacted returns a deep copy of c with secrets (the Redis password, the password in
// the Redis URL, the API token) masked, fit for logging or printing.
func (c *Config) Redacted() *Config {
	r := *c
	r.P2P.Listen = append([]string(nil), c.P2P.Listen...)
	r.P2P.Bootstrap = append([]string(nil), c.P2P.Bootstrap...)
	r.Storage.Redis.Addrs = append([]string(nil), c.Storage.Redis.Addrs...)
	if r.Storage.Redis.Password != "" {
		r.Storage.Redis.Password = redactedMark
	}
	if r.API.Token != "" {
		r.API.Token = redactedMark
	}
	r.Storage.Redis.URL = redactURL(r.Storage.Redis.URL)
	return &r
}

// redactedMark replaces secret values in output.
const redactedMark = "xxxxx"

// redactURL masks the password of a URL, also when the URL does not parse, by hiding
// everything between the scheme and the last '@'.
func redactURL(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := strings.Index(s, "://")
	if start < 0 || start > at {
		return redactedMark + s[at:]
	}
	start += len("://")
	user := s[start:at]
	if i := strings.Index(user, ":"); i >= 0 {
		return s[:start] + user[:i+1] + redactedMark + s[at:]
	}
	// A lone userinfo in a redis URL is the password (redis://secret@host).
	return s[:start] + redactedMark + s[at:]
}

// expandHome replaces a leading "~" or "~/" with the user's home directory. Other
// forms ("~user") are left alone.
func expandHome(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") && !strings.HasPrefix(p, "~"+string(filepath.Separator)) {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("expanding ~: %w", err)
	}
	return filepath.Join(home, p[1:]), nil
}
