package main_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

func TestBinaryLifecycle(t *testing.T) {
	n := testenv.StartNode(t, testenv.NodeOptions{})

	// the startup line names peer ID, p2p addresses, metrics URL and API URL
	if n.PeerID == "" || len(n.P2PAddrs) == 0 || n.MetricsURL == "" || n.APIAddr == "" {
		t.Fatalf("startup line incomplete: %+v", n)
	}

	out, errOut, code := n.CLI("status")
	if code != 0 {
		t.Fatalf("status exit %d: %s", code, errOut)
	}
	for _, want := range []string{"State:", "active", n.PeerID, "Storage:", "local", "Peers:"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = n.CLI("status", "--json")
	var st struct {
		PeerID, State, StorageBackend string `json:"-"`
	}
	var raw map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &raw) != nil {
		t.Fatalf("status --json: exit %d, %q", code, out)
	}
	_ = st
	if raw["peer_id"] != n.PeerID || raw["state"] != "active" || raw["storage_backend"] != "local" || raw["version"] != "test" {
		t.Fatalf("status --json = %v", raw)
	}

	// p2p-agent id on the same data dir names the same identity
	idOut, _, code := testenv.RunCLI(t, "id", "--data-dir", n.DataDir)
	if code != 0 || strings.TrimSpace(idOut) != n.PeerID {
		t.Fatalf("id = %q (exit %d), want %s", idOut, code, n.PeerID)
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(n.MetricsBase() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s = %d", path, resp.StatusCode)
		}
	}

	metricsAddr := strings.TrimPrefix(n.MetricsBase(), "http://")
	n.Signal(syscall.SIGTERM)
	code, err := n.Wait(15 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("exit after SIGTERM: code %d, %v", code, err)
	}
	for _, addr := range []string{n.APIAddr, metricsAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after exit", addr)
		}
	}
	if !n.HasLog(`"node stopped"`) {
		t.Error("no 'node stopped' log line")
	}

	// identity is stable across restarts
	n2 := testenv.StartNode(t, testenv.NodeOptions{DataDir: n.DataDir})
	if n2.PeerID != n.PeerID {
		t.Fatalf("peer ID changed across restart: %s -> %s", n.PeerID, n2.PeerID)
	}
	n2.Stop()
}

func TestBinaryStorageMetrics(t *testing.T) {
	n := testenv.StartNode(t, testenv.NodeOptions{})
	before, _ := testenv.Scrape(t, nil, n.MetricsURL)
	const puts, gets, deletes = 6, 4, 3
	for i := 0; i < puts; i++ {
		if _, e, code := n.CLI("kv", "put", fmt.Sprintf("bin/%d", i), fmt.Sprintf("v%d", i)); code != 0 {
			t.Fatalf("kv put: %d %s", code, e)
		}
	}
	for i := 0; i < gets; i++ {
		out, e, code := n.CLI("kv", "get", fmt.Sprintf("bin/%d", i), "--consistency", "eventual")
		if code != 0 || out != fmt.Sprintf("v%d", i) {
			t.Fatalf("kv get: %q exit %d %s", out, code, e)
		}
	}
	for i := 0; i < deletes; i++ {
		if _, e, code := n.CLI("kv", "delete", fmt.Sprintf("bin/%d", i)); code != 0 {
			t.Fatalf("kv delete: %d %s", code, e)
		}
	}
	out, _, code := n.CLI("kv", "list", "bin/")
	if code != 0 || strings.Count(out, "\n") != puts-deletes {
		t.Fatalf("kv list: %q", out)
	}
	// a missing key exits 1 with "not found"
	_, errOut, code := n.CLI("kv", "get", "bin/0")
	if code != 1 || !strings.Contains(errOut, "not found") {
		t.Fatalf("kv get missing: exit %d, %q", code, errOut)
	}
	after, _ := testenv.Scrape(t, nil, n.MetricsURL)
	for op, want := range map[string]float64{"put": puts, "get": gets + 1, "delete": deletes, "list": 1} {
		l := testenv.L("operation", op, "backend", "local")
		if d := after.Value("storage_operations_total", l) - before.Value("storage_operations_total", l); d != want {
			t.Errorf("storage_operations_total{%s} rose by %v, want %v", op, d, want)
		}
		c0, _ := before.HistCount("storage_operation_duration_seconds", l)
		c1, sum := after.HistCount("storage_operation_duration_seconds", l)
		if float64(c1-c0) != want || sum <= 0 {
			t.Errorf("histogram{%s}: count +%d sum %v, want +%v and > 0", op, c1-c0, sum, want)
		}
	}
	n.Stop()
}

func TestCLIExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("metrics:\n  listen: \"localhost:99999\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(typo, []byte("storage:\n  backnd: redis\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("storage:\n  backend: local\nmetrics:\n  enabled: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// a port nothing listens on
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()

	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"version", []string{"version"}, 0, ""},
		{"config check good", []string{"config", "check", good}, 0, ""},
		{"config check bad port", []string{"config", "check", bad}, 2, "metrics.listen"},
		{"config check unknown key", []string{"config", "check", typo}, 2, "backnd"},
		{"config check missing file", []string{"config", "check", filepath.Join(dir, "nope.yaml")}, 2, "nope.yaml"},
		{"start bad flag value", []string{"start", "--data-dir", dir, "--log.level=loud"}, 2, "log.level"},
		{"start unknown flag", []string{"start", "--no-such-flag"}, 2, "no-such-flag"},
		{"status no node", []string{"status", "--api", dead}, 1, "unreachable"},
		{"kv get no node", []string{"kv", "get", "x", "--api", dead}, 1, "unreachable"},
		{"ping malformed peer", []string{"ping", "not-a-peer", "--api", dead}, 2, "not-a-peer"},
		{"kv bad consistency", []string{"kv", "get", "x", "--consistency", "sometimes", "--api", dead}, 2, "consistency"},
		{"unknown command", []string{"frobnicate"}, 2, "frobnicate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := testenv.RunCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errOut)
			}
			if tc.contains != "" && !strings.Contains(errOut, tc.contains) {
				t.Fatalf("stderr %q lacks %q", errOut, tc.contains)
			}
			if tc.code != 0 && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("error is not one line: %q", errOut)
			}
		})
	}
}
