package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

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
