package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
)

// ErrInvalid is wrapped by every configuration error: unknown keys, unparsable or
// out-of-range values, unreadable files. The CLI maps it to exit code 2.
var ErrInvalid = errors.New("invalid configuration")

// maxBytesLimit caps the size limits (1 GiB): beyond it a single frame or value would
// be an allocation hazard rather than a setting.
const maxBytesLimit = 1 << 30

// FieldError is one rejected setting. It wraps ErrInvalid.
type FieldError struct {
	// Key is the dotted key; for an unknown environment variable, the variable name.
	Key string
	// Value is the offending value as given, secrets masked.
	Value string
	// Source is where the value came from: "default", "file F line N", "env NAME",
	// "flag --key" or "environment"; empty when validating a Config built in code.
	Source string
	// Reason says what is wrong and what is accepted.
	Reason string

	noValue bool // unknown or structural problems have no value to show
}

// Error is one line: "invalid configuration: KEY = "VALUE" (SOURCE): REASON".
func (e *FieldError) Error() string {
	return ErrInvalid.Error() + ": " + e.detail()
}

func (e *FieldError) detail() string {
	var b strings.Builder
	b.WriteString(e.Key)
	if !e.noValue {
		fmt.Fprintf(&b, " = %q", e.Value)
	}
	if e.Source != "" {
		fmt.Fprintf(&b, " (%s)", e.Source)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Errors is every problem found by one Load or Validate. It wraps ErrInvalid and each
// FieldError.
type Errors []*FieldError

// Error lists the problems on one line, separated by "; ".
func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.detail()
	}
	return ErrInvalid.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap exposes ErrInvalid and each FieldError to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, 0, len(es)+1)
	out = append(out, ErrInvalid)
	for _, e := range es {
		out = append(out, e)
	}
	return out
}

// Validate checks a Config built in code (Load validates on its own). The error, if
// any, is an Errors wrapping ErrInvalid.
func (c *Config) Validate() error {
	if errs := validate(c, nil); len(errs) > 0 {
		return errs
	}
	return nil
}

// validator accumulates FieldErrors, attributing each key to its source.
type validator struct {
	sources map[string]string
	errs    Errors
}

func (v *validator) fail(key, value, reason string) {
	src := "default"
	if v.sources == nil {
		src = ""
	} else if s, ok := v.sources[key]; ok {
		src = s
	}
	if d, ok := keyIndex[key]; ok {
		value = displayValue(d, value)
	}
	v.errs = append(v.errs, &FieldError{Key: key, Value: value, Source: src, Reason: reason})
}

func (v *validator) enum(key, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	v.fail(key, value, "must be one of "+strings.Join(allowed, ", "))
}

func (v *validator) intRange(key string, value, lo, hi int) {
	if value < lo || value > hi {
		v.fail(key, strconv.Itoa(value), fmt.Sprintf("must be between %d and %d", lo, hi))
	}
}

func (v *validator) intMin(key string, value, lo int) {
	if value < lo {
		v.fail(key, strconv.Itoa(value), fmt.Sprintf("must be at least %d", lo))
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.fail(key, d.String(), "must be a duration greater than 0")
	}
}

// hostPort checks a host:port address. minPort is 0 where "any free port" makes sense.
func (v *validator) hostPort(key, addr string, hostRequired bool, minPort int) {
	if reason := checkHostPort(addr, hostRequired, minPort); reason != "" {
		v.fail(key, addr, reason)
	}
}

func checkHostPort(addr string, hostRequired bool, minPort int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "must be host:port (IPv6 hosts in brackets)"
	}
	if hostRequired && host == "" {
		return "needs a host before the port"
	}
	if strings.ContainsFunc(host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "host contains spaces or control characters"
	}
	n, err := strconv.Atoi(port)
	if err != nil || strings.ContainsAny(port, "+-") || n < minPort || n > 65535 {
		return fmt.Sprintf("port must be a number from %d to 65535", minPort)
	}
	return ""
}

// validate returns every problem with c. sources maps keys to where their values came
// from; nil means the Config was built in code.
func validate(c *Config, sources map[string]string) Errors {
	v := &validator{sources: sources}

	if strings.TrimSpace(c.Node.DataDir) == "" {
		v.fail("node.data_dir", c.Node.DataDir, "must not be empty")
	}
	if strings.ContainsFunc(c.Node.Name, unicode.IsControl) {
		v.fail("node.name", c.Node.Name, "must not contain control characters")
	}

	v.enum("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.enum("log.format", c.Log.Format, LogFormatJSON, LogFormatText)

	if len(c.P2P.Listen) == 0 {
		v.fail("p2p.listen", "", "needs at least one multiaddr")
	}
	for _, s := range c.P2P.Listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			v.fail("p2p.listen", s, "not a valid multiaddr: "+oneline.Flatten(err.Error()))
		}
	}
	for _, s := range c.P2P.Bootstrap {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			v.fail("p2p.bootstrap", s, "not a valid multiaddr: "+oneline.Flatten(err.Error()))
			continue
		}
		transport, id := peer.SplitAddr(a)
		switch {
		case id == "":
			v.fail("p2p.bootstrap", s, "must end in /p2p/<peer id>")
		case len(transport) == 0:
			v.fail("p2p.bootstrap", s, "needs a transport address before /p2p/<peer id>")
		}
	}
	v.intRange("p2p.max_message_bytes", c.P2P.MaxMessageBytes, 1024, maxBytesLimit)
	v.intRange("p2p.max_inflight_bytes", c.P2P.MaxInflightBytes, c.P2P.MaxMessageBytes, maxBytesLimit)
	v.intRange("p2p.max_handlers_per_peer", c.P2P.MaxHandlersPerPeer, 1, 1<<16)
	if c.P2P.PeerTTL < time.Second || c.P2P.PeerTTL > 24*time.Hour {
		v.fail("p2p.peer_ttl", c.P2P.PeerTTL.String(), "must be from 1s to 24h")
	}

	v.enum("storage.backend", c.Storage.Backend, Backends()...)
	v.intRange("storage.max_value_bytes", c.Storage.MaxValueBytes, 1, maxBytesLimit)
	v.intMin("storage.local.min_free_bytes", c.Storage.Local.MinFreeBytes, 0)

	r := c.Storage.Redis
	for _, a := range r.Addrs {
		v.hostPort("storage.redis.addrs", a, true, 1)
	}
	if c.Storage.Backend == BackendRedis && r.URL == "" && len(r.Addrs) == 0 {
		v.fail("storage.redis.addrs", "", "needs at least one address when storage.backend is redis and storage.redis.url is empty")
	}
	if r.URL != "" {
		if reason := checkRedisURL(r.URL); reason != "" {
			v.fail("storage.redis.url", r.URL, reason)
		}
	}
	v.intMin("storage.redis.pool_size", r.PoolSize, 0)
	v.positive("storage.redis.dial_timeout", r.DialTimeout)
	v.positive("storage.redis.read_timeout", r.ReadTimeout)
	v.positive("storage.redis.write_timeout", r.WriteTimeout)
	v.intRange("storage.redis.max_retries", r.MaxRetries, 0, 100)
	v.positive("storage.redis.retry_backoff", r.RetryBackoff)
	v.intMin("storage.redis.min_replicas", r.MinReplicas, 0)

	m := c.Metrics
	v.hostPort("metrics.listen", m.Listen, false, 0)
	if reason := checkMetricsPath(m.Path); reason != "" {
		v.fail("metrics.path", m.Path, reason)
	}
	if m.WebConfigFile != "" {
		if reason := checkWebConfig(m.WebConfigFile); reason != "" {
			v.fail("metrics.web_config_file", m.WebConfigFile, reason)
		}
	}
	if m.AdvertiseURL != "" {
		if reason := checkAdvertiseURL(m.AdvertiseURL); reason != "" {
			v.fail("metrics.advertise_url", m.AdvertiseURL, reason)
		}
	}
	v.intMin("metrics.max_requests_in_flight", m.MaxRequestsInFlight, 1)
	if m.RateLimit < 0 || math.IsNaN(m.RateLimit) || math.IsInf(m.RateLimit, 0) {
		v.fail("metrics.rate_limit", strconv.FormatFloat(m.RateLimit, 'g', -1, 64), "must be a finite number >= 0 (0 means unlimited)")
	}
	v.positive("metrics.sample_interval", m.SampleInterval)
	if m.AuthFailureRate < 0 || math.IsNaN(m.AuthFailureRate) || math.IsInf(m.AuthFailureRate, 0) {
		v.fail("metrics.auth_failure_rate", strconv.FormatFloat(m.AuthFailureRate, 'g', -1, 64), "must be a finite number >= 0 (0 means unlimited)")
	}
	v.intMin("metrics.max_connections", m.MaxConnections, 1)
	v.intMin("metrics.max_connections_per_client", m.MaxConnectionsPerClient, 0)

	v.hostPort("api.listen", c.API.Listen, true, 0)
	if strings.ContainsFunc(c.API.Token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		v.fail("api.token", c.API.Token, "must not contain spaces or control characters (it travels in an HTTP header)")
	}
	if m.Enabled && listenersClash(m.Listen, c.API.Listen) {
		v.fail("api.listen", c.API.Listen, "uses the same port as metrics.listen "+m.Listen)
	}

	a := c.API
	v.positive("api.read_header_timeout", a.ReadHeaderTimeout)
	v.positive("api.body_timeout", a.BodyTimeout)
	v.intMin("api.min_body_rate", a.MinBodyRate, 1)
	v.intMin("api.max_connections", a.MaxConnections, 1)
	v.intMin("api.max_body_bytes_in_flight", a.MaxBodyBytesInFlight, c.Storage.MaxValueBytes)
	v.positive("api.shutdown_grace", a.ShutdownGrace)

	v.positive("task.timeout", c.Task.Timeout)
	v.intRange("task.max_concurrent", c.Task.MaxConcurrent, 1, 4096)
	v.intRange("task.max_concurrent_searches", c.Task.MaxConcurrentSearches, 1, 1024)
	v.intRange("task.max_queued", c.Task.MaxQueued, 0, 1<<16)
	v.positive("task.retention", c.Task.Retention)
	v.intMin("task.max_records", c.Task.MaxRecords, 1)

	tr := c.Tracing
	if math.IsNaN(tr.SampleRatio) || tr.SampleRatio < 0 || tr.SampleRatio > 1 {
		v.fail("tracing.sample_ratio", strconv.FormatFloat(tr.SampleRatio, 'g', -1, 64), "must be a number from 0 to 1")
	}
	v.intRange("tracing.max_spans", tr.MaxSpans, 1, 100_000_000)
	if math.IsNaN(tr.RemoteRate) || tr.RemoteRate <= 0 || tr.RemoteRate > 1e6 {
		v.fail("tracing.remote_rate", strconv.FormatFloat(tr.RemoteRate, 'g', -1, 64), "must be a number above 0 and at most 1000000")
	}
	v.positive("tracing.retention", tr.Retention)
	if e := tr.OTLPEndpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.fail("tracing.otlp_endpoint", e, "must be an http:// or https:// URL with a host (http://collector:4318)")
		}
	}
	return v.errs
}

// checkRedisURL accepts redis://[user[:password]@]host[:port][/db][?options] and the
// rediss:// (TLS) form, with the query options go-redis knows.
func checkRedisURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "not a valid URL"
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "scheme must be redis:// or rediss://"
	}
	if u.Hostname() == "" {
		return "needs a host"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "port must be a number from 1 to 65535"
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return "path must be a database number (/0, /1, ...)"
		}
	}
	// The storage layer parses the URL with go-redis; whatever it would refuse (an
	// unknown query option, say) is refused here, at start, with exit code 2.
	if _, err := redis.ParseURL(s); err != nil {
		msg := oneline.Flatten(err.Error())
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, redactedMark)
		}
		return "not a valid Redis URL: " + msg
	}
	return ""
}

// checkMetricsPath requires a clean absolute path usable as an http.ServeMux pattern
// that does not shadow the health endpoints.
func checkMetricsPath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return `must start with "/"`
	case strings.ContainsFunc(p, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("?#{}", r)
	}):
		return "must not contain spaces, control characters or any of ?#{}"
	case path.Clean(p) != p:
		return "must be a clean path (no trailing slash, // or dot segments)"
	case p == "/healthz" || p == "/readyz":
		return "is reserved for the health endpoints"
	}
	return ""
}

// checkWebConfig requires a readable exporter-toolkit web config whose certificates
// and users load, so a bad TLS setup fails at start rather than on the first scrape.
func checkWebConfig(file string) string {
	st, err := os.Stat(file)
	if err != nil {
		return "cannot be read: " + oneline.Flatten(err.Error())
	}
	if st.IsDir() {
		return "is a directory, not a file"
	}
	f, err := os.Open(file)
	if err != nil {
		return "cannot be read: " + oneline.Flatten(err.Error())
	}
	f.Close()
	if err := web.Validate(file); err != nil {
		return "invalid web config: " + oneline.Flatten(err.Error())
	}
	return ""
}

// listenersClash reports whether two listen addresses would compete for one port.
// Port 0 never clashes: each listener gets its own free port.
func listenersClash(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

// checkAdvertiseURL returns why u cannot be told to peers as a metrics URL,
// or "" when it can: an absolute http or https URL with a host.
func checkAdvertiseURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "not a URL: " + oneline.Flatten(err.Error())
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return "must be an http:// or https:// URL"
	}
	if p.Host == "" || p.Hostname() == "" {
		return "must name a host"
	}
	if p.User != nil {
		return "must not carry credentials"
	}
	return ""
}
