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
