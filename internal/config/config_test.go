package config

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.yaml.in/yaml/v3"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// writeFile writes content to a fresh file in a test directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newPeerID returns a fresh, valid peer ID.
func newPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustLoad(t *testing.T, opts LoadOptions) *Config {
	t.Helper()
	c, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestLoadDefaults(t *testing.T) {
	c := mustLoad(t, LoadOptions{})
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("Load with no sources differs from Default():\n got %+v\nwant %+v", c, Default())
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skip("no home directory")
	}
	host, _ := os.Hostname()
	checks := []struct {
		key       string
		got, want any
	}{
		{"node.data_dir", c.Node.DataDir, filepath.Join(home, ".p2p-agent")},
		{"node.name", c.Node.Name, host},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		{"p2p.listen", c.P2P.Listen, []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}},
		{"p2p.bootstrap", c.P2P.Bootstrap, []string{}},
		{"p2p.mdns", c.P2P.MDNS, true},
		{"p2p.max_message_bytes", c.P2P.MaxMessageBytes, 1048576},
		{"p2p.max_inflight_bytes", c.P2P.MaxInflightBytes, 67108864},
		{"p2p.max_handlers_per_peer", c.P2P.MaxHandlersPerPeer, 64},
		{"p2p.peer_ttl", c.P2P.PeerTTL, time.Minute},
		{"storage.backend", c.Storage.Backend, "local"},
		{"storage.local.path", c.Storage.Local.Path, ""},
		{"storage.local.min_free_bytes", c.Storage.Local.MinFreeBytes, 67108864},
		{"storage.redis.addrs", c.Storage.Redis.Addrs, []string{"127.0.0.1:6379"}},
		{"storage.redis.url", c.Storage.Redis.URL, ""},
		{"storage.redis.key_prefix", c.Storage.Redis.KeyPrefix, "p2p-agent:"},
		{"storage.redis.password", c.Storage.Redis.Password, ""},
		{"storage.redis.pool_size", c.Storage.Redis.PoolSize, 0},
		{"storage.redis.dial_timeout", c.Storage.Redis.DialTimeout, 5 * time.Second},
		{"storage.redis.read_timeout", c.Storage.Redis.ReadTimeout, 3 * time.Second},
		{"storage.redis.write_timeout", c.Storage.Redis.WriteTimeout, 3 * time.Second},
		{"storage.redis.max_retries", c.Storage.Redis.MaxRetries, 3},
		{"storage.redis.retry_backoff", c.Storage.Redis.RetryBackoff, 50 * time.Millisecond},
		{"storage.redis.min_replicas", c.Storage.Redis.MinReplicas, 0},
		{"storage.max_value_bytes", c.Storage.MaxValueBytes, 8388608},
		{"metrics.enabled", c.Metrics.Enabled, true},
		{"metrics.listen", c.Metrics.Listen, ":8080"},
		{"metrics.path", c.Metrics.Path, "/metrics"},
		{"metrics.web_config_file", c.Metrics.WebConfigFile, ""},
		{"metrics.advertise_url", c.Metrics.AdvertiseURL, ""},
		{"metrics.max_requests_in_flight", c.Metrics.MaxRequestsInFlight, 10},
		{"metrics.rate_limit", c.Metrics.RateLimit, 20.0},
		{"metrics.auth_failure_rate", c.Metrics.AuthFailureRate, 1.0},
		{"metrics.max_connections", c.Metrics.MaxConnections, 64},
		{"metrics.max_connections_per_client", c.Metrics.MaxConnectionsPerClient, 16},
		{"metrics.sample_interval", c.Metrics.SampleInterval, 5 * time.Second},
		{"api.listen", c.API.Listen, "127.0.0.1:7070"},
		{"api.token", c.API.Token, ""},
		{"api.read_header_timeout", c.API.ReadHeaderTimeout, 5 * time.Second},
		{"api.body_timeout", c.API.BodyTimeout, 60 * time.Second},
		{"api.min_body_rate", c.API.MinBodyRate, 4096},
		{"api.max_connections", c.API.MaxConnections, 256},
		{"api.max_body_bytes_in_flight", c.API.MaxBodyBytesInFlight, 33554432},
		{"api.shutdown_grace", c.API.ShutdownGrace, 2 * time.Second},
		{"task.timeout", c.Task.Timeout, 30 * time.Second},
		{"task.max_concurrent", c.Task.MaxConcurrent, 4},
		{"task.max_concurrent_searches", c.Task.MaxConcurrentSearches, 2},
		{"task.max_queued", c.Task.MaxQueued, 64},
		{"task.retention", c.Task.Retention, 168 * time.Hour},
		{"task.max_records", c.Task.MaxRecords, 100000},
		{"tracing.sample_ratio", c.Tracing.SampleRatio, 0.01},
		{"tracing.remote_rate", c.Tracing.RemoteRate, 10.0},
		{"tracing.max_spans", c.Tracing.MaxSpans, 100000},
		{"tracing.retention", c.Tracing.Retention, 48 * time.Hour},
		{"tracing.otlp_endpoint", c.Tracing.OTLPEndpoint, ""},
	}
	if len(checks) != len(keyTable) {
		t.Errorf("checked %d defaults, there are %d keys", len(checks), len(keyTable))
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.key, ch.got, ch.want)
		}
	}
	if got, want := c.StorePath(), filepath.Join(home, ".p2p-agent", "store"); got != want {
		t.Errorf("StorePath() = %q, want %q", got, want)
	}
	if got, want := c.IdentityPath(), filepath.Join(home, ".p2p-agent", "identity.key"); got != want {
		t.Errorf("IdentityPath() = %q, want %q", got, want)
	}
}

// TestKeysDefaultsRoundTrip feeds every documented default back as a flag: the result
// must be the built-in defaults, so Keys() cannot drift from Default().
func TestKeysDefaultsRoundTrip(t *testing.T) {
	flags := map[string]string{}
	for _, k := range Keys() {
		flags[k.Key] = k.Default
	}
	if got := mustLoad(t, LoadOptions{Flags: flags}); !reflect.DeepEqual(got, Default()) {
		t.Fatalf("defaults from Keys() differ from Default():\n got %+v\nwant %+v", got, Default())
	}
}

// TestDefaultValues pins the built-in defaults, which Default() derives from the
// key table: a changed def is a changed contract.
func TestDefaultValues(t *testing.T) {
	want := &Config{
		Node: NodeConfig{DataDir: "~/.p2p-agent"},
		Log:  LogConfig{Level: "info", Format: LogFormatJSON},
		P2P: P2PConfig{
			Listen:             []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
			Bootstrap:          []string{},
			MDNS:               true,
			MaxMessageBytes:    1 << 20,
			MaxInflightBytes:   64 << 20,
			MaxHandlersPerPeer: 64,
			PeerTTL:            time.Minute,
		},
		Storage: StorageConfig{
			Backend:       BackendLocal,
			MaxValueBytes: 8 << 20,
			Local:         LocalConfig{MinFreeBytes: 64 << 20},
			Redis: RedisConfig{
				Addrs:        []string{"127.0.0.1:6379"},
				KeyPrefix:    "p2p-agent:",
				DialTimeout:  5 * time.Second,
				ReadTimeout:  3 * time.Second,
				WriteTimeout: 3 * time.Second,
				MaxRetries:   3,
				RetryBackoff: 50 * time.Millisecond,
			},
		},
		Metrics: MetricsConfig{
			Enabled:                 true,
			Listen:                  ":8080",
			Path:                    "/metrics",
			MaxRequestsInFlight:     10,
			RateLimit:               20,
			AuthFailureRate:         1,
			MaxConnections:          64,
			MaxConnectionsPerClient: 16,
			SampleInterval:          5 * time.Second,
		},
		API: APIConfig{Listen: "127.0.0.1:7070", ReadHeaderTimeout: 5 * time.Second, BodyTimeout: 60 * time.Second,
			MinBodyRate: 4096, MaxConnections: 256, MaxBodyBytesInFlight: 32 << 20, ShutdownGrace: 2 * time.Second},
		Task:    TaskConfig{Timeout: 30 * time.Second, MaxConcurrent: 4, MaxConcurrentSearches: 2, MaxQueued: 64, Retention: 168 * time.Hour, MaxRecords: 100000},
		Tracing: TracingConfig{SampleRatio: 0.01, MaxSpans: 100000, Retention: 48 * time.Hour, RemoteRate: 10},
	}
	want.Node.DataDir = Default().Node.DataDir
	want.Node.Name = hostname()
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Default():\n got %+v\nwant %+v", got, want)
	}
}

// TestMarshalRoundTrip checks the yaml tags: a marshalled Config is a valid file that
// loads back to the same Config.
func TestMarshalRoundTrip(t *testing.T) {
	want := Default()
	want.Storage.Backend = BackendRedis
	want.Storage.Redis.Addrs = []string{"10.0.0.1:7000", "10.0.0.2:7000"}
	want.Metrics.RateLimit = 2.5
	want.Task.Timeout = 90 * time.Second
	out, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got := mustLoad(t, LoadOptions{File: writeFile(t, "c.yaml", string(out))})
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip through YAML:\n got %+v\nwant %+v\nfile:\n%s", got, want, out)
	}
}

func TestPrecedence(t *testing.T) {
	file := `
log:
  level: warn
p2p:
  max_message_bytes: 2048
  listen: [/ip4/127.0.0.1/tcp/1]
storage:
  redis:
    dial_timeout: 7s
metrics:
  enabled: false
`
	type source struct {
		file  bool
		env   []string
		flags map[string]string
	}
	tests := []struct {
		name string
		src  source
		get  func(*Config) any
		want any
	}{
		{"level default only", source{}, func(c *Config) any { return c.Log.Level }, "info"},
		{"level file only", source{file: true}, func(c *Config) any { return c.Log.Level }, "warn"},
		{"level env over file", source{true, []string{"P2P_AGENT_LOG_LEVEL=error"}, nil}, func(c *Config) any { return c.Log.Level }, "error"},
		{"level flag over env over file", source{true, []string{"P2P_AGENT_LOG_LEVEL=error"}, map[string]string{"log.level": "debug"}}, func(c *Config) any { return c.Log.Level }, "debug"},
		{"level env without file", source{false, []string{"P2P_AGENT_LOG_LEVEL=error"}, nil}, func(c *Config) any { return c.Log.Level }, "error"},

		{"int default only", source{}, func(c *Config) any { return c.P2P.MaxMessageBytes }, 1048576},
		{"int file only", source{file: true}, func(c *Config) any { return c.P2P.MaxMessageBytes }, 2048},
		{"int env over file", source{true, []string{"P2P_AGENT_P2P_MAX_MESSAGE_BYTES=4096"}, nil}, func(c *Config) any { return c.P2P.MaxMessageBytes }, 4096},
		{"int flag over env over file", source{true, []string{"P2P_AGENT_P2P_MAX_MESSAGE_BYTES=4096"}, map[string]string{"p2p.max_message_bytes": "8192"}}, func(c *Config) any { return c.P2P.MaxMessageBytes }, 8192},

		{"duration default only", source{}, func(c *Config) any { return c.Storage.Redis.DialTimeout }, 5 * time.Second},
		{"duration file only", source{file: true}, func(c *Config) any { return c.Storage.Redis.DialTimeout }, 7 * time.Second},
		{"duration env over file", source{true, []string{"P2P_AGENT_STORAGE_REDIS_DIAL_TIMEOUT=1m"}, nil}, func(c *Config) any { return c.Storage.Redis.DialTimeout }, time.Minute},
		{"duration flag over env over file", source{true, []string{"P2P_AGENT_STORAGE_REDIS_DIAL_TIMEOUT=1m"}, map[string]string{"storage.redis.dial_timeout": "250ms"}}, func(c *Config) any { return c.Storage.Redis.DialTimeout }, 250 * time.Millisecond},

		{"bool default only", source{}, func(c *Config) any { return c.Metrics.Enabled }, true},
		{"bool file only", source{file: true}, func(c *Config) any { return c.Metrics.Enabled }, false},
		{"bool env over file", source{true, []string{"P2P_AGENT_METRICS_ENABLED=yes"}, nil}, func(c *Config) any { return c.Metrics.Enabled }, true},
		{"bool flag over env over file", source{true, []string{"P2P_AGENT_METRICS_ENABLED=yes"}, map[string]string{"metrics.enabled": "0"}}, func(c *Config) any { return c.Metrics.Enabled }, false},

		{"list default only", source{}, func(c *Config) any { return c.P2P.Listen }, []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}},
		{"list file only", source{file: true}, func(c *Config) any { return c.P2P.Listen }, []string{"/ip4/127.0.0.1/tcp/1"}},
		{"list env over file", source{true, []string{"P2P_AGENT_P2P_LISTEN=/ip4/127.0.0.1/tcp/2"}, nil}, func(c *Config) any { return c.P2P.Listen }, []string{"/ip4/127.0.0.1/tcp/2"}},
		{"list flag over env over file", source{true, []string{"P2P_AGENT_P2P_LISTEN=/ip4/127.0.0.1/tcp/2"}, map[string]string{"p2p.listen": "/ip4/127.0.0.1/tcp/3"}}, func(c *Config) any { return c.P2P.Listen }, []string{"/ip4/127.0.0.1/tcp/3"}},
	}
	path := writeFile(t, "config.yaml", file)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := LoadOptions{Env: tt.src.env, Flags: tt.src.flags}
			if tt.src.file {
				opts.File = path
			}
			c := mustLoad(t, opts)
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestDataDirDerivedPaths(t *testing.T) {
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skip("no home directory")
	}
	tests := []struct {
		name                string
		opts                LoadOptions
		dataDir, store, key string
	}{
		{"flag data dir", LoadOptions{Flags: map[string]string{"node.data_dir": "/srv/agent"}},
			"/srv/agent", "/srv/agent/store", "/srv/agent/identity.key"},
		{"tilde expanded", LoadOptions{Env: []string{"P2P_AGENT_NODE_DATA_DIR=~/agent"}},
			filepath.Join(home, "agent"), filepath.Join(home, "agent", "store"), filepath.Join(home, "agent", "identity.key")},
		{"explicit store path with tilde", LoadOptions{Flags: map[string]string{"node.data_dir": "/srv/a", "storage.local.path": "~/pebble"}},
			"/srv/a", filepath.Join(home, "pebble"), "/srv/a/identity.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.opts)
			if c.Node.DataDir != tt.dataDir || c.StorePath() != tt.store || c.IdentityPath() != tt.key {
				t.Fatalf("data_dir %q store %q identity %q; want %q %q %q",
					c.Node.DataDir, c.StorePath(), c.IdentityPath(), tt.dataDir, tt.store, tt.key)
			}
		})
	}
}

func TestListsFromEachSource(t *testing.T) {
	id1, id2 := newPeerID(t), newPeerID(t)
	b1 := "/ip4/10.0.0.1/tcp/4001/p2p/" + id1.String()
	b2 := "/dns4/boot.example.org/udp/4001/quic-v1/p2p/" + id2.String()
	tests := []struct {
		name string
		opts LoadOptions
		get  func(*Config) []string
		want []string
	}{
		{"bootstrap file sequence", LoadOptions{File: writeFile(t, "a.yaml", "p2p:\n  bootstrap:\n    - "+b1+"\n    - "+b2+"\n")},
			func(c *Config) []string { return c.P2P.Bootstrap }, []string{b1, b2}},
		{"bootstrap file flow sequence", LoadOptions{File: writeFile(t, "b.yaml", "p2p: {bootstrap: ["+b1+"]}\n")},
			func(c *Config) []string { return c.P2P.Bootstrap }, []string{b1}},
		{"bootstrap file scalar is comma separated", LoadOptions{File: writeFile(t, "c.yaml", "p2p:\n  bootstrap: "+b1+","+b2+"\n")},
			func(c *Config) []string { return c.P2P.Bootstrap }, []string{b1, b2}},
		{"bootstrap file empty", LoadOptions{File: writeFile(t, "d.yaml", "p2p:\n  bootstrap: []\n")},
			func(c *Config) []string { return c.P2P.Bootstrap }, []string{}},
		{"bootstrap file null", LoadOptions{File: writeFile(t, "e.yaml", "p2p:\n  bootstrap:\n")},
			func(c *Config) []string { return c.P2P.Bootstrap }, []string{}},
		{"bootstrap env", LoadOptions{Env: []string{"P2P_AGENT_P2P_BOOTSTRAP=" + b1 + " , " + b2}},
			func(c *Config) []string { return c.P2P.Bootstrap }, []string{b1, b2}},
		{"bootstrap flag", LoadOptions{Flags: map[string]string{"p2p.bootstrap": b2 + "," + b1}},
			func(c *Config) []string { return c.P2P.Bootstrap }, []string{b2, b1}},
		{"addrs file", LoadOptions{File: writeFile(t, "f.yaml", "storage:\n  redis:\n    addrs: [\"a:7000\", \"b:7001\", \"[::1]:7002\"]\n")},
			func(c *Config) []string { return c.Storage.Redis.Addrs }, []string{"a:7000", "b:7001", "[::1]:7002"}},
		{"addrs env", LoadOptions{Env: []string{"P2P_AGENT_STORAGE_REDIS_ADDRS=a:7000,b:7001,,"}},
			func(c *Config) []string { return c.Storage.Redis.Addrs }, []string{"a:7000", "b:7001"}},
		{"addrs flag", LoadOptions{Flags: map[string]string{"storage.redis.addrs": "redis-1:6379"}},
			func(c *Config) []string { return c.Storage.Redis.Addrs }, []string{"redis-1:6379"}},
		{"addrs env emptied", LoadOptions{Env: []string{"P2P_AGENT_STORAGE_REDIS_ADDRS="}},
			func(c *Config) []string { return c.Storage.Redis.Addrs }, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.opts)
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}

	c := mustLoad(t, LoadOptions{Flags: map[string]string{"p2p.bootstrap": b1 + "," + b2 + ",/ip4/10.0.0.9/tcp/1/p2p/" + id1.String()}})
	infos, err := c.BootstrapPeers()
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[peer.ID]int{}
	for _, in := range infos {
		addrs[in.ID] = len(in.Addrs)
	}
	if len(infos) != 2 || addrs[id1] != 2 || addrs[id2] != 1 {
		t.Fatalf("BootstrapPeers = %v, want 2 peers with 2 and 1 addresses", infos)
	}
	listen, err := c.ListenAddrs()
	if err != nil || len(listen) != 2 {
		t.Fatalf("ListenAddrs = %v, %v", listen, err)
	}
}

func TestScalarParsing(t *testing.T) {
	tests := []struct {
		name string
		opts LoadOptions
		get  func(*Config) any
		want any
	}{
		{"bool yes", LoadOptions{Flags: map[string]string{"p2p.mdns": "yes"}}, func(c *Config) any { return c.P2P.MDNS }, true},
		{"bool NO", LoadOptions{Flags: map[string]string{"p2p.mdns": "NO"}}, func(c *Config) any { return c.P2P.MDNS }, false},
		{"bool 1", LoadOptions{Env: []string{"P2P_AGENT_P2P_MDNS=1"}}, func(c *Config) any { return c.P2P.MDNS }, true},
		{"bool yaml no", LoadOptions{File: writeFile(t, "a.yaml", "p2p:\n  mdns: no\n")}, func(c *Config) any { return c.P2P.MDNS }, false},
		{"float", LoadOptions{Flags: map[string]string{"metrics.rate_limit": "0.5"}}, func(c *Config) any { return c.Metrics.RateLimit }, 0.5},
		{"float zero", LoadOptions{Flags: map[string]string{"metrics.rate_limit": "0"}}, func(c *Config) any { return c.Metrics.RateLimit }, 0.0},
		{"int min_replicas env", LoadOptions{Env: []string{"P2P_AGENT_STORAGE_REDIS_MIN_REPLICAS=2"}}, func(c *Config) any { return c.Storage.Redis.MinReplicas }, 2},
		{"name keeps spaces", LoadOptions{Flags: map[string]string{"node.name": "lab pi"}}, func(c *Config) any { return c.Node.Name }, "lab pi"},
		{"quoted yaml string", LoadOptions{File: writeFile(t, "b.yaml", "storage:\n  redis:\n    key_prefix: \"app:\"\n")}, func(c *Config) any { return c.Storage.Redis.KeyPrefix }, "app:"},
		{"yaml anchor", LoadOptions{File: writeFile(t, "c.yaml", "storage:\n  redis:\n    read_timeout: &t 2s\n    write_timeout: *t\n")}, func(c *Config) any { return c.Storage.Redis.WriteTimeout }, 2 * time.Second},
		{"flag with dashes", LoadOptions{Flags: map[string]string{"--log.format": "text"}}, func(c *Config) any { return c.Log.Format }, "text"},
		{"empty file", LoadOptions{File: writeFile(t, "d.yaml", "# nothing\n")}, func(c *Config) any { return c.Log.Level }, "info"},
		{"empty section", LoadOptions{File: writeFile(t, "e.yaml", "metrics:\n")}, func(c *Config) any { return c.Metrics.Enabled }, true},
		{"port zero", LoadOptions{Flags: map[string]string{"metrics.listen": "127.0.0.1:0", "api.listen": "127.0.0.1:0"}}, func(c *Config) any { return c.API.Listen }, "127.0.0.1:0"},
		{"redis url", LoadOptions{Flags: map[string]string{"storage.backend": "redis", "storage.redis.url": "rediss://u:p@redis.example:6380/2?dial_timeout=2s", "storage.redis.addrs": ""}},
			func(c *Config) any { return c.Storage.Redis.URL }, "rediss://u:p@redis.example:6380/2?dial_timeout=2s"},
		{"redis url overrides addrs", LoadOptions{Flags: map[string]string{"storage.redis.url": "redis://h:6379"}},
			func(c *Config) any { return c.Storage.Redis.Addrs }, []string{}},
		{"metrics disabled may share api port", LoadOptions{Flags: map[string]string{"metrics.enabled": "false", "metrics.listen": ":7070"}},
			func(c *Config) any { return c.Metrics.Enabled }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.opts)
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestIgnoredEnvironment(t *testing.T) {
	c := mustLoad(t, LoadOptions{Env: []string{
		"P2P_AGENT_API=127.0.0.1:9999", // the CLI's --api default
		"PATH=/usr/bin",
		"HOME=/root",
		"P2P_AGENTX=1",
		"NOEQUALS",
	}})
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("non-configuration environment changed the config: %+v", c)
	}
}

// validWebConfig writes a TLS web config with a fresh self-signed certificate.
func validWebConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	testenv.WriteSelfSigned(t, dir, "cert.pem", "key.pem")
	p := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(p, []byte("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWebConfigFile(t *testing.T) {
	p := validWebConfig(t)
	c := mustLoad(t, LoadOptions{Flags: map[string]string{"metrics.web_config_file": p}})
	if c.Metrics.WebConfigFile != p {
		t.Fatalf("web_config_file = %q, want %q", c.Metrics.WebConfigFile, p)
	}
}

func TestValidationErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing-web.yml")
	badWeb := writeFile(t, "bad-web.yml", "tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.pem\n")
	typoWeb := writeFile(t, "typo-web.yml", "tls_server_confg: {}\n")
	id := newPeerID(t).String()

	flag := func(k, v string) LoadOptions { return LoadOptions{Flags: map[string]string{k: v}} }
	env := func(kv string) LoadOptions { return LoadOptions{Env: []string{kv}} }
	tests := []struct {
		name  string
		opts  LoadOptions
		key   string
		value string // must appear in the message
	}{
		{"empty data dir", flag("node.data_dir", " "), "node.data_dir", ""},
		{"sample ratio above 1", flag("tracing.sample_ratio", "1.5"), "tracing.sample_ratio", "1.5"},
		{"sample ratio negative", flag("tracing.sample_ratio", "-0.1"), "tracing.sample_ratio", "-0.1"},
		{"remote rate zero", flag("tracing.remote_rate", "0"), "tracing.remote_rate", "0"},
		{"max spans zero", flag("tracing.max_spans", "0"), "tracing.max_spans", "0"},
		{"trace retention zero", flag("tracing.retention", "0s"), "tracing.retention", "0s"},
		{"otlp endpoint without scheme", flag("tracing.otlp_endpoint", "collector:4318"), "tracing.otlp_endpoint", "collector:4318"},
		{"control char in name", flag("node.name", "a\x01b"), "node.name", `a\x01b`},
		{"log level", flag("log.level", "verbose"), "log.level", "verbose"},
		{"log level env", env("P2P_AGENT_LOG_LEVEL=trace"), "log.level", "trace"},
		{"log format", flag("log.format", "xml"), "log.format", "xml"},
		{"listen malformed", flag("p2p.listen", "/ip4/300.0.0.1/tcp/1"), "p2p.listen", "/ip4/300.0.0.1/tcp/1"},
		{"listen not a multiaddr", flag("p2p.listen", "0.0.0.0:4001"), "p2p.listen", "0.0.0.0:4001"},
		{"listen empty", flag("p2p.listen", ""), "p2p.listen", ""},
		{"bootstrap malformed", flag("p2p.bootstrap", "/ip4/1.2.3.4/tcp/x/p2p/"+id), "p2p.bootstrap", "/ip4/1.2.3.4/tcp/x/p2p/" + id},
		{"bootstrap without peer id", flag("p2p.bootstrap", "/ip4/1.2.3.4/tcp/4001"), "p2p.bootstrap", "/ip4/1.2.3.4/tcp/4001"},
		{"bootstrap bad peer id", flag("p2p.bootstrap", "/ip4/1.2.3.4/tcp/4001/p2p/QmNotAPeer"), "p2p.bootstrap", "/ip4/1.2.3.4/tcp/4001/p2p/QmNotAPeer"},
		{"bootstrap only peer id", flag("p2p.bootstrap", "/p2p/"+id), "p2p.bootstrap", "/p2p/" + id},
		{"mdns not bool", flag("p2p.mdns", "maybe"), "p2p.mdns", "maybe"},
		{"max message too small", flag("p2p.max_message_bytes", "512"), "p2p.max_message_bytes", "512"},
		{"max message too large", flag("p2p.max_message_bytes", "2147483648"), "p2p.max_message_bytes", "2147483648"},
		{"max message not int", env("P2P_AGENT_P2P_MAX_MESSAGE_BYTES=1MiB"), "p2p.max_message_bytes", "1MiB"},
		{"backend", flag("storage.backend", "postgres"), "storage.backend", "postgres"},
		{"max value zero", flag("storage.max_value_bytes", "0"), "storage.max_value_bytes", "0"},
		{"max value too large", flag("storage.max_value_bytes", "1073741825"), "storage.max_value_bytes", "1073741825"},
		{"redis addr no port", flag("storage.redis.addrs", "redis.local"), "storage.redis.addrs", "redis.local"},
		{"redis addr port zero", flag("storage.redis.addrs", "redis.local:0"), "storage.redis.addrs", "redis.local:0"},
		{"redis addr port too big", flag("storage.redis.addrs", "a:6379,redis.local:65536"), "storage.redis.addrs", "redis.local:65536"},
		{"redis addr no host", flag("storage.redis.addrs", ":6379"), "storage.redis.addrs", ":6379"},
		{"redis addr named port", flag("storage.redis.addrs", "redis.local:redis"), "storage.redis.addrs", "redis.local:redis"},
		{"redis backend without addresses", LoadOptions{Flags: map[string]string{"storage.backend": "redis", "storage.redis.addrs": ""}}, "storage.redis.addrs", ""},
		{"redis url scheme", flag("storage.redis.url", "http://redis.local:6379"), "storage.redis.url", "http://redis.local:6379"},
		{"redis url unparsable", flag("storage.redis.url", "redis://[::1"), "storage.redis.url", "redis://[::1"},
		{"redis url no host", flag("storage.redis.url", "redis:///0"), "storage.redis.url", "redis:///0"},
		{"redis url bad db", flag("storage.redis.url", "redis://h:6379/db"), "storage.redis.url", "redis://h:6379/db"},
		{"redis url bad port", flag("storage.redis.url", "redis://h:99999"), "storage.redis.url", "redis://h:99999"},
		{"redis url unknown option", flag("storage.redis.url", "redis://h:6379/0?colour=blue"), "storage.redis.url", "redis://h:6379/0?colour=blue"},
		{"redis url bad option value", flag("storage.redis.url", "redis://h:6379/0?pool_size=many"), "storage.redis.url", "redis://h:6379/0?pool_size=many"},
		{"pool size negative", flag("storage.redis.pool_size", "-1"), "storage.redis.pool_size", "-1"},
		{"dial timeout zero", flag("storage.redis.dial_timeout", "0s"), "storage.redis.dial_timeout", "0s"},
		{"read timeout negative", flag("storage.redis.read_timeout", "-1s"), "storage.redis.read_timeout", "-1s"},
		{"write timeout unparsable", flag("storage.redis.write_timeout", "3"), "storage.redis.write_timeout", "3"},
		{"max retries too many", flag("storage.redis.max_retries", "101"), "storage.redis.max_retries", "101"},
		{"max retries negative", flag("storage.redis.max_retries", "-1"), "storage.redis.max_retries", "-1"},
		{"retry backoff zero", env("P2P_AGENT_STORAGE_REDIS_RETRY_BACKOFF=0s"), "storage.redis.retry_backoff", "0s"},
		{"min replicas negative", env("P2P_AGENT_STORAGE_REDIS_MIN_REPLICAS=-2"), "storage.redis.min_replicas", "-2"},
		{"metrics enabled not bool", env("P2P_AGENT_METRICS_ENABLED=on"), "metrics.enabled", "on"},
		{"metrics listen no port", flag("metrics.listen", "0.0.0.0"), "metrics.listen", "0.0.0.0"},
		{"metrics listen bad port", flag("metrics.listen", ":70000"), "metrics.listen", ":70000"},
		{"metrics path relative", flag("metrics.path", "metrics"), "metrics.path", "metrics"},
		{"metrics path healthz", flag("metrics.path", "/healthz"), "metrics.path", "/healthz"},
		{"metrics path readyz", flag("metrics.path", "/readyz"), "metrics.path", "/readyz"},
		{"metrics path unclean", flag("metrics.path", "/metrics/"), "metrics.path", "/metrics/"},
		{"metrics path query", flag("metrics.path", "/m?x=1"), "metrics.path", "/m?x=1"},
		{"web config missing", flag("metrics.web_config_file", missing), "metrics.web_config_file", missing},
		{"web config directory", flag("metrics.web_config_file", dir), "metrics.web_config_file", dir},
		{"web config bad certs", flag("metrics.web_config_file", badWeb), "metrics.web_config_file", badWeb},
		{"web config unknown key", flag("metrics.web_config_file", typoWeb), "metrics.web_config_file", typoWeb},
		{"in flight zero", flag("metrics.max_requests_in_flight", "0"), "metrics.max_requests_in_flight", "0"},
		{"rate limit negative", flag("metrics.rate_limit", "-1"), "metrics.rate_limit", "-1"},
		{"connections per client negative", flag("metrics.max_connections_per_client", "-1"), "metrics.max_connections_per_client", "-1"},
		{"rate limit NaN", flag("metrics.rate_limit", "NaN"), "metrics.rate_limit", "NaN"},
		{"sample interval zero", flag("metrics.sample_interval", "0s"), "metrics.sample_interval", "0s"},
		{"peer ttl too short", flag("p2p.peer_ttl", "500ms"), "p2p.peer_ttl", "500ms"},
		{"advertise url no scheme", flag("metrics.advertise_url", "node1:8080/metrics"), "metrics.advertise_url", "node1:8080/metrics"},
		{"advertise url ftp", flag("metrics.advertise_url", "ftp://node1/metrics"), "metrics.advertise_url", "ftp://node1/metrics"},
		{"api listen no host", flag("api.listen", ":7070"), "api.listen", ":7070"},
		{"api listen garbage", flag("api.listen", "localhost"), "api.listen", "localhost"},
		{"api listen clashes with metrics", LoadOptions{Flags: map[string]string{"metrics.listen": ":9000", "api.listen": "127.0.0.1:9000"}}, "api.listen", "127.0.0.1:9000"},
		{"task timeout negative", flag("task.timeout", "-30s"), "task.timeout", "-30s"},
		{"task timeout unparsable", env("P2P_AGENT_TASK_TIMEOUT=soon"), "task.timeout", "soon"},
		{"file value", LoadOptions{File: writeFile(t, "v.yaml", "log:\n  level: loud\n")}, "log.level", "loud"},
		{"file list for scalar", LoadOptions{File: writeFile(t, "l.yaml", "log:\n  level: [info]\n")}, "log.level", "info"},
		{"file mapping for value", LoadOptions{File: writeFile(t, "m.yaml", "log:\n  level: {a: b}\n")}, "log.level", ""},
		{"file scalar for section", LoadOptions{File: writeFile(t, "s.yaml", "storage: redis\n")}, "storage", ""},
		{"file duplicate key", LoadOptions{File: writeFile(t, "d.yaml", "log:\n  level: info\n  level: debug\n")}, "log.level", "line 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.opts)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.key) {
				t.Errorf("message %q does not name key %q", msg, tt.key)
			}
			if tt.value != "" && !strings.Contains(msg, tt.value) {
				t.Errorf("message %q does not show value %q", msg, tt.value)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T does not contain a *FieldError", err)
			}
		})
	}
}

// TestErrorSources checks the message says where the bad value came from, and that
// every problem is reported at once.
func TestErrorSources(t *testing.T) {
	file := writeFile(t, "c.yaml", "\nlog:\n  level: loud\n")
	_, err := Load(LoadOptions{
		File:  file,
		Env:   []string{"P2P_AGENT_LOG_FORMAT=xml"},
		Flags: map[string]string{"task.timeout": "0s", "p2p.mdns": "perhaps"},
	})
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %T %v is not Errors", err, err)
	}
	want := []string{
		`log.level = "loud" (file ` + file + ` line 3): must be one of debug, info, warn, error`,
		`log.format = "xml" (env P2P_AGENT_LOG_FORMAT)`,
		`p2p.mdns = "perhaps" (flag --p2p.mdns): not a boolean`,
		`task.timeout = "0s" (flag --task.timeout): must be a duration greater than 0`,
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d: %v", len(errs), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message %q lacks %q", err.Error(), w)
		}
	}
	if !strings.HasPrefix(err.Error(), "invalid configuration: ") {
		t.Errorf("message %q does not start with the sentinel text", err.Error())
	}

	c := Default()
	c.Storage.Backend = "mongo"
	err = c.Validate()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `storage.backend = "mongo": must be one of`) {
		t.Fatalf("Validate() = %v", err)
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestSecretsNotEchoed(t *testing.T) {
	tests := []struct {
		name, key, value, secret string
	}{
		{"token with space", "api.token", "s3cr3t token", "s3cr3t"},
		{"url password", "storage.redis.url", "http://user:hunter2@h:1", "hunter2"},
		{"url password unparsable", "storage.redis.url", "redis://user:hunter2@[::1", "hunter2"},
		{"url password only", "storage.redis.url", "redis://hunter2@h:1/x", "hunter2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(LoadOptions{Flags: map[string]string{tt.key: tt.value}})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), redactedMark) {
				t.Errorf("message %q does not name %s with a masked value", err, tt.key)
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Fatalf("secret shown in %q", err.Error())
			}
		})
	}

	c := mustLoad(t, LoadOptions{Flags: map[string]string{
		"api.token": "tok", "storage.redis.password": "pw", "storage.redis.url": "redis://u:pw2@h:1",
	}})
	r := c.Redacted()
	if r.API.Token == "tok" || r.Storage.Redis.Password == "pw" || strings.Contains(r.Storage.Redis.URL, "pw2") {
		t.Fatalf("Redacted left a secret: %+v", r)
	}
	if c.API.Token != "tok" || c.Storage.Redis.Password != "pw" {
		t.Fatal("Redacted changed the original")
	}
	r.P2P.Listen[0] = "changed"
	if c.P2P.Listen[0] == "changed" {
		t.Fatal("Redacted shares slices with the original")
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name string
		opts LoadOptions
		want []string
	}{
		{"file top level", LoadOptions{File: writeFile(t, "a.yaml", "nodes:\n  name: x\n")}, []string{"nodes", "line 1", "unknown key"}},
		{"file nested", LoadOptions{File: writeFile(t, "b.yaml", "storage:\n  redis:\n    adrs: [a:1]\n")}, []string{"storage.redis.adrs", "line 3", "did you mean storage.redis.addrs?"}},
		{"file key given as section", LoadOptions{File: writeFile(t, "c.yaml", "metrics:\n  enabled:\n    really: true\n")}, []string{"metrics.enabled", "line 2"}},
		{"env", LoadOptions{Env: []string{"P2P_AGENT_METRICS_ENABLE=false"}}, []string{"P2P_AGENT_METRICS_ENABLE", "unknown", "did you mean P2P_AGENT_METRICS_ENABLED?"}},
		{"env section only", LoadOptions{Env: []string{"P2P_AGENT_STORAGE=redis"}}, []string{"P2P_AGENT_STORAGE", "unknown"}},
		{"flag", LoadOptions{Flags: map[string]string{"storage.redis.min_replica": "1"}}, []string{"storage.redis.min_replica", "unknown flag", "did you mean storage.redis.min_replicas?"}},
		{"flag section", LoadOptions{Flags: map[string]string{"storage": "redis"}}, []string{"--storage", "unknown flag"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.opts)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q lacks %q", err.Error(), w)
				}
			}
		})
	}
}

func TestStrictYAML(t *testing.T) {
	path := writeFile(t, "typo.yaml", `node:
  name: n1
p2p:
  mdns: false
  bootstrapp: []
`)
	err := Check(path)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Check = %v, want ErrInvalid", err)
	}
	for _, w := range []string{"p2p.bootstrapp", "line 5", "unknown key", "did you mean p2p.bootstrap?", path} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message %q lacks %q", err.Error(), w)
		}
	}

	tests := []struct {
		name, content, want string
	}{
		{"syntax error", "log:\n  level: [info\n", "config file"},
		{"two documents", "log: {level: info}\n---\nlog: {level: debug}\n", "more than one YAML document"},
		{"top level list", "- a\n- b\n", "top level must be a mapping"},
		{"merge key", "base: &b {level: info}\nlog:\n  <<: *b\n", "base"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(writeFile(t, "c.yaml", tt.content))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Check = %v, want one-line ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	ok := writeFile(t, "ok.yaml", "storage:\n  backend: redis\n  redis:\n    addrs: [10.0.0.1:7000, 10.0.0.2:7000]\n")
	if err := Check(ok); err != nil {
		t.Fatalf("Check(valid) = %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	err := Check(missing)
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Check(missing) = %v", err)
	}
	if err := Check(""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Check(\"\") = %v", err)
	}
}

// leafKeys lists the dotted yaml paths of every non-struct field of t.
func leafKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" {
			panic("field " + f.Name + " has no yaml tag")
		}
		if prefix != "" {
			name = prefix + "." + name
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, leafKeys(f.Type, name)...)
		} else {
			out = append(out, name)
		}
	}
	return out
}

// fieldAt returns the address of the field at a dotted yaml path of c.
func fieldAt(c *Config, key string) uintptr {
	v := reflect.ValueOf(c).Elem()
	for _, part := range strings.Split(key, ".") {
		for i := 0; i < v.NumField(); i++ {
			if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name == part {
				v = v.Field(i)
				break
			}
		}
	}
	return v.Addr().Pointer()
}

func TestKeysCoverStruct(t *testing.T) {
	fields := leafKeys(reflect.TypeOf(Config{}), "")
	var keys []string
	for _, k := range Keys() {
		keys = append(keys, k.Key)
		if k.Env != "P2P_AGENT_"+strings.ToUpper(strings.ReplaceAll(k.Key, ".", "_")) {
			t.Errorf("%s: env %s", k.Key, k.Env)
		}
		if k.Flag != "--"+k.Key || k.Description == "" || k.Type == "" {
			t.Errorf("%s: incomplete KeyInfo %+v", k.Key, k)
		}
	}
	slices.Sort(fields)
	slices.Sort(keys)
	if !slices.Equal(fields, keys) {
		t.Fatalf("struct fields and Keys() differ:\nfields %v\nkeys   %v", fields, keys)
	}
	if len(slices.Compact(slices.Clone(keys))) != len(keys) {
		t.Fatal("duplicate keys")
	}
	// Each key must write the field its name says, not a neighbour.
	c := &Config{}
	for _, d := range keyTable {
		got := reflect.ValueOf(d.field(c)).Pointer()
		if want := fieldAt(c, d.key); got != want {
			t.Errorf("key %s is bound to the wrong field", d.key)
		}
	}
}

func TestNoHomeDirectory(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("home directory comes from elsewhere than $HOME")
	}
	t.Setenv("HOME", "")
	_, err := Load(LoadOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `node.data_dir = "~/.p2p-agent" (default)`) {
		t.Fatalf("Load without $HOME = %v, want an error about node.data_dir", err)
	}
	c := mustLoad(t, LoadOptions{Flags: map[string]string{"node.data_dir": "/var/lib/p2p-agent"}})
	if c.IdentityPath() != "/var/lib/p2p-agent/identity.key" {
		t.Fatalf("IdentityPath() = %q", c.IdentityPath())
	}
}
