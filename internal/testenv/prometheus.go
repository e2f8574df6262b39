package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// PrometheusStartTimeout bounds how long a prometheus server may take to
// answer /-/ready after it was started.
const PrometheusStartTimeout = 60 * time.Second

// Prometheus is a real prometheus server started for one test on a loopback
// port, with its configuration and TSDB in temp directories.
type Prometheus struct {
	t    testing.TB
	cmd  *exec.Cmd
	dir  string
	exit chan struct{}
	err  error
	log  *lockedBuffer

	// URL is the server's base URL, e.g. http://127.0.0.1:41234.
	URL string
	// ConfigFile is the path of the configuration the server runs with.
	ConfigFile string

	client *http.Client
}

// lockedBuffer collects the server's log output for failure reports.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartPrometheus writes configYAML to prometheus.yml in a temp directory and
// runs the real prometheus binary on it, with its TSDB in a temp directory and
// its web server on a free 127.0.0.1 port. It returns once /-/ready answers
// 200 and stops the server when the test ends. Relative paths in the
// configuration (rule_files, file_sd_configs) resolve against that temp
// directory: pass absolute paths.
func StartPrometheus(t testing.TB, configYAML string) *Prometheus {
	t.Helper()
	return StartPrometheusWithFlags(t, configYAML)
}

// StartPrometheusWithFlags is StartPrometheus with extra command-line flags,
// for example "--enable-feature=native-histograms".
func StartPrometheusWithFlags(t testing.TB, configYAML string, flags ...string) *Prometheus {
	t.Helper()
	bin := ToolPath(t, "prometheus")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		p, err := startPrometheusOnce(t, bin, dir, cfgPath, flags)
		if err == nil {
			return p
		}
		lastErr = err
		// Only a port taken between probing and binding is worth a retry.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("starting prometheus: %v", lastErr)
	return nil
}

func startPrometheusOnce(t testing.TB, bin, dir, cfgPath string, flags []string) (*Prometheus, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	tsdb, err := os.MkdirTemp(dir, "tsdb-")
	if err != nil {
		return nil, err
	}
	p := &Prometheus{
		t:          t,
		dir:        dir,
		exit:       make(chan struct{}),
		log:        &lockedBuffer{},
		URL:        "http://" + addr,
		ConfigFile: cfgPath,
		client:     &http.Client{Timeout: 30 * time.Second},
	}
	args := []string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + tsdb,
		"--web.listen-address=" + addr,
		"--log.level=info",
	}
	p.cmd = exec.Command(bin, append(args, flags...)...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exit)
	}()

	deadline := time.Now().Add(PrometheusStartTimeout)
	delay := 20 * time.Millisecond
	for {
		select {
		case <-p.exit:
			return nil, fmt.Errorf("prometheus exited before it was ready: %v\n%s", p.err, p.log.String())
		default:
		}
		resp, err := p.client.Get(p.URL + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("prometheus not ready within %s (last: %v)\n%s", PrometheusStartTimeout, err, p.log.String())
		}
		time.Sleep(delay)
		if delay < 250*time.Millisecond {
			delay *= 2
		}
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.log.String())
		}
	})
	return p, nil
}

// freeLoopbackPort asks the kernel for a free TCP port on 127.0.0.1.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// stop ends the server: SIGTERM, then SIGKILL if it has not exited in 10 s.
func (p *Prometheus) stop() {
	select {
	case <-p.exit:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exit
	}
}

// Log returns what the server has logged so far.
func (p *Prometheus) Log() string { return p.log.String() }

// v1 is the Prometheus HTTP API client (client_golang's api/prometheus/v1).
func (p *Prometheus) v1() v1.API {
	c, err := promapi.NewClient(promapi.Config{Address: p.URL, Client: p.client})
	if err != nil {
		panic(err) // only for a malformed address, which StartPrometheus never makes
	}
	return v1.NewAPI(c)
}

// Query evaluates expr at the current time through /api/v1/query and
// returns the result type ("vector", "matrix", "scalar" or "string") and the
// result as the API's JSON. A query Prometheus rejects (bad syntax, unknown
// function, execution error) is an error carrying Prometheus' message.
func (p *Prometheus) Query(expr string) (resultType string, result json.RawMessage, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, _, _, err := p.v1().Query(ctx, expr, time.Now())
	if err != nil {
		return "", nil, fmt.Errorf("query %q: %w", expr, err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return "", nil, fmt.Errorf("query %q: %w", expr, err)
	}
	return v.Type().String(), raw, nil
}

// Sample is one element of an instant vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// QueryVector evaluates expr and returns the instant vector it gives; any
// other result type is an error. NaN and infinite values come back as such.
func (p *Prometheus) QueryVector(expr string) ([]Sample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, _, _, err := p.v1().Query(ctx, expr, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %q: result type %s, want vector", expr, v.Type())
	}
	out := make([]Sample, 0, len(vec))
	for _, smp := range vec {
		out = append(out, Sample{Metric: labelMap(model.LabelSet(smp.Metric)), Value: float64(smp.Value)})
	}
	return out, nil
}

func labelMap(ls model.LabelSet) map[string]string {
	m := make(map[string]string, len(ls))
	for k, v := range ls {
		m[string(k)] = string(v)
	}
	return m
}

// Target is one active scrape target as /api/v1/targets reports it.
type Target struct {
	Labels     map[string]string `json:"labels"`
	ScrapeURL  string            `json:"scrapeUrl"`
	Health     string            `json:"health"`
	LastError  string            `json:"lastError"`
	ScrapePool string            `json:"scrapePool"`
}

// Targets returns the active scrape targets.
func (p *Prometheus) Targets() ([]Target, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := p.v1().Targets(ctx)
	if err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	out := make([]Target, 0, len(r.Active))
	for _, t := range r.Active {
		out = append(out, Target{Labels: labelMap(t.Labels), ScrapeURL: t.ScrapeURL, Health: string(t.Health), LastError: t.LastError, ScrapePool: t.ScrapePool})
	}
	return out, nil
}

// WaitForTargetsUp waits up to d until at least n active targets report
// health "up", and fails the test with the targets' last errors otherwise.
func (p *Prometheus) WaitForTargetsUp(n int, d time.Duration) {
	p.t.Helper()
	Eventually(p.t, d, func() error {
		ts, err := p.Targets()
		if err != nil {
			return err
		}
		up := 0
		var problems []string
		for _, tg := range ts {
			if tg.Health == "up" {
				up++
				continue
			}
			problems = append(problems, fmt.Sprintf("%s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
		}
		if up < n {
			return fmt.Errorf("%d of %d wanted targets up (%d active); %s", up, n, len(ts), strings.Join(problems, "; "))
		}
		return nil
	})
}

// Rule is one recording or alerting rule as /api/v1/rules reports it.
type Rule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Type      string `json:"type"` // "recording" or "alerting"
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	State     string `json:"state"` // alerting rules: inactive, pending or firing
	Group     string `json:"-"`
}

// Rules returns every loaded rule, each with the name of its group.
func (p *Prometheus) Rules() ([]Rule, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := p.v1().Rules(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	var out []Rule
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			switch x := rule.(type) {
			case v1.AlertingRule:
				out = append(out, Rule{Name: x.Name, Query: x.Query, Type: "alerting", Health: string(x.Health), LastError: x.LastError, State: x.State, Group: g.Name})
			case v1.RecordingRule:
				out = append(out, Rule{Name: x.Name, Query: x.Query, Type: "recording", Health: string(x.Health), LastError: x.LastError, Group: g.Name})
			}
		}
	}
	return out, nil
}

// Exemplar is one exemplar returned by /api/v1/query_exemplars.
type Exemplar struct {
	SeriesLabels map[string]string
	Labels       map[string]string
	Value        float64
}

// QueryExemplars returns the exemplars of the series selected by expr over
// the last hour (Prometheus must run with --enable-feature=exemplar-storage).
func (p *Prometheus) QueryExemplars(expr string) ([]Exemplar, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	series, err := p.v1().QueryExemplars(ctx, expr, now.Add(-time.Hour), now.Add(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("query_exemplars %q: %w", expr, err)
	}
	var out []Exemplar
	for _, s := range series {
		for _, e := range s.Exemplars {
			out = append(out, Exemplar{SeriesLabels: labelMap(s.SeriesLabels), Labels: labelMap(e.Labels), Value: float64(e.Value)})
		}
	}
	return out, nil
}
