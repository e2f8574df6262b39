package testenv_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

func TestStartRedisStopRestart(t *testing.T) {
	r := testenv.StartRedis(t)
	if r.Port() == 6379 {
		t.Fatal("harness used the machine's own Redis port")
	}
	if got, err := testenv.RedisCommand(r.Addr(), time.Second, "SET", "k", "v"); err != nil || got != "OK" {
		t.Fatalf("SET = %q, %v", got, err)
	}
	if got, err := testenv.RedisCommand(r.Addr(), time.Second, "GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v", got, err)
	}
	// Arrays come back one element per line; the harness starts Redis
	// without snapshots.
	if got, err := testenv.RedisCommand(r.Addr(), time.Second, "CONFIG", "GET", "save"); err != nil || got != "save\n" {
		t.Fatalf("CONFIG GET save = %q, %v, want \"save\\n\"", got, err)
	}
	r.Stop()
	if r.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := testenv.RedisCommand(r.Addr(), time.Second, "PING"); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
	r.Stop() // idempotent
	addr := r.Addr()
	r.Restart()
	if r.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, r.Addr())
	}
	if got, err := testenv.RedisCommand(r.Addr(), time.Second, "PING"); err != nil || got != "PONG" {
		t.Fatalf("PING after Restart = %q, %v", got, err)
	}
	// Nothing is persisted: a restarted server is empty.
	if got, err := testenv.RedisCommand(r.Addr(), time.Second, "DBSIZE"); err != nil || got != "0" {
		t.Fatalf("DBSIZE after Restart = %q, %v", got, err)
	}
	r.Kill()
	if _, err := testenv.RedisCommand(r.Addr(), time.Second, "PING"); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	r.Restart()
	if got, err := testenv.RedisCommand(r.Addr(), time.Second, "PING"); err != nil || got != "PONG" {
		t.Fatalf("PING after Kill and Restart = %q, %v", got, err)
	}
}

func TestTwoServersAreIndependent(t *testing.T) {
	a, b := testenv.StartRedis(t), testenv.StartRedis(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers on %s", a.Addr())
	}
	if _, err := testenv.RedisCommand(a.Addr(), time.Second, "SET", "only-a", "1"); err != nil {
		t.Fatal(err)
	}
	if got, err := testenv.RedisCommand(b.Addr(), time.Second, "EXISTS", "only-a"); err != nil || got != "0" {
		t.Fatalf("EXISTS on the other server = %q, %v", got, err)
	}
}

func TestRedisAddrOrStart(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	addr := testenv.RedisAddrOrStart(t)
	if got, err := testenv.RedisCommand(addr, time.Second, "PING"); err != nil || got != "PONG" {
		t.Fatalf("PING %s = %q, %v", addr, got, err)
	}
	t.Setenv("REDIS_URL", "redis://"+addr+"/0")
	if got := testenv.RedisAddrOrStart(t); got != addr {
		t.Fatalf("with REDIS_URL: %q, want %q", got, addr)
	}
}

func TestStartRedisCluster(t *testing.T) {
	c := testenv.StartRedisCluster(t, 3)
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes", len(c.Nodes))
	}
	for _, n := range c.Nodes {
		info, err := testenv.RedisCommand(n.Addr(), time.Second, "CLUSTER", "INFO")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3", "cluster_size:3"} {
			if !strings.Contains(info, want) {
				t.Fatalf("node %s: CLUSTER INFO lacks %q:\n%s", n.Addr(), want, info)
			}
		}
	}
	// A key lives on exactly one master; the others redirect.
	moved := 0
	for _, n := range c.Nodes {
		_, err := testenv.RedisCommand(n.Addr(), time.Second, "SET", "some-key", "v")
		if err != nil {
			if !strings.Contains(err.Error(), "MOVED") {
				t.Fatalf("SET on %s: %v", n.Addr(), err)
			}
			moved++
		}
	}
	if moved != 2 {
		t.Fatalf("%d of 3 nodes redirected, want 2", moved)
	}
}

// endTB records how a harness call ended the test instead of ending it.
type endTB struct {
	testing.TB
	skipped, failed string
}

func (e *endTB) Helper() {}
func (e *endTB) Skip(args ...any) {
	e.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (e *endTB) Fatal(args ...any) {
	e.failed = fmt.Sprint(args...)
	runtime.Goexit()
}
func (e *endTB) Fatalf(format string, args ...any) {
	e.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// inGoroutine runs fn with e on its own goroutine, so Skip and Fatal can
// end it as they would end a test.
func inGoroutine(e *endTB, fn func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(e)
	}()
	<-done
}

// TestMissingRedisServer: without redis-server in PATH the harness skips a
// developer's test but fails under CI, where a missing tool must not pass
// silently.
func TestMissingRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", "")
	e := &endTB{TB: t}
	inGoroutine(e, func(tb testing.TB) { testenv.StartRedis(tb) })
	if e.skipped == "" || e.failed != "" || !strings.Contains(e.skipped, "redis-server") {
		t.Fatalf("without CI: skipped=%q failed=%q, want a skip naming redis-server", e.skipped, e.failed)
	}
	t.Setenv("CI", "true")
	e = &endTB{TB: t}
	inGoroutine(e, func(tb testing.TB) { testenv.StartRedisCluster(tb, 3) })
	if e.failed == "" || e.skipped != "" {
		t.Fatalf("under CI: skipped=%q failed=%q, want a failure", e.skipped, e.failed)
	}
}

func TestRedisURLInvalid(t *testing.T) {
	t.Setenv("REDIS_URL", "not a url")
	e := &endTB{TB: t}
	inGoroutine(e, func(tb testing.TB) { testenv.RedisAddrOrStart(tb) })
	if !strings.Contains(e.failed, "REDIS_URL") {
		t.Fatalf("invalid REDIS_URL: failed=%q", e.failed)
	}
}
