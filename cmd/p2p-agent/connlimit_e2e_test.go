package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestE2EOneHostCannotTakeEveryMetricsConnection attacks the metrics
// listener as a stranger on the network would, to blind the node's
// monitoring: one host opens as many kept-alive connections as the
// listener accepts (metrics.max_connections, 64) and holds them. With
// metrics.max_connections_per_client (16 by default) it gets 16, the
// others being closed at accept, and a Prometheus on another address still
// scrapes. Without the per-client cap the attacker held all 64 and the
// scrape's connection was closed at accept.
func TestE2EOneHostCannotTakeEveryMetricsConnection(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t, "builds and starts the binary")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	u, err := url.Parse(n.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Host

	// request opens a connection from src, sends GET path and reads the
	// answer; it returns the connection (left open, kept alive) and the
	// status, or 0 when the node closed the connection without answering.
	request := func(src, path string) (net.Conn, int) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", src, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return c, 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		_ = c.SetDeadline(time.Time{})
		return c, resp.StatusCode
	}

	answered := 0
	for range 64 {
		if _, code := request("127.0.0.1", "/healthz"); code == http.StatusOK {
			answered++
		} else if code != 0 {
			t.Fatalf("attacker's request answered %d", code)
		}
	}
	if answered != 16 {
		t.Fatalf("one host holds %d of the listener's connections, want 16 (metrics.max_connections_per_client)", answered)
	}
	// The attacker's connections are open and idle; its next one is refused.
	if _, code := request("127.0.0.1", "/healthz"); code != 0 {
		t.Fatalf("a 17th connection from the same host was answered %d", code)
	}
	// Prometheus, on another address, scrapes, and sees every refusal
	// counted: the attacker's 48 and its 17th.
	fams, _ := testenv.Scrape(t, &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext},
	}, n.MetricsURL)
	for _, c := range []struct {
		listener, reason string
		want             float64
	}{
		{"metrics", "max_connections_per_client", 49},
		{"metrics", "max_connections", 0},
		{"api", "max_connections", 0},
	} {
		if got := fams.Value("agent_connections_refused_total", testenv.L("listener", c.listener, "reason", c.reason)); got != c.want {
			t.Errorf("agent_connections_refused_total{listener=%q,reason=%q} = %v, want %v", c.listener, c.reason, got, c.want)
		}
	}
	if n := fams.SeriesCount("agent_connections_refused_total"); n != 3 {
		t.Errorf("agent_connections_refused_total has %d series, want 3", n)
	}
}
