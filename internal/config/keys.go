package config

import (
	"strings"
	"time"
)

// EnvPrefix starts the name of every configuration environment variable.
const EnvPrefix = "P2P_AGENT_"

// envAPI is the CLI's --api default (P2P_AGENT_API), not a configuration key; Load
// ignores it rather than rejecting it as unknown.
const envAPI = EnvPrefix + "API"

// Value types of keys, as reported in KeyInfo.Type.
const (
	TypeString   = "string"
	TypeList     = "list"
	TypeBool     = "bool"
	TypeInt      = "int"
	TypeFloat    = "float"
	TypeDuration = "duration"
)

// KeyInfo describes one configuration key, for documentation and for the CLI, which
// registers one --<key> flag per entry.
type KeyInfo struct {
	// Key is the dotted name, e.g. "storage.redis.addrs"; it is also the file path.
	Key string
	// Default is the default in env/flag syntax (lists comma separated); empty for
	// node.name (the host name) and storage.local.path (<data_dir>/store).
	Default string
	// Env is the environment variable, e.g. "P2P_AGENT_STORAGE_REDIS_ADDRS".
	Env string
	// Flag is the command-line flag, e.g. "--storage.redis.addrs".
	Flag string
	// Type is one of TypeString, TypeList, TypeBool, TypeInt, TypeFloat, TypeDuration.
	Type string
	// Secret marks values that are never echoed in errors or logs.
	Secret bool
	// Description says what the key is for, in one sentence.
	Description string
}

// keyDef is one row of the key table: the key, its documentation and where its value
// lives in a Config. field returns a pointer to that field, whose type decides how raw
// values are parsed.
type keyDef struct {
	key    string
	def    string
	desc   string
	secret bool
	path   bool // "~" is expanded
	field  func(c *Config) any
}

// keyTable is the single list of configuration keys; Keys, Load and the docs derive
// from it. Order is the order of the documentation.
var keyTable = []keyDef{
	{key: "node.data_dir", def: "~/.p2p-agent", path: true,
		desc:  "Directory for the identity key and the local store.",
		field: func(c *Config) any { return &c.Node.DataDir }},
	{key: "node.name", def: "",
		desc:  "Human-readable node name; empty means the host name.",
		field: func(c *Config) any { return &c.Node.Name }},
	{key: "log.level", def: "info",
		desc:  "Log level: debug, info, warn or error.",
		field: func(c *Config) any { return &c.Log.Level }},
	{key: "log.format", def: "json",
		desc:  "Log format: json or text.",
		field: func(c *Config) any { return &c.Log.Format }},
	{key: "p2p.listen", def: "/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1",
		desc:  "Multiaddrs the libp2p host listens on (at least one).",
		field: func(c *Config) any { return &c.P2P.Listen }},
	{key: "p2p.bootstrap", def: "",
		desc:  "Peers to dial at start, each a multiaddr ending in /p2p/<peer id>.",
		field: func(c *Config) any { return &c.P2P.Bootstrap }},
	{key: "p2p.mdns", def: "true",
		desc:  "Discover peers on the local network with mDNS.",
		field: func(c *Config) any { return &c.P2P.MDNS }},
	{key: "p2p.max_message_bytes", def: "1048576",
		desc:  "Largest message frame accepted from a peer, in bytes (1024 to 1073741824).",
		field: func(c *Config) any { return &c.P2P.MaxMessageBytes }},
	{key: "p2p.max_inflight_bytes", def: "67108864",
		desc:  "Bytes of inbound request frames held by running handlers, across all peers; beyond it requests get the error code busy at once.",
		field: func(c *Config) any { return &c.P2P.MaxInflightBytes }},
	{key: "p2p.max_handlers_per_peer", def: "64",
		desc:  "Inbound requests of one peer handled at once, across its streams; beyond it the peer gets the error code busy.",
		field: func(c *Config) any { return &c.P2P.MaxHandlersPerPeer }},
	{key: "p2p.peer_ttl", def: "1m",
		desc:  "A node that has not answered this node's info queries for this long leaves /sd and the network view (1s to 24h).",
		field: func(c *Config) any { return &c.P2P.PeerTTL }},
	{key: "storage.backend", def: "local",
		desc:  "Key-value backend: local (embedded) or redis.",
		field: func(c *Config) any { return &c.Storage.Backend }},
	{key: "storage.max_value_bytes", def: "8388608",
		desc:  "Largest value a put accepts, in bytes (1 to 1073741824).",
		field: func(c *Config) any { return &c.Storage.MaxValueBytes }},
	{key: "storage.local.path", def: "", path: true,
		desc:  "Directory of the local store; empty means <data_dir>/store.",
		field: func(c *Config) any { return &c.Storage.Local.Path }},
	{key: "storage.local.min_free_bytes", def: "67108864",
		desc:  "Free-space reserve of the local store, in bytes: a put that would leave less free on its filesystem is refused with 507 (deletes are still accepted); half of it, at most 32 MiB, is held in the ballast file <store>/BALLAST, freed if the disk fills anyway; 0 disables both.",
		field: func(c *Config) any { return &c.Storage.Local.MinFreeBytes }},
	{key: "storage.redis.addrs", def: "127.0.0.1:6379",
		desc:  "Redis host:port addresses; more than one means Redis Cluster.",
		field: func(c *Config) any { return &c.Storage.Redis.Addrs }},
	{key: "storage.redis.url", def: "", secret: true,
		desc:  "redis:// or rediss:// URL of a standalone server; when set it overrides storage.redis.addrs.",
		field: func(c *Config) any { return &c.Storage.Redis.URL }},
	{key: "storage.redis.key_prefix", def: "p2p-agent:",
		desc:  "Prefix of every key the node stores in Redis.",
		field: func(c *Config) any { return &c.Storage.Redis.KeyPrefix }},
	{key: "storage.redis.password", def: "", secret: true,
		desc:  "Redis password; empty means none.",
		field: func(c *Config) any { return &c.Storage.Redis.Password }},
	{key: "storage.redis.pool_size", def: "0",
		desc:  "Connection pool size; 0 means the client library default.",
		field: func(c *Config) any { return &c.Storage.Redis.PoolSize }},
	{key: "storage.redis.dial_timeout", def: "5s",
		desc:  "Timeout for connecting to Redis.",
		field: func(c *Config) any { return &c.Storage.Redis.DialTimeout }},
	{key: "storage.redis.read_timeout", def: "3s",
		desc:  "Timeout for reading a Redis reply.",
		field: func(c *Config) any { return &c.Storage.Redis.ReadTimeout }},
	{key: "storage.redis.write_timeout", def: "3s",
		desc:  "Timeout for writing a Redis command.",
		field: func(c *Config) any { return &c.Storage.Redis.WriteTimeout }},
	{key: "storage.redis.max_retries", def: "3",
		desc:  "Retries of a failed Redis command by go-redis (0 to 100; in a cluster, MOVED/ASK redirects count).",
		field: func(c *Config) any { return &c.Storage.Redis.MaxRetries }},
	{key: "storage.redis.retry_backoff", def: "50ms",
		desc:  "Least pause before a retry; go-redis draws the pause before retry k from [retry_backoff, retry_backoff·(1+2^k)), at most 1s.",
		field: func(c *Config) any { return &c.Storage.Redis.RetryBackoff }},
	{key: "storage.redis.min_replicas", def: "0",
		desc:  "Replicas a Strong write waits for (WAIT); 0 disables waiting.",
		field: func(c *Config) any { return &c.Storage.Redis.MinReplicas }},
	{key: "metrics.enabled", def: "true",
		desc:  "Serve Prometheus metrics; when false no listener is opened.",
		field: func(c *Config) any { return &c.Metrics.Enabled }},
	{key: "metrics.listen", def: ":8080",
		desc:  "host:port of the metrics server; empty host means all interfaces, port 0 a free port.",
		field: func(c *Config) any { return &c.Metrics.Listen }},
	{key: "metrics.path", def: "/metrics",
		desc:  "HTTP path of the metrics; /healthz and /readyz are reserved.",
		field: func(c *Config) any { return &c.Metrics.Path }},
	{key: "metrics.web_config_file", def: "", path: true,
		desc:  "exporter-toolkit web config file (TLS, mTLS, basic auth); empty means plain HTTP.",
		field: func(c *Config) any { return &c.Metrics.WebConfigFile }},
	{key: "metrics.advertise_url", def: "",
		desc:  "Metrics URL this node tells its peers (and /sd) to scrape; empty derives it from metrics.listen, metrics.path and the address peers reach the node on (https when the web config enables TLS).",
		field: func(c *Config) any { return &c.Metrics.AdvertiseURL }},
	{key: "metrics.max_requests_in_flight", def: "10",
		desc:  "Concurrent metrics requests served; at least 1.",
		field: func(c *Config) any { return &c.Metrics.MaxRequestsInFlight }},
	{key: "metrics.rate_limit", def: "20",
		desc:  "Metrics requests per second before answering 429; 0 means unlimited.",
		field: func(c *Config) any { return &c.Metrics.RateLimit }},
	{key: "metrics.auth_failure_rate", def: "1",
		desc:  "Requests per second (burst 5) with basic-auth credentials not yet seen valid, limited before the bcrypt check; 0 means unlimited.",
		field: func(c *Config) any { return &c.Metrics.AuthFailureRate }},
	{key: "metrics.max_connections", def: "64",
		desc:  "Open connections to the metrics listener; excess ones are closed at accept. At least 1.",
		field: func(c *Config) any { return &c.Metrics.MaxConnections }},
	{key: "metrics.max_connections_per_client", def: "16",
		desc:  "Open connections to the metrics listener from one client (an IPv4 address or an IPv6 /64), so that one host cannot take them all; excess ones are closed at accept. 0, or a value at or above metrics.max_connections, means no per-client cap.",
		field: func(c *Config) any { return &c.Metrics.MaxConnectionsPerClient }},
	{key: "metrics.sample_interval", def: "5s",
		desc:  "Interval of CPU and memory sampling.",
		field: func(c *Config) any { return &c.Metrics.SampleInterval }},
	{key: "api.listen", def: "127.0.0.1:7070",
		desc:  "host:port of the control API the CLI talks to; port 0 means a free port.",
		field: func(c *Config) any { return &c.API.Listen }},
	{key: "api.token", def: "", secret: true,
		desc:  "Bearer token required by the control API when set.",
		field: func(c *Config) any { return &c.API.Token }},
	{key: "api.read_header_timeout", def: "5s",
		desc:  "Time a client has to send the request headers to the control API.",
		field: func(c *Config) any { return &c.API.ReadHeaderTimeout }},
	{key: "api.body_timeout", def: "60s",
		desc:  "Longest a request body may take in total; slower uploads are cut (also on the metrics listener).",
		field: func(c *Config) any { return &c.API.BodyTimeout }},
	{key: "api.min_body_rate", def: "4096",
		desc:  "Floor rate of a request body in bytes per second after a 2 s grace; slower bodies are cut (also on the metrics listener).",
		field: func(c *Config) any { return &c.API.MinBodyRate }},
	{key: "api.max_connections", def: "256",
		desc:  "Open connections to the control API; excess ones are closed at accept. At least 1.",
		field: func(c *Config) any { return &c.API.MaxConnections }},
	{key: "api.max_body_bytes_in_flight", def: "33554432",
		desc:  "Request-body bytes the control API holds at once (by Content-Length); beyond, 503 with Retry-After. At least storage.max_value_bytes.",
		field: func(c *Config) any { return &c.API.MaxBodyBytesInFlight }},
	{key: "api.shutdown_grace", def: "2s",
		desc:  "At shutdown, how long requests in flight on both listeners may finish before their connections are closed.",
		field: func(c *Config) any { return &c.API.ShutdownGrace }},
	{key: "task.timeout", def: "30s",
		desc:  "Time limit of each attempt of a task, whether it runs on a remote peer or on this node; the task fails with code timeout when it is exceeded.",
		field: func(c *Config) any { return &c.Task.Timeout }},
	{key: "task.max_concurrent", def: "4",
		desc:  "Tasks executing at once on this node (local and for peers); more wait in the queue.",
		field: func(c *Config) any { return &c.Task.MaxConcurrent }},
	{key: "task.max_concurrent_searches", def: "2",
		desc:  "index.search scans running at once on this node; more wait for a slot (memory per scan is bounded).",
		field: func(c *Config) any { return &c.Task.MaxConcurrentSearches }},
	{key: "task.max_queued", def: "64",
		desc:  "Tasks waiting for an execution slot; beyond it requests are refused at once with code busy. One peer may hold at most half of running plus queued.",
		field: func(c *Config) any { return &c.Task.MaxQueued }},
	{key: "task.retention", def: "168h",
		desc:  "How long task records are kept after they were created; older ones are removed in the background.",
		field: func(c *Config) any { return &c.Task.Retention }},
	{key: "task.max_records", def: "100000",
		desc:  "Most task records kept; the oldest beyond it are removed in the background.",
		field: func(c *Config) any { return &c.Task.MaxRecords }},
	{key: "tracing.sample_ratio", def: "0.01",
		desc:  "Share of new traces (API requests, task submissions) that are sampled, 0 to 1; task submit --trace and a sampled traceparent header always are.",
		field: func(c *Config) any { return &c.Tracing.SampleRatio }},
	{key: "tracing.max_spans", def: "100000",
		desc:  "Most finished spans this node keeps for trace queries; whole traces are dropped oldest first beyond it.",
		field: func(c *Config) any { return &c.Tracing.MaxSpans }},
	{key: "tracing.retention", def: "48h",
		desc:  "How long this node keeps its finished spans.",
		field: func(c *Config) any { return &c.Tracing.Retention }},
	{key: "tracing.remote_rate", def: "10",
		desc:  "Messages per second one peer may have traced here by sending a sampled trace context (bursts of 10x); beyond it they are handled untraced.",
		field: func(c *Config) any { return &c.Tracing.RemoteRate }},
	{key: "tracing.otlp_endpoint", def: "",
		desc:  "OTLP/HTTP collector to export spans to as well (http://host:4318; /v1/traces is added when the URL has no path); empty exports nothing.",
		field: func(c *Config) any { return &c.Tracing.OTLPEndpoint }},
}

// Indexes derived from keyTable. sections holds every proper prefix of a key
// ("storage", "storage.redis"), the mappings a file may contain.
var keyIndex, envIndex, sections = buildIndexes()

func buildIndexes() (byKey, byEnv map[string]*keyDef, sects map[string]bool) {
	byKey, byEnv, sects = map[string]*keyDef{}, map[string]*keyDef{}, map[string]bool{}
	for i := range keyTable {
		d := &keyTable[i]
		byKey[d.key] = d
		byEnv[envName(d.key)] = d
		parts := strings.Split(d.key, ".")
		for j := 1; j < len(parts); j++ {
			sects[strings.Join(parts[:j], ".")] = true
		}
	}
	return byKey, byEnv, sects
}

// envName is the environment variable of a key.
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// typeOf names the value type of a key from the Go type of its field.
func (d *keyDef) typeOf() string {
	switch d.field(&Config{}).(type) {
	case *[]string:
		return TypeList
	case *bool:
		return TypeBool
	case *int:
		return TypeInt
	case *float64:
		return TypeFloat
	case *time.Duration:
		return TypeDuration
	default:
		return TypeString
	}
}

// Keys lists every configuration key in documentation order.
func Keys() []KeyInfo {
	out := make([]KeyInfo, 0, len(keyTable))
	for i := range keyTable {
		d := &keyTable[i]
		out = append(out, KeyInfo{
			Key:         d.key,
			Default:     d.def,
			Env:         envName(d.key),
			Flag:        "--" + d.key,
			Type:        d.typeOf(),
			Secret:      d.secret,
			Description: d.desc,
		})
	}
	return out
}
