package metrics_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// startServer starts a metrics server with every catalogue family on a fresh registry.
func startServer(t *testing.T, cfg metrics.ServerConfig, ready func() bool) *metrics.Server {
	t.Helper()
	reg := metrics.NewRegistry("test", "12D3KooWTest")
	st := metrics.NewStorage(reg, config.Backends())
	// the storage decorator resolves these children when it wraps a backend
	for _, op := range []string{"get", "put", "delete", "list"} {
		st.Operations.WithLabelValues(op, "local")
		st.Duration.WithLabelValues(op, "local")
		st.Errors.WithLabelValues(op, "local")
	}
	metrics.NewMessages(reg, message.MetricLabels())
	metrics.NewTasks(reg, task.MetricLabels())
	metrics.RegisterPeers(reg, func() int { return 3 })
	s := metrics.NewSampler(reg, time.Second, nil)
	s.Sample()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	srv := metrics.NewServer(reg, ready, cfg)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

var catalogue = []string{
	"process_cpu_usage", "process_memory_bytes", "agent_peers_connected",
	"messages_received_total", "message_processing_duration_seconds", "message_processing_errors_total", "messages_sent_total",
	"storage_operations_total", "storage_operation_duration_seconds", "storage_operation_errors_total",
	"tasks_total", "task_duration_seconds", "agent_info",
}

func TestMetricsEndpointServesCatalogue(t *testing.T) {
	srv := startServer(t, metrics.ServerConfig{}, nil)
	url := "http://" + srv.Addr().String() + "/metrics"
	resp, body := get(t, http.DefaultClient, url, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Type = %q", ct)
	}
	fams, err := testenv.ParseMetrics(body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for _, name := range catalogue {
		if _, ok := fams[name]; !ok {
			t.Errorf("family %s missing", name)
		}
	}
	if got := fams["agent_peers_connected"].GetMetric()[0].GetGauge().GetValue(); got != 3 {
		t.Errorf("agent_peers_connected = %v, want 3", got)
	}
	// pre-initialised: every type of the closed set + unknown for received.
	if got, want := len(fams["messages_received_total"].GetMetric()), len(message.Types())+1; got != want {
		t.Errorf("messages_received_total series = %d, want %d", got, want)
	}
	if got := len(fams["tasks_total"].GetMetric()); got != 5*3 {
		t.Errorf("tasks_total series = %d, want 15", got)
	}
	info := fams["agent_info"].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range info.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != "test" || labels["peer_id"] != "12D3KooWTest" || info.GetGauge().GetValue() != 1 {
		t.Errorf("agent_info = %v %v", labels, info.GetGauge().GetValue())
	}
	if mem := fams["process_memory_bytes"].GetMetric()[0].GetGauge().GetValue(); mem < 1<<20 {
		t.Errorf("process_memory_bytes = %v, want a real RSS", mem)
	}

	// OpenMetrics when asked.
	resp, body = get(t, http.DefaultClient, url, map[string]string{"Accept": "application/openmetrics-text; version=1.0.0"})
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("OpenMetrics Content-Type = %q", ct)
	}
	if !bytes.HasSuffix(bytes.TrimSpace(body), []byte("# EOF")) {
		t.Fatal("OpenMetrics body does not end with # EOF")
	}

	promtool := testenv.ToolPath(t, "promtool") // fails under CI when missing
	_, body = get(t, http.DefaultClient, url, nil)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	ready := false
	srv := startServer(t, metrics.ServerConfig{}, func() bool { return ready })
	base := "http://" + srv.Addr().String()
	if resp, _ := get(t, http.DefaultClient, base+"/healthz", nil); resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	if resp, _ := get(t, http.DefaultClient, base+"/readyz", nil); resp.StatusCode != 503 {
		t.Fatalf("readyz before ready = %d, want 503", resp.StatusCode)
	}
	ready = true
	if resp, _ := get(t, http.DefaultClient, base+"/readyz", nil); resp.StatusCode != 200 {
		t.Fatalf("readyz when ready = %d, want 200", resp.StatusCode)
	}
}

func TestRateLimitAnswers429(t *testing.T) {
	srv := startServer(t, metrics.ServerConfig{RateLimit: 2}, nil)
	url := "http://" + srv.Addr().String() + "/metrics"
	codes := map[int]int{}
	var retryAfter string
	for i := 0; i < 10; i++ {
		resp, _ := get(t, http.DefaultClient, url, nil)
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			retryAfter = resp.Header.Get("Retry-After")
		}
	}
	// burst of 2, refill 2/s: a tight burst of 10 gets 2 (rarely 3) answers.
	if codes[200] < 2 || codes[200] > 3 || codes[429] != 10-codes[200] {
		t.Fatalf("codes = %v, want 2-3 x 200 and the rest 429", codes)
	}
	if retryAfter != "1" {
		t.Fatalf("Retry-After = %q, want 1", retryAfter)
	}
	// health probes are never rate limited
	for i := 0; i < 5; i++ {
		if resp, _ := get(t, http.DefaultClient, "http://"+srv.Addr().String()+"/healthz", nil); resp.StatusCode != 200 {
			t.Fatalf("healthz rate limited: %d", resp.StatusCode)
		}
	}
}

// pki is a throwaway CA with a server and a client certificate.
type pki struct {
	dir                       string
	caFile, certFile, keyFile string
	clientCert, clientKey     string
	pool                      *x509.CertPool
	client                    tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	p := &pki{dir: dir}
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caFile = write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	sc, sk := issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.certFile, p.keyFile = write("server.pem", sc), write("server-key.pem", sk)
	cc, ck := issue("client", 3, x509.ExtKeyUsageClientAuth)
	p.clientCert, p.clientKey = write("client.pem", cc), write("client-key.pem", ck)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(caCert)
	p.client, err = tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsServerConfig is the tls_server_config block of a web config serving
// p's server certificate.
func (p *pki) tlsServerConfig() string {
	return fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", p.certFile, p.keyFile)
}

// basicAuthUsers is the basic_auth_users block of a web config with one
// user, whose password is hashed by bcrypt at cost.
func basicAuthUsers(t *testing.T, user, password string, cost int) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("basic_auth_users:\n  %s: %s\n", user, hash)
}

// writeWebConfig writes content as web.yml in dir and returns its path.
func writeWebConfig(t *testing.T, dir, content string) string {
	t.Helper()
	webCfg := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webCfg, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return webCfg
}

func TestTLSAndBasicAuth(t *testing.T) {
	p := newPKI(t)
	webCfg := writeWebConfig(t, p.dir, p.tlsServerConfig()+basicAuthUsers(t, "prometheus", "s3cret", bcrypt.MinCost))
	srv := startServer(t, metrics.ServerConfig{WebConfigFile: webCfg}, nil)
	url := "https://" + srv.Addr().String() + "/metrics"
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL() = %s, want https", srv.URL())
	}

	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool}}}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := tlsClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d, want 401", resp.StatusCode)
	}
	req.SetBasicAuth("prometheus", "wrong")
	resp, err = tlsClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d, want 401", resp.StatusCode)
	}
	req.SetBasicAuth("prometheus", "s3cret")
	resp, err = tlsClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("storage_operations_total")) {
		t.Fatalf("right password: %d", resp.StatusCode)
	}
	// Plain HTTP to the TLS port fails.
	if resp, err := http.Get("http://" + srv.Addr().String() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served metrics on a TLS listener")
		}
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	webCfg := writeWebConfig(t, p.dir, p.tlsServerConfig()+"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: "+p.caFile+"\n")
	srv := startServer(t, metrics.ServerConfig{WebConfigFile: webCfg}, nil)
	url := "https://" + srv.Addr().String() + "/metrics"

	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool}}}
	if resp, err := noCert.Get(url); err == nil {
		resp.Body.Close()
		t.Fatalf("client without certificate got %d", resp.StatusCode)
	}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}}}}
	resp, err := withCert.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("client with certificate: %d", resp.StatusCode)
	}
}

func TestBadWebConfigFailsStart(t *testing.T) {
	webCfg := writeWebConfig(t, t.TempDir(), "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent-key.pem\n")
	reg := metrics.NewRegistry("test", "x")
	srv := metrics.NewServer(reg, nil, metrics.ServerConfig{Listen: "127.0.0.1:0", WebConfigFile: webCfg})
	if err := srv.Start(); err == nil {
		_ = srv.Shutdown(context.Background())
		t.Fatal("Start accepted a web config with missing certificate files")
	}
}

func TestLabelValuesFromClosedSets(t *testing.T) {
	reg := prometheus.NewRegistry()
	msgs := metrics.NewMessages(reg, message.MetricLabels())
	for in, want := range map[string]string{"ping": "ping", "task.request": "task.request", "bogus": "unknown", "": "unknown"} {
		if got := msgs.Type(in); got != want {
			t.Errorf("Type(%q) = %q, want %q", in, got, want)
		}
		if msgs.For(in) != msgs.For(want) {
			t.Errorf("For(%q) is not For(%q)", in, want)
		}
	}
	st := metrics.NewStorage(reg, config.Backends())
	if st.Backend("mysql") != "unknown" || st.Backend("redis") != "redis" {
		t.Error("Backend closed set broken")
	}
	tasks := metrics.NewTasks(reg, task.MetricLabels())
	if tasks.Type("rm -rf") != "unknown" || tasks.Type("text.chunk") != "text.chunk" || msgs.Reason("x") != "unknown" || msgs.Reason("too_large") != "too_large" {
		t.Error("TaskType/ErrorReason closed set broken")
	}
	if msgs.For("ping").Error("x") != msgs.For("ping").Error("unknown") {
		t.Error("Error(x) is not Error(unknown)")
	}
}

func TestBasicAuthWithoutTLS(t *testing.T) {
	webCfg := writeWebConfig(t, t.TempDir(), basicAuthUsers(t, "scraper", "pw", bcrypt.MinCost))
	srv := startServer(t, metrics.ServerConfig{WebConfigFile: webCfg}, nil)
	if !strings.HasPrefix(srv.URL(), "http://") {
		t.Fatalf("URL() = %s, want http:// (no TLS configured)", srv.URL())
	}
	resp, _ := get(t, http.DefaultClient, srv.URL(), nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL(), nil)
	req.SetBasicAuth("scraper", "pw")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 200 {
		t.Fatalf("with credentials: %d", r2.StatusCode)
	}
}
