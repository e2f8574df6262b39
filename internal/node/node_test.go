package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/node"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// syncBuffer is a log sink tests can read while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNode runs an in-process node on free loopback ports with the given
// extra configuration flags, and stops it at cleanup.
func startNode(t testing.TB, flags map[string]string) (*node.Node, *syncBuffer) {
	t.Helper()
	all := map[string]string{
		"node.data_dir":           t.TempDir(),
		"p2p.listen":              "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
		"p2p.mdns":                "false",
		"api.listen":              "127.0.0.1:0",
		"metrics.listen":          "127.0.0.1:0",
		"metrics.rate_limit":      "0",
		"metrics.sample_interval": "100ms",
	}
	for k, v := range flags {
		all[k] = v
	}
	cfg, err := config.Load(config.LoadOptions{Flags: all})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := node.New(context.Background(), cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		_ = n.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("node logs:\n%s", logs.String())
		}
	})
	return n, logs
}

func client(n *node.Node) *api.Client { return api.NewClient(n.APIAddr().String(), "") }

// storageOps drives puts, gets (some of missing keys) and deletes through the
// control API and checks the exact metric deltas from a real scrape.
func storageOps(t *testing.T, n *node.Node, backend string) {
	ctx := context.Background()
	c := client(n)
	url := n.MetricsURL()
	before, _ := testenv.Scrape(t, nil, url)

	const puts, gets, missing, deletes = 25, 15, 4, 7
	for i := 0; i < puts; i++ {
		if err := c.Put(ctx, fmt.Sprintf("k/%03d", i), []byte("value-"+strconv.Itoa(i)), "strong"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < gets; i++ {
		v, err := c.Get(ctx, fmt.Sprintf("k/%03d", i), "eventual")
		if err != nil || string(v) != "value-"+strconv.Itoa(i) {
			t.Fatalf("get %d = %q, %v", i, v, err)
		}
	}
	for i := 0; i < missing; i++ {
		_, err := c.Get(ctx, fmt.Sprintf("missing/%d", i), "")
		if ae, ok := err.(*api.Error); !ok || ae.StatusCode != 404 {
			t.Fatalf("get missing: %v, want 404", err)
		}
	}
	for i := 0; i < deletes; i++ {
		if err := c.Delete(ctx, fmt.Sprintf("k/%03d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	list, err := c.ListPage(ctx, "k/", "", 0, "")
	if err != nil || list.Count != puts-deletes {
		t.Fatalf("list = %d, %v; want %d", list.Count, err, puts-deletes)
	}
	// an invalid key is rejected with 400 and counted as a failed put
	err = c.Put(ctx, strings.Repeat("x", 1025), []byte("v"), "")
	if ae, ok := err.(*api.Error); !ok || ae.StatusCode != 400 {
		t.Fatalf("long key: %v, want 400", err)
	}

	after, _ := testenv.Scrape(t, nil, url)
	want := map[string]struct{ ops, errs float64 }{
		"put":    {puts + 1, 1},
		"get":    {gets + missing, 0},
		"delete": {deletes, 0},
		"list":   {1, 0},
	}
	for op, w := range want {
		l := testenv.L("operation", op, "backend", backend)
		// the node itself may store task records etc., but nothing else runs here
		if d := after.Value("storage_operations_total", l) - before.Value("storage_operations_total", l); d != w.ops {
			t.Errorf("storage_operations_total{%s,%s} rose by %v, want %v", op, backend, d, w.ops)
		}
		if d := after.Value("storage_operation_errors_total", l) - before.Value("storage_operation_errors_total", l); d != w.errs {
			t.Errorf("storage_operation_errors_total{%s,%s} rose by %v, want %v", op, backend, d, w.errs)
		}
		c0, s0 := before.HistCount("storage_operation_duration_seconds", l)
		c1, s1 := after.HistCount("storage_operation_duration_seconds", l)
		if float64(c1-c0) != w.ops {
			t.Errorf("duration _count{%s,%s} rose by %d, want %v", op, backend, c1-c0, w.ops)
		}
		if s1-s0 <= 0 {
			t.Errorf("duration _sum{%s,%s} did not rise (%v -> %v): sub-millisecond operations vanished", op, backend, s0, s1)
		}
	}
}

func TestStorageMetricsEndToEndLocal(t *testing.T) {
	n, _ := startNode(t, nil)
	storageOps(t, n, "local")
}

func TestStorageMetricsEndToEndRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	n, _ := startNode(t, map[string]string{
		"storage.backend":          "redis",
		"storage.redis.addrs":      r.Addr(),
		"storage.redis.key_prefix": "e2e-" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":",
	})
	storageOps(t, n, "redis")
	fams, _ := testenv.Scrape(t, nil, n.MetricsURL())
	if fams.SeriesCount("storage_redis_pool_connections") != 1 {
		t.Error("redis pool statistics missing")
	}
	if fams.Value("storage_redis_pool_hits_total", nil)+fams.Value("storage_redis_pool_misses_total", nil) == 0 {
		t.Error("redis pool statistics never moved")
	}
}

func TestEveryFamilyPresentFromFirstScrape(t *testing.T) {
	n, _ := startNode(t, nil)
	fams, body := testenv.Scrape(t, nil, n.MetricsURL())
	for _, name := range []string{
		"process_cpu_usage", "process_memory_bytes", "agent_peers_connected",
		"messages_received_total", "message_processing_duration_seconds", "message_processing_errors_total", "messages_sent_total",
		"storage_operations_total", "storage_operation_duration_seconds", "storage_operation_errors_total",
		"tasks_total", "task_duration_seconds", "agent_info",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if fams.SeriesCount(name) == 0 {
			t.Errorf("family %s absent from the first scrape", name)
		}
	}
	// every operation x the backend in use, at zero
	for _, op := range []string{"get", "put", "delete", "list"} {
		if fams.Find("storage_operations_total", testenv.L("operation", op, "backend", "local")) == nil {
			t.Errorf("storage_operations_total{%s,local} not pre-initialised", op)
		}
	}
	if got := fams.LabelValues("storage_operations_total", "backend"); len(got) != 1 || got[0] != "local" {
		t.Errorf("backends = %v, want [local]", got)
	}
	if !bytes.Contains(body, []byte(`agent_info{peer_id="`+n.PeerID().String()+`",version="test"} 1`)) {
		t.Error("agent_info does not name this node")
	}
	if fams.SeriesCount("libp2p_rcmgr_memory_allocations_allowed_total")+fams.SeriesCount("libp2p_swarm_connections_opened_total")+fams.SeriesCount("libp2p_identify_identify_pushes_triggered_total") == 0 {
		t.Log("note: no libp2p_* family found on the registry")
	}
}

func TestTwoNodesDoNotShareCounters(t *testing.T) {
	a, _ := startNode(t, nil)
	b, _ := startNode(t, nil)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := client(a).Put(ctx, "only-a-"+strconv.Itoa(i), []byte("x"), ""); err != nil {
			t.Fatal(err)
		}
	}
	fa, _ := testenv.Scrape(t, nil, a.MetricsURL())
	fb, _ := testenv.Scrape(t, nil, b.MetricsURL())
	l := testenv.L("operation", "put", "backend", "local")
	if fa.Value("storage_operations_total", l) != 3 || fb.Value("storage_operations_total", l) != 0 {
		t.Fatalf("a=%v b=%v, want 3 and 0", fa.Value("storage_operations_total", l), fb.Value("storage_operations_total", l))
	}
}

func TestScrapeUnderLoad(t *testing.T) {
	t.Parallel()
	n, _ := startNode(t, map[string]string{"storage.max_value_bytes": "65536"})
	// writers stop between requests (not by cancelling one in flight), so
	// every put the server counted was acknowledged to a writer.
	ctx := context.Background()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes atomic.Int64
	c := client(n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if err := c.Put(ctx, fmt.Sprintf("load/%d/%d", w, i%100), []byte("payload"), "eventual"); err != nil {
					t.Errorf("put: %v", err)
					return
				}
				writes.Add(1)
			}
		}(w)
	}
	httpc := &http.Client{Timeout: 5 * time.Second}
	scrapes := 0
	tick := time.NewTicker(50 * time.Millisecond)
	for scrapes < 40 {
		<-tick.C
		testenv.Scrape(t, httpc, n.MetricsURL()) // fails on non-200 or unparsable
		scrapes++
	}
	tick.Stop()
	stop.Store(true)
	wg.Wait()
	fams, _ := testenv.Scrape(t, httpc, n.MetricsURL())
	got := fams.Value("storage_operations_total", testenv.L("operation", "put", "backend", "local"))
	if got != float64(writes.Load()) {
		t.Fatalf("puts counted %v, acknowledged %d", got, writes.Load())
	}
}

func TestMetricsDisabled(t *testing.T) {
	// find a free port, then ask the node to use it with metrics disabled
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	n, logs := startNode(t, map[string]string{"metrics.enabled": "false", "metrics.listen": addr})
	if n.MetricsAddr() != nil || n.MetricsURL() != "" {
		t.Fatal("metrics server exists although disabled")
	}
	if !strings.Contains(logs.String(), "Metrics endpoint disabled") {
		t.Fatal("no 'Metrics endpoint disabled' log line")
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("something listens on %s although metrics are disabled", addr)
	}
	ctx := context.Background()
	if err := client(n).Put(ctx, "still", []byte("works"), ""); err != nil {
		t.Fatal(err)
	}
	if v, err := client(n).Get(ctx, "still", ""); err != nil || string(v) != "works" {
		t.Fatalf("get = %q, %v", v, err)
	}
	st, err := client(n).Status(ctx)
	if err != nil || st.State != "active" || st.MetricsURL != "" {
		t.Fatalf("status = %+v, %v", st, err)
	}
}

// vmRSS reads VmRSS of this process from /proc/self/status, in bytes.
func vmRSS(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	t.Fatal("VmRSS not found")
	return 0
}

func TestProcessSamplerReportsRealValues(t *testing.T) {
	n, _ := startNode(t, nil) // sample_interval 100ms
	// keep a core busy until a sample shows it
	stop := make(chan struct{})
	var spinWG sync.WaitGroup
	spinWG.Add(1)
	go func() {
		defer spinWG.Done()
		x := 0
		for {
			select {
			case <-stop:
				return
			default:
				for i := 0; i < 1e5; i++ {
					x += i
				}
			}
		}
	}()
	testenv.Eventually(t, 10*time.Second, func() error {
		fams, _ := testenv.Scrape(t, nil, n.MetricsURL())
		if cpu := fams.Value("process_cpu_usage", nil); cpu <= 0 {
			return fmt.Errorf("process_cpu_usage = %v while busy", cpu)
		}
		return nil
	})
	close(stop)
	spinWG.Wait()
	fams, _ := testenv.Scrape(t, nil, n.MetricsURL())
	mem := fams.Value("process_memory_bytes", nil)
	rss := vmRSS(t)
	if mem < rss*0.7 || mem > rss*1.3 {
		t.Fatalf("process_memory_bytes = %.0f, VmRSS = %.0f: not within 30%%", mem, rss)
	}
}

func TestStatusAndAuth(t *testing.T) {
	n, _ := startNode(t, map[string]string{"api.token": "t0ken"})
	ctx := context.Background()
	if _, err := api.NewClient(n.APIAddr().String(), "").Status(ctx); err == nil {
		t.Fatal("status without token succeeded")
	} else if ae, ok := err.(*api.Error); !ok || ae.StatusCode != 401 {
		t.Fatalf("status without token: %v, want 401", err)
	}
	if _, err := api.NewClient(n.APIAddr().String(), "wrong").Status(ctx); err == nil {
		t.Fatal("status with a wrong token succeeded")
	}
	st, err := api.NewClient(n.APIAddr().String(), "t0ken").Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "active" || st.PeerID != n.PeerID().String() || st.Version != "test" || st.StorageBackend != "local" || len(st.Addresses) == 0 || st.Peers != 0 {
		t.Fatalf("status = %+v", st)
	}
}

func TestAPIErrorCodes(t *testing.T) {
	t.Parallel()
	n, _ := startNode(t, map[string]string{"storage.max_value_bytes": "1024"})
	base := "http://" + n.APIAddr().String()
	do := func(method, path string, body []byte) int {
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 400 && !bytes.Contains(b, []byte(`"error"`)) {
			t.Errorf("%s %s: error body %q is not JSON {\"error\":...}", method, path, b)
		}
		return resp.StatusCode
	}
	cases := []struct {
		name, method, path string
		body               []byte
		want               int
	}{
		{"put ok", "PUT", "/api/v1/kv/a%2Fb%20c", []byte("v"), 200},
		{"get escaped key", "GET", "/api/v1/kv/a%2Fb%20c", nil, 200},
		{"missing", "GET", "/api/v1/kv/nope", nil, 404},
		{"too large", "PUT", "/api/v1/kv/big", bytes.Repeat([]byte("x"), 1025), 413},
		{"at limit", "PUT", "/api/v1/kv/big", bytes.Repeat([]byte("x"), 1024), 200},
		{"bad consistency", "GET", "/api/v1/kv/a?consistency=sometimes", nil, 400},
		{"NUL in key", "PUT", "/api/v1/kv/a%00b", []byte("v"), 400},
		{"bad task json", "POST", "/api/v1/tasks", []byte("{not json"), 400},
		{"unknown task type", "POST", "/api/v1/tasks", []byte(`{"type":"rm.rf","input":{}}`), 400},
		{"task input not object", "POST", "/api/v1/tasks", []byte(`{"type":"text.chunk","input":"x"}`), 400},
		{"task input over p2p.max_message_bytes", "POST", "/api/v1/tasks", append(append([]byte(`{"type":"text.chunk","input":{"text":"`), bytes.Repeat([]byte("x"), 1<<20)...), []byte(`"}}`)...), 413},
		{"unknown task", "GET", "/api/v1/tasks/0123456789abcdef0123456789abcdef", nil, 404},
		{"ping bad peer", "POST", "/api/v1/ping", []byte(`{"peer":"not-a-peer"}`), 400},
		{"ping this node by ID", "POST", "/api/v1/ping", []byte(`{"peer":"` + n.PeerID().String() + `"}`), 400},
		{"ping this node by address", "POST", "/api/v1/ping", []byte(`{"peer":"` + n.Host().Addrs()[0] + `"}`), 400},
		{"task on this node by address", "POST", "/api/v1/tasks", []byte(`{"type":"text.chunk","input":{"text":"x"},"peer":"` + n.Host().Addrs()[0] + `"}`), 202},
		{"no route", "GET", "/api/v2/nothing", nil, 404},
	}
	for _, tc := range cases {
		if got := do(tc.method, tc.path, tc.body); got != tc.want {
			t.Errorf("%s: %s %s = %d, want %d", tc.name, tc.method, tc.path, got, tc.want)
		}
	}
	v, err := client(n).Get(context.Background(), "a/b c", "")
	if err != nil || string(v) != "v" {
		t.Fatalf("escaped key round trip = %q, %v", v, err)
	}
}

// TestRedisOutageAtNodeLevel kills the node's Redis mid-run: the node stays
// up, storage answers 503 within the retry budget and every failed
// operation is counted; when Redis returns the same node serves again.
func TestRedisOutageAtNodeLevel(t *testing.T) {
	r := testenv.StartRedis(t)
	n, logs := startNode(t, map[string]string{
		"storage.backend":             "redis",
		"storage.redis.addrs":         r.Addr(),
		"storage.redis.max_retries":   "2",
		"storage.redis.retry_backoff": "20ms",
		"storage.redis.dial_timeout":  "200ms",
	})
	ctx := context.Background()
	c := client(n)
	if err := c.Put(ctx, "before", []byte("1"), ""); err != nil {
		t.Fatal(err)
	}
	before, _ := testenv.Scrape(t, nil, n.MetricsURL())

	r.Kill()
	const failing = 3
	for i := 0; i < failing; i++ {
		err := c.Put(ctx, "during", []byte("x"), "")
		if ae, ok := err.(*api.Error); !ok || ae.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("put during outage: %v, want 503", err)
		}
	}
	st, err := c.Status(ctx)
	if err != nil || st.State != "active" {
		t.Fatalf("node during outage: %+v, %v", st, err)
	}
	mid, _ := testenv.Scrape(t, nil, n.MetricsURL())
	l := testenv.L("operation", "put", "backend", "redis")
	if d := mid.Value("storage_operation_errors_total", l) - before.Value("storage_operation_errors_total", l); d != failing {
		t.Fatalf("storage_operation_errors_total{put,redis} rose by %v, want %d", d, failing)
	}
	// one warning per outage, not one per failed operation
	if got := strings.Count(logs.String(), "Redis unavailable"); got != 1 {
		t.Fatalf("%d outage warnings for %d failed operations, want 1", got, failing)
	}

	r.Restart()
	testenv.Eventually(t, 20*time.Second, func() error {
		return c.Put(ctx, "after", []byte("2"), "")
	})
	if v, err := c.Get(ctx, "after", ""); err != nil || string(v) != "2" {
		t.Fatalf("get after recovery = %q, %v", v, err)
	}
	if !strings.Contains(logs.String(), "Redis available again") {
		t.Fatal("no recovery log line")
	}
}
