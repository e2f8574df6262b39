// Command mesh measures a mesh of N p2p-agent processes on this machine
// (docs/performance.md, "A mesh of 50 nodes"): one bootstrap peer, mDNS off,
// TCP on loopback. It reports the time to a full mesh after the last node
// started, per-node idle CPU and RSS, background bytes per second per node
// and for the whole mesh, GET /sd latency with N targets, and the time a
// real Prometheus configured only with http_sd_configs (one node's /sd)
// takes to scrape all N.
//
//	go run ./scripts/mesh -bin /path/to/p2p-agent -n 50
//
// scripts/mesh50.sh builds the binary and runs it for 5, 20 and 50 nodes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type node struct {
	i       int
	cmd     *exec.Cmd
	api     string
	metrics string
	id      string
	addr    string
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var client = &http.Client{Timeout: 5 * time.Second}

func getJSON(url string, out any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

type status struct {
	PeerID    string   `json:"peer_id"`
	State     string   `json:"state"`
	Peers     int      `json:"peers"`
	Addresses []string `json:"addresses"`
}

func start(bin, dir string, i int, boot, ttl string) (*node, error) {
	n := &node{i: i, api: fmt.Sprintf("127.0.0.1:%d", freePort()), metrics: fmt.Sprintf("127.0.0.1:%d", freePort())}
	args := []string{"start",
		"--data-dir=" + filepath.Join(dir, strconv.Itoa(i)),
		"--node.name=node-" + strconv.Itoa(i),
		"--log.level=warn",
		"--p2p.listen=/ip4/127.0.0.1/tcp/0",
		"--p2p.mdns=false",
		"--api.listen=" + n.api,
		"--metrics.listen=" + n.metrics,
		"--metrics.rate_limit=0",
		"--p2p.peer_ttl=" + ttl,
	}
	if boot != "" {
		args = append(args, "--p2p.bootstrap="+boot)
	}
	logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("node-%d.log", i)))
	if err != nil {
		return nil, err
	}
	n.cmd = exec.Command(bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st status
		if err := getJSON("http://"+n.api+"/api/v1/status", &st); err == nil && st.State == "active" {
			n.id = st.PeerID
			for _, a := range st.Addresses {
				if strings.Contains(a, "/tcp/") {
					n.addr = a
				}
			}
			return n, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node %d not active within 60s (log %s)", i, logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStat returns user+system CPU ticks, RSS bytes and bytes written
// (wchar: TCP sends on loopback, the node's only traffic once idle) of pid.
func procStat(pid int) (ticks int64, rss int64, wchar int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	ticks = ut + st
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	rss = pages * int64(os.Getpagesize())
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			wchar, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return
}

func pct(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func mean(xs []float64) float64 {
	var t float64
	for _, x := range xs {
		t += x
	}
	return t / float64(len(xs))
}

func main() {
	bin := flag.String("bin", "", "p2p-agent binary")
	n := flag.Int("n", 50, "nodes")
	settle := flag.Duration("settle", 20*time.Second, "wait after the full mesh before measuring idle")
	window := flag.Duration("window", 30*time.Second, "idle measurement window")
	ttl := flag.String("ttl", "1m", "p2p.peer_ttl of the nodes")
	promBin := flag.String("prometheus", "prometheus", "prometheus binary (empty: skip)")
	flag.StringVar(&chromiumBin, "chromium", "", "chromium binary: also measure the web view of the bootstrap node (empty: skip)")
	flag.Parse()
	if err := run(*bin, *n, *settle, *window, *ttl, *promBin); err != nil {
		fmt.Fprintln(os.Stderr, "mesh:", err)
		os.Exit(1)
	}
}

func run(bin string, n int, settle, window time.Duration, ttl, promBin string) error {
	if bin == "" {
		return errors.New("-bin is required")
	}
	dir, err := os.MkdirTemp("", "mesh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var nodes []*node
	defer func() {
		for _, nd := range nodes {
			_ = nd.cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, nd := range nodes {
			_ = nd.cmd.Wait()
		}
	}()
	t0 := time.Now()
	boot, err := start(bin, dir, 0, "", ttl)
	if err != nil {
		return err
	}
	nodes = append(nodes, boot)
	for i := 1; i < n; i++ {
		nd, err := start(bin, dir, i, boot.addr, ttl)
		if err != nil {
			return err
		}
		nodes = append(nodes, nd)
	}
	lastStarted := time.Now()
	fmt.Printf("nodes: %d (one bootstrap peer, mDNS off, TCP on 127.0.0.1), all started in %s\n", n, lastStarted.Sub(t0).Round(time.Millisecond))

	// time to full mesh (every node with n-1 peers), and to the connection
	// manager's low watermark (32) where that is lower
	target := min(n-1, 32)
	var atTarget, atFull time.Time
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		minPeers := n
		for _, nd := range nodes {
			var st status
			if err := getJSON("http://"+nd.api+"/api/v1/status", &st); err != nil {
				minPeers = 0
				break
			}
			minPeers = min(minPeers, st.Peers)
		}
		if atTarget.IsZero() && minPeers >= target {
			atTarget = time.Now()
		}
		if minPeers >= n-1 {
			atFull = time.Now()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !atTarget.IsZero() {
		fmt.Printf("every node >= %d peers: %s after the last node started\n", target, atTarget.Sub(lastStarted).Round(10*time.Millisecond))
	}
	if atFull.IsZero() {
		fmt.Printf("full mesh: not within 120s\n")
	} else {
		fmt.Printf("full mesh (%d peers each): %s after the last node started\n", n-1, atFull.Sub(lastStarted).Round(10*time.Millisecond))
	}

	// idle: nothing but the nodes' own background work
	time.Sleep(settle)
	type sample struct{ ticks, rss, wchar int64 }
	before := make([]sample, n)
	for i, nd := range nodes {
		t, r, w, err := procStat(nd.cmd.Process.Pid)
		if err != nil {
			return err
		}
		before[i] = sample{t, r, w}
	}
	wStart := time.Now()
	time.Sleep(window)
	secs := time.Since(wStart).Seconds()
	var cpu, rss, bps []float64
	for i, nd := range nodes {
		t, r, w, err := procStat(nd.cmd.Process.Pid)
		if err != nil {
			return err
		}
		cpu = append(cpu, float64(t-before[i].ticks)/100/secs*100) // USER_HZ 100
		rss = append(rss, float64(r))
		bps = append(bps, float64(w-before[i].wchar)/secs)
	}
	var total float64
	for _, b := range bps {
		total += b
	}
	fmt.Printf("idle over %s: CPU per node mean %.2f%% p99 %.2f%% of a core; RSS per node mean %.1f MiB max %.1f MiB\n",
		window, mean(cpu), pct(cpu, 0.99), mean(rss)/(1<<20), pct(rss, 1)/(1<<20))
	fmt.Printf("background traffic: %.2f KB/s per node (mean; max %.2f), %.1f KB/s whole mesh\n", mean(bps)/1000, pct(bps, 1)/1000, total/1000)

	// /sd with n targets
	sdURL := "http://" + boot.metrics + "/sd"
	var lat []float64
	var groups []map[string]any
	for i := 0; i < 200; i++ {
		t := time.Now()
		groups = nil
		if err := getJSON(sdURL, &groups); err != nil {
			return err
		}
		lat = append(lat, float64(time.Since(t).Microseconds())/1000)
	}
	fmt.Printf("GET /sd: %d targets; latency over 200 requests p50 %.2f ms p99 %.2f ms max %.2f ms\n", len(groups), pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1))

	var view struct {
		Nodes []any `json:"nodes"`
		Edges []any `json:"edges"`
	}
	t := time.Now()
	if err := getJSON("http://"+boot.api+"/api/v1/network", &view); err != nil {
		return err
	}
	fmt.Printf("GET /api/v1/network: %d nodes, %d edges in %s\n", len(view.Nodes), len(view.Edges), time.Since(t).Round(time.Millisecond))

	if chromiumBin != "" {
		if err := browserCost(chromiumBin, dir, "http://"+boot.api+"/ui/", n); err != nil {
			return err
		}
	}
	if promBin == "" {
		return nil
	}
	return promScrape(promBin, dir, sdURL, n)
}

var chromiumBin string

// browserCost opens the web view in a real headless Chromium and reports
// the time from navigation until the page has drawn every node (the page
// logs it to the console, which Chromium prints on stderr), then the CPU the
// browser's processes use over 30 s of live updates (from /proc).
func browserCost(bin, dir, url string, n int) error {
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--enable-logging=stderr", "--v=0",
		"--user-data-dir="+filepath.Join(dir, "chromium"), "--remote-debugging-port=0", url)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if i := strings.Index(sc.Text(), "p2p-agent-ui first-render-ms "); i >= 0 {
				select {
				case first <- strings.SplitN(sc.Text()[i:], `"`, 2)[0]:
				default:
				}
			}
		}
	}()
	select {
	case line := <-first:
		fmt.Printf("web view: %s (ms from navigation to the first complete drawing)\n", line)
	case <-time.After(30 * time.Second):
		return errors.New("web view: no first render within 30 s")
	}
	time.Sleep(3 * time.Second) // updating
	before := treeCPU(cmd.Process.Pid)
	t := time.Now()
	time.Sleep(30 * time.Second)
	used := treeCPU(cmd.Process.Pid) - before
	fmt.Printf("web view: browser CPU over %s of live updates (every 1 s, %d nodes): %.2f s, %.1f %% of one core\n",
		time.Since(t).Round(time.Second), n, used, 100*used/time.Since(t).Seconds())
	return nil
}

// treeCPU returns the user+system CPU seconds of pid and its descendants.
func treeCPU(pid int) float64 {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	cpu := map[int]float64{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 13 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		parent[p], cpu[p] = pp, (ut+st)/100 // USER_HZ
	}
	total := 0.0
	for p := range cpu {
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				total += cpu[p]
				break
			}
		}
	}
	return total
}

func promScrape(bin, dir, sdURL string, n int) error {
	port := freePort()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 5s
  scrape_timeout: 4s
scrape_configs:
  - job_name: p2p-agent
    http_sd_configs:
      - url: %s
        refresh_interval: 5s
`, sdURL)), 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	t0 := time.Now()
	deadline := t0.Add(120 * time.Second)
	for time.Now().Before(deadline) {
		var r struct {
			Data struct {
				ActiveTargets []struct {
					Health string `json:"health"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/api/v1/targets?state=active", port), &r); err == nil {
			up := 0
			for _, t := range r.Data.ActiveTargets {
				if t.Health == "up" {
					up++
				}
			}
			if up == n {
				fmt.Printf("prometheus (http_sd_configs -> one node's /sd only): %d of %d targets up %s after it started\n",
					up, len(r.Data.ActiveTargets), time.Since(t0).Round(100*time.Millisecond))
				var q struct {
					Data struct {
						Result []struct {
							Value [2]any `json:"value"`
						} `json:"result"`
					} `json:"data"`
				}
				if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=count(agent_info)", port), &q); err == nil && len(q.Data.Result) == 1 {
					fmt.Printf("prometheus: count(agent_info) = %v\n", q.Data.Result[0].Value[1])
				}
				return nil
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("prometheus: not all %d targets up within 120s", n)
}
