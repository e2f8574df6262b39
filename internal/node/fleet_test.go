package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/p2p-ai-agents/p2p-agent/internal/fleet"
	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestHostileInfoAnswersCounted: a peer that answers the node's info
// queries with a malformed answer and then an oversized one is never
// listed in /sd, and every answer it gave is counted in
// message_processing_errors_total{type="info"} with its reason.
func TestHostileInfoAnswersCounted(t *testing.T) {
	n, _ := startNode(t, nil)
	h := rawPeer(t)
	var malformed, oversized atomic.Int64
	h.Libp2p().SetStreamHandler(fleet.ProtocolID, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(s, 256))
		// the first answer is not JSON, every later one is over the limit
		if malformed.Load() == 0 {
			f, _ := message.AppendRawFrame(nil, []byte("{not json"), 0)
			malformed.Add(1)
			_, _ = s.Write(f)
			return
		}
		f, _ := message.AppendRawFrame(nil, []byte(`{"name":"`+strings.Repeat("x", fleet.MaxAnswerBytes)+`"}`), 0)
		oversized.Add(1)
		_, _ = s.Write(f)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Libp2p().Connect(ctx, addrInfo(t, n)); err != nil {
		t.Fatal(err)
	}
	// the node asks on identify, and again at its next refresh (10s)
	testenv.Eventually(t, 30*time.Second, func() error {
		if malformed.Load() != 1 || oversized.Load() < 1 {
			return fmt.Errorf("served %d malformed and %d oversized answers, want 1 and at least 1", malformed.Load(), oversized.Load())
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		f, _ := testenv.Scrape(t, nil, n.MetricsURL())
		m := f.Value("message_processing_errors_total", testenv.L("type", "info", "reason", "malformed"))
		o := f.Value("message_processing_errors_total", testenv.L("type", "info", "reason", "too_large"))
		if m != 1 || o != float64(oversized.Load()) {
			return fmt.Errorf("info errors malformed %v too_large %v, want 1 and %d", m, o, oversized.Load())
		}
		return nil
	})
	resp, err := http.Get(strings.TrimSuffix(n.MetricsURL(), "/metrics") + "/sd")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Contains(string(body), h.ID().String()) || !strings.Contains(string(body), n.PeerID().String()) {
		t.Errorf("/sd %d %s: want only the node itself, never the hostile peer %s", resp.StatusCode, body, h.ID())
	}
}

func sdOf(t *testing.T, c *http.Client, url string) (map[string]metrics.SDGroup, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var gs []metrics.SDGroup
	if err := json.NewDecoder(resp.Body).Decode(&gs); err != nil {
		return nil, fmt.Errorf("GET %s: %d: %w", url, resp.StatusCode, err)
	}
	out := map[string]metrics.SDGroup{}
	for _, g := range gs {
		out[g.Labels["peer_id"]] = g
	}
	return out, nil
}

// TestAdvertisedMetricsURL: a node with TLS on a wildcard metrics address
// advertises https at the address its peer reached it on; a node with
// metrics.advertise_url advertises exactly that; /sd lists each node as its
// peer told it, and itself at the host the request reached it by.
func TestAdvertisedMetricsURL(t *testing.T) {
	dir := t.TempDir()
	testenv.WriteSelfSigned(t, dir, "c.pem", "k.pem")
	webCfg := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webCfg, []byte("tls_server_config:\n  cert_file: "+filepath.Join(dir, "c.pem")+"\n  key_file: "+filepath.Join(dir, "k.pem")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ := startNode(t, map[string]string{"metrics.listen": "0.0.0.0:0", "metrics.web_config_file": webCfg})
	b := startPeerOf(t, a, map[string]string{"metrics.advertise_url": "http://b.example.internal:9999/m"})
	_, aPort, _ := net.SplitHostPort(a.MetricsAddr().String())
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

	aSD := "https://127.0.0.1:" + aPort + "/sd"
	bSD := strings.TrimSuffix(b.MetricsURL(), "/metrics") + "/sd"
	testenv.Eventually(t, 20*time.Second, func() error {
		ga, err := sdOf(t, tlsClient, aSD)
		if err != nil {
			return err
		}
		gb, err := sdOf(t, http.DefaultClient, bSD)
		if err != nil {
			return err
		}
		if len(ga) != 2 || len(gb) != 2 {
			return fmt.Errorf("A's /sd %v, B's /sd %v: want both nodes in each", ga, gb)
		}
		checks := []struct {
			where       string
			g           metrics.SDGroup
			target      string
			scheme, pth string
		}{
			{"A's /sd, A", ga[a.PeerID().String()], "127.0.0.1:" + aPort, "https", "/metrics"},
			{"A's /sd, B", ga[b.PeerID().String()], "b.example.internal:9999", "http", "/m"},
			{"B's /sd, A", gb[a.PeerID().String()], "127.0.0.1:" + aPort, "https", "/metrics"},
			{"B's /sd, B", gb[b.PeerID().String()], "b.example.internal:9999", "http", "/m"},
		}
		for _, c := range checks {
			if len(c.g.Targets) != 1 || c.g.Targets[0] != c.target || c.g.Labels["__scheme__"] != c.scheme || c.g.Labels["__metrics_path__"] != c.pth {
				return fmt.Errorf("%s: %+v, want %s://%s%s", c.where, c.g, c.scheme, c.target, c.pth)
			}
		}
		return nil
	})
}
