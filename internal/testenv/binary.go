package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// moduleRoot finds the directory holding go.mod above this source file.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate testenv source")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found")
		}
		dir = parent
	}
}

// Binary builds cmd/p2p-agent once per test process and returns the path of
// the executable. It is built without -race: the in-process tests carry the
// race detector, the process tests measure the binary operators run.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "p2p-agent-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "p2p-agent")
		args := []string{"build", "-o", buildPath, "-ldflags", "-X main.version=test"}
		args = append(args, "./cmd/p2p-agent")
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Node is a p2p-agent process started by a test.
type Node struct {
	t       testing.TB
	cmd     *exec.Cmd
	DataDir string
	// Started is the decoded "node started" log line.
	PeerID     string
	P2PAddrs   []string
	APIAddr    string
	MetricsURL string

	logMu sync.Mutex
	logs  []string
	exit  chan struct{}
	err   error
}

// NodeOptions configures StartNode.
type NodeOptions struct {
	// DataDir reuses a data directory (default: a fresh temp dir).
	DataDir string
	// Args are extra arguments after "start" (e.g. "--storage.backend=redis").
	Args []string
	// Env adds environment variables.
	Env []string
	// NoWait returns as soon as the process runs, without waiting for readiness.
	NoWait bool
}

// StartNode starts `p2p-agent start` on free loopback ports (p2p on
// 127.0.0.1 TCP/QUIC port 0, API and metrics on 127.0.0.1:0, mDNS off) in a
// temp data dir, waits for its "node started" log line and for /readyz, and
// kills it at test cleanup if it is still running.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	bin := Binary(t)
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	args := []string{"start",
		"--data-dir=" + opts.DataDir,
		"--log.format=json",
		"--log.level=info",
		"--p2p.listen=/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
		"--p2p.mdns=false",
		"--api.listen=127.0.0.1:0",
		"--metrics.listen=127.0.0.1:0",
		"--metrics.rate_limit=0",
	}
	args = append(args, opts.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), opts.Env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &Node{t: t, cmd: cmd, DataDir: opts.DataDir, exit: make(chan struct{})}
	started := make(chan map[string]any, 1)
	logsRead := make(chan struct{})
	go func() {
		defer close(logsRead)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			n.logMu.Lock()
			n.logs = append(n.logs, line)
			n.logMu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "node started" {
				select {
				case started <- rec:
				default:
				}
			}
		}
		// A line over the scanner's limit ends the loop: keep draining so
		// the process never blocks writing to its stderr.
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		// Wait closes the stderr pipe: every line must be read first
		// (os/exec), or the last ones, written just before exit, are lost.
		<-logsRead
		n.err = cmd.Wait()
		close(n.exit)
	}()
	t.Cleanup(func() {
		select {
		case <-n.exit:
		default:
			_ = cmd.Process.Kill()
			<-n.exit
		}
		if t.Failed() {
			t.Logf("logs of node %s:\n%s", n.PeerID, strings.Join(n.Logs(), "\n"))
		}
	})
	if opts.NoWait {
		return n
	}
	select {
	case rec := <-started:
		n.PeerID, _ = rec["peer_id"].(string)
		n.MetricsURL, _ = rec["metrics_url"].(string)
		if u, _ := rec["api_url"].(string); u != "" {
			n.APIAddr = strings.TrimPrefix(u, "http://")
		}
		if addrs, ok := rec["p2p_addrs"].([]any); ok {
			for _, a := range addrs {
				if s, ok := a.(string); ok {
					n.P2PAddrs = append(n.P2PAddrs, s)
				}
			}
		}
	case <-n.exit:
		t.Fatalf("node exited before starting: %v\n%s", n.err, strings.Join(n.Logs(), "\n"))
	case <-time.After(60 * time.Second):
		t.Fatalf("node did not start within 60s\n%s", strings.Join(n.Logs(), "\n"))
	}
	if n.MetricsURL != "" {
		base := strings.TrimSuffix(n.MetricsURL, "/metrics")
		Eventually(t, 30*time.Second, func() error {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("readyz %d", resp.StatusCode)
			}
			return nil
		})
	}
	return n
}

// cleanEnv is the test's environment without P2P_AGENT_ variables, so a
// developer's shell settings never leak into a test node.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "P2P_AGENT_") {
			out = append(out, kv)
		}
	}
	return out
}

// Logs returns the node's log lines so far.
func (n *Node) Logs() []string {
	n.logMu.Lock()
	defer n.logMu.Unlock()
	return append([]string(nil), n.logs...)
}

// HasLog reports whether a log line contains s.
func (n *Node) HasLog(s string) bool {
	for _, l := range n.Logs() {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// MetricsBase is the metrics server's base URL (without the path).
func (n *Node) MetricsBase() string { return strings.TrimSuffix(n.MetricsURL, "/metrics") }

// FullAddr returns the node's first TCP p2p multiaddr with /p2p/ID.
func (n *Node) FullAddr() string {
	for _, a := range n.P2PAddrs {
		if strings.Contains(a, "/tcp/") {
			return a
		}
	}
	if len(n.P2PAddrs) > 0 {
		return n.P2PAddrs[0]
	}
	return ""
}

// Signal sends sig to the process.
func (n *Node) Signal(sig os.Signal) {
	_ = n.cmd.Process.Signal(sig)
}

// PID is the process id of the node.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Kill kills the process with SIGKILL and waits for it.
func (n *Node) Kill() {
	_ = n.cmd.Process.Kill()
	<-n.exit
}

// Wait waits up to d for the process to exit and returns its exit code.
func (n *Node) Wait(d time.Duration) (int, error) {
	select {
	case <-n.exit:
	case <-time.After(d):
		return -1, fmt.Errorf("process still running after %s", d)
	}
	if n.err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(n.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return -1, n.err
}

// Stop sends SIGTERM and waits for a clean exit, failing the test otherwise.
func (n *Node) Stop() {
	n.t.Helper()
	n.Signal(syscall.SIGTERM)
	code, err := n.Wait(20 * time.Second)
	if err != nil || code != 0 {
		n.t.Fatalf("node exit: code %d err %v", code, err)
	}
}

// CLI runs the built binary with args against this node's API and returns
// stdout, stderr and the exit code.
func (n *Node) CLI(args ...string) (stdout, stderr string, code int) {
	n.t.Helper()
	return RunCLI(n.t, append(args, "--api="+n.APIAddr)...)
}

// RunCLI runs the built binary with args and returns stdout, stderr and the exit code.
func RunCLI(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Env = cleanEnv()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("running p2p-agent %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// Eventually polls f until it returns nil or d passes, then fails the test
// with the last error.
func Eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	delay := 5 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", d, err)
		}
		time.Sleep(delay)
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}
