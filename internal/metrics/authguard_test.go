package metrics_test

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"golang.org/x/crypto/bcrypt"
)

// cpuTime is the process's user + system CPU time so far.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestWrongPasswordsAreLimitedBeforeBcrypt sends 100 wrong guesses over TLS
// to a server whose web config holds a default-cost bcrypt hash: the
// failed-auth limiter answers most of them 429 before the hash is checked,
// so they cost well under a CPU-second; the right password still works.
func TestWrongPasswordsAreLimitedBeforeBcrypt(t *testing.T) {
	p := newPKI(t)
	webCfg := writeWebConfig(t, p.dir, p.tlsServerConfig()+basicAuthUsers(t, "prometheus", "s3cret", bcrypt.DefaultCost))
	// A slow refill (one token per 100s) makes the counts exact: the burst of
	// 5 tokens, one spent on the right password, leaves 4 bcrypt checks.
	srv := startServer(t, metrics.ServerConfig{WebConfigFile: webCfg, AuthFailureRate: 0.01}, nil)
	url := "https://" + srv.Addr().String() + "/metrics"
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool}}}
	do := func(user, pass string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth(user, pass)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	// The right password first: once verified it never needs a token.
	if resp := do("prometheus", "s3cret"); resp.StatusCode != http.StatusOK {
		t.Fatalf("right password: %d", resp.StatusCode)
	}

	before := cpuTime(t)
	codes := map[int]int{}
	for i := 0; i < 100; i++ {
		codes[do("prometheus", fmt.Sprintf("guess-%d", i)).StatusCode]++
	}
	spent := cpuTime(t) - before
	t.Logf("100 wrong guesses: %v, CPU %s", codes, spent)
	if codes[http.StatusUnauthorized] != 4 || codes[http.StatusTooManyRequests] != 96 {
		t.Fatalf("answers %v, want 4x401 (bcrypt) and 96x429 (limited before bcrypt)", codes)
	}
	// The CPU cost of the built binary is asserted in cmd/p2p-agent
	// (TestE2EMetricsWrongPasswordsCheap); under -race bcrypt is far slower.
	_ = spent
	// The bucket is empty, yet verified credentials still pass.
	if resp := do("prometheus", "s3cret"); resp.StatusCode != http.StatusOK {
		t.Fatalf("right password after the guesses: %d", resp.StatusCode)
	}
	resp := do("prometheus", "another-guess")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("guess with an empty bucket: %d retry-after %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
