package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
	"golang.org/x/crypto/bcrypt"
)

// trickleBody dials addr, announces a PUT body of 1000 bytes and sends one
// byte every interval until the connection breaks or stop closes. The
// returned channel closes when the server closed the connection.
func trickleBody(t *testing.T, addr, key string, interval time.Duration, stop <-chan struct{}) <-chan struct{} {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fmt.Fprintf(c, "PUT /api/v1/kv/%s HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n", key)
	closed := make(chan struct{})
	go func() { // the server closing the connection ends this read
		_, _ = io.Copy(io.Discard, c)
		close(closed)
	}()
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-closed:
				return
			case <-time.After(interval):
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	return closed
}

func TestE2ESlowBodyIsCutAndNothingStored(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t, "builds and starts the binary")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	closed := trickleBody(t, n.APIAddr, "slow", 300*time.Millisecond, stop)
	select {
	case <-closed:
	case <-time.After(8 * time.Second):
		t.Fatal("a body trickling 3 B/s still open after 8s (floor 4096 B/s, grace 2s)")
	}
	t.Logf("trickling client cut after %s", time.Since(start).Round(time.Millisecond))
	resp, err := http.Get("http://" + n.APIAddr + "/api/v1/kv/slow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET after the cut upload: %d, want 404 (nothing stored)", resp.StatusCode)
	}
}

func TestE2EShutdownNotHeldBySlowClient(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t, "builds and starts the binary")
	// A floor of 1 B/s lets the trickle (5 B/s) live: only shutdown ends it.
	n := testenv.StartNode(t, testenv.NodeOptions{Args: []string{"--api.min_body_rate=1"}})
	stop := make(chan struct{})
	defer close(stop)
	closed := trickleBody(t, n.APIAddr, "slow", 200*time.Millisecond, stop)
	time.Sleep(2500 * time.Millisecond) // past the body grace: the request is in flight
	select {
	case <-closed:
		t.Fatal("trickling client cut before shutdown; the test proves nothing")
	default:
	}
	start := time.Now()
	n.Signal(os.Interrupt)
	code, err := n.Wait(10 * time.Second)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGINT with a trickling client: exit %d after %s", code, took.Round(time.Millisecond))
	if code != 0 || took > 5*time.Second {
		t.Fatalf("exit %d after %s, want 0 within 5s", code, took)
	}
}

// vmHWM is the peak resident set size of process pid in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

func TestE2EParallelLargePutsBoundedMemory(t *testing.T) {
	testenv.SkipIfShort(t, "builds and starts the binary")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	body := bytes.Repeat([]byte("v"), 8<<20)
	var (
		mu    sync.Mutex
		codes = map[int]int{}
		wg    sync.WaitGroup
	)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/api/v1/kv/big/%d", n.APIAddr, i), bytes.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			code := -1
			if err == nil {
				code = resp.StatusCode
				if code == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
					code = -2
				}
				resp.Body.Close()
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	peak := vmHWM(t, n.PID())
	t.Logf("50 parallel 8 MiB PUTs: answers %v, peak RSS %d MiB", codes, peak>>20)
	if codes[http.StatusOK]+codes[http.StatusCreated]+codes[http.StatusNoContent] == 0 ||
		codes[http.StatusOK]+codes[http.StatusCreated]+codes[http.StatusNoContent]+codes[http.StatusServiceUnavailable] != 50 {
		t.Fatalf("answers %v: want only successes and 503 with Retry-After, at least one success", codes)
	}
	if peak > 300<<20 {
		t.Fatalf("peak RSS %d MiB, want under 300 MiB", peak>>20)
	}
	// A refused PUT stored nothing: every key is either complete or absent.
	for i := 0; i < 50; i++ {
		resp, err := http.Get(fmt.Sprintf("http://%s/api/v1/kv/big/%d", n.APIAddr, i))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && len(got) != len(body) && !bytes.Contains(got, body[:1024]) {
			t.Fatalf("key big/%d holds %d bytes", i, len(got))
		}
	}
}

// cpuTicks is utime+stime of process pid in clock ticks (1/100 s).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

func TestE2EMetricsWrongPasswordsCheap(t *testing.T) {
	testenv.SkipIfShort(t, "builds and starts the binary")
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(webCfg, []byte("basic_auth_users:\n  prometheus: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// /readyz is behind basic auth too: wait for the start line ourselves.
	n := testenv.StartNode(t, testenv.NodeOptions{NoWait: true, Args: []string{"--metrics.web_config_file=" + webCfg}})
	var metricsURL string
	testenv.Eventually(t, 60*time.Second, func() error {
		for _, line := range n.Logs() {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "node started" {
				metricsURL, _ = rec["metrics_url"].(string)
				return nil
			}
		}
		return errors.New("not started")
	})
	do := func(pass string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, metricsURL, nil)
		req.SetBasicAuth("prometheus", pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := do("s3cret"); resp.StatusCode != 200 {
		t.Fatalf("right password: %d", resp.StatusCode)
	}
	before := cpuTicks(t, n.PID())
	codes := map[int]int{}
	for i := 0; i < 100; i++ {
		codes[do(fmt.Sprintf("guess-%d", i)).StatusCode]++
	}
	spent := time.Duration(cpuTicks(t, n.PID())-before) * 10 * time.Millisecond
	t.Logf("100 wrong guesses: answers %v, node CPU %s", codes, spent)
	if codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 100 {
		t.Fatalf("answers %v, want 100 refusals", codes)
	}
	if spent >= 700*time.Millisecond {
		t.Fatalf("100 wrong guesses cost the node %s of CPU, want well under 1s", spent)
	}
	if resp := do("s3cret"); resp.StatusCode != 200 {
		t.Fatalf("right password after the guesses: %d", resp.StatusCode)
	}
}

func TestE2ESlowBodyWithoutTokenIsCut(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t, "builds and starts the binary")
	// The 401 is answered before the body is read; the server then drains
	// the body under the same floor rate, so the trickler is still cut.
	n := testenv.StartNode(t, testenv.NodeOptions{Args: []string{"--api.token=tok"}})
	stop := make(chan struct{})
	defer close(stop)
	closed := trickleBody(t, n.APIAddr, "slow", 300*time.Millisecond, stop)
	select {
	case <-closed:
	case <-time.After(8 * time.Second):
		t.Fatal("an unauthenticated trickling body still open after 8s")
	}
}
