package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	redisstore "github.com/p2p-ai-agents/p2p-agent/internal/storage/redis"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/storagetest"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

var prefixSeq atomic.Int64

// uniquePrefix gives every store of every test its own key space, so tests
// sharing a Redis (REDIS_URL) never see each other's keys.
func uniquePrefix(t testing.TB) string {
	return fmt.Sprintf("test:%s:%d:%d:", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano(), prefixSeq.Add(1))
}

func newStore(t testing.TB, opts redisstore.Options) *redisstore.Store {
	t.Helper()
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = uniquePrefix(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := redisstore.New(ctx, opts)
	if err != nil {
		t.Fatalf("New(%v): %v", opts.Addrs, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformanceStandalone(t *testing.T) {
	addr := testenv.RedisAddrOrStart(t)
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return newStore(t, redisstore.Options{Addrs: []string{addr}})
	})
}

func TestConformanceURL(t *testing.T) {
	r := testenv.StartRedis(t)
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return newStore(t, redisstore.Options{URL: r.URL()})
	})
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisCluster(t, 3)
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return newStore(t, redisstore.Options{Addrs: c.Addrs()})
	})
}

// TestClusterSpreadsKeys checks that List in cluster mode gathers keys from
// every master, not only the one a random command lands on.
func TestClusterSpreadsKeys(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisCluster(t, 3)
	s := newStore(t, redisstore.Options{Addrs: c.Addrs()})
	ctx := context.Background()
	const n = 300
	for i := 0; i < n; i++ {
		if err := s.Put(ctx, fmt.Sprintf("k%04d", i), []byte{byte(i)}, storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range c.Nodes {
		got, err := testenv.RedisCommand(node.Addr(), time.Second, "DBSIZE")
		if err != nil {
			t.Fatal(err)
		}
		if got == "0" {
			t.Fatalf("master %s holds no key of %d: test does not exercise the cluster", node.Addr(), n)
		}
	}
	kvs, err := s.List(ctx, "k", storage.Eventual)
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != n {
		t.Fatalf("List returned %d keys, want %d", len(kvs), n)
	}
	for i, kv := range kvs {
		if kv.Key != fmt.Sprintf("k%04d", i) || len(kv.Value) != 1 || kv.Value[0] != byte(i) {
			t.Fatalf("List[%d] = %q=%v", i, kv.Key, kv.Value)
		}
	}
	for i := 0; i < n; i++ {
		v, err := s.Get(ctx, fmt.Sprintf("k%04d", i), storage.Eventual)
		if err != nil || len(v) != 1 || v[0] != byte(i) {
			t.Fatalf("Eventual Get k%04d = %v, %v", i, v, err)
		}
	}
}

func TestKeyPrefixOnTheWire(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, redisstore.Options{Addrs: []string{r.Addr()}, KeyPrefix: "app*[1]:"})
	ctx := context.Background()
	if err := s.Put(ctx, "k", []byte("v"), storage.Strong); err != nil {
		t.Fatal(err)
	}
	if got, err := testenv.RedisCommand(r.Addr(), time.Second, "GET", "app*[1]:k"); err != nil || got != "v" {
		t.Fatalf("raw GET of the prefixed key = %q, %v", got, err)
	}
	// A key of another application that the unescaped prefix pattern
	// would match must not be listed.
	if _, err := testenv.RedisCommand(r.Addr(), time.Second, "SET", "appX1:k2", "other"); err != nil {
		t.Fatal(err)
	}
	kvs, err := s.List(ctx, "", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 1 || kvs[0].Key != "k" || string(kvs[0].Value) != "v" {
		t.Fatalf("List = %+v, want only k=v", kvs)
	}
	// On the wire: the data key is prefix+key; the only other keys of the
	// store are its index and the index's marker, prefix+NUL+...
	raw := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer raw.Close()
	all, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	if want := []string{"app*[1]:\x00idx", "app*[1]:\x00idx:v1:1", "app*[1]:k", "appX1:k2"}; !slices.Equal(all, want) {
		t.Fatalf("keys on the server = %q, want %q", all, want)
	}
	def, err := redisstore.New(ctx, redisstore.Options{Addrs: []string{r.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if def.KeyPrefix() != "p2p-agent:" {
		t.Fatalf("default prefix %q", def.KeyPrefix())
	}
}

func TestEscapeGlob(t *testing.T) {
	tests := map[string]string{
		"":          "",
		"plain:key": "plain:key",
		"a*[b]?":    `a\*\[b\]\?`,
		`back\`:     `back\\`,
		"^-{}!":     "^-{}!",
		"日本*":       `日本\*`,
	}
	for in, want := range tests {
		if got := redisstore.EscapeGlob(in); got != want {
			t.Errorf("EscapeGlob(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestUnavailable checks the verdict on the final error of a command, after
// go-redis's retries: Redis unreachable or in a transient state, or a
// request that is wrong.
func TestUnavailable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"EOF", io.EOF, true},
		{"wrapped EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"reset", fmt.Errorf("x: %w", syscall.ECONNRESET), true},
		{"timeout", &net.DNSError{IsTimeout: true}, true},
		{"pool timeout", redis.ErrPoolTimeout, true},
		{"LOADING", redisError("LOADING Redis is loading the dataset in memory"), true},
		{"CLUSTERDOWN", redisError("CLUSTERDOWN The cluster is down"), true},
		{"TRYAGAIN", redisError("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{"MASTERDOWN", redisError("MASTERDOWN Link with MASTER is down"), true},
		{"READONLY", redisError("READONLY You can't write against a read only replica."), true},
		{"WRONGTYPE", redisError("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{"syntax", redisError("ERR syntax error"), false},
		{"unknown command", redisError("ERR unknown command 'FOO'"), false},
		{"NOAUTH", redisError("NOAUTH Authentication required."), false},
		{"plain error", errors.New("something else"), false},
		{"cancelled", context.Canceled, false},
	}
	for _, tc := range tests {
		if got := redisstore.Unavailable(tc.err); got != tc.want {
			t.Errorf("Unavailable(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// redisError builds the error type go-redis returns for an error reply.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

// captureHandler records log records so tests can count them.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// count returns how many records above debug level carry msg.
func (h *captureHandler) count(level slog.Level, msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && r.Message == msg {
			n++
		}
	}
	return n
}

func (h *captureHandler) above(level slog.Level) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level >= level {
			out = append(out, r.Level.String()+" "+r.Message)
		}
	}
	return out
}

const (
	msgDown = "Redis unavailable; operations fail until it is back"
	msgUp   = "Redis available again"
)

// dialCounter is a go-redis hook that counts the connections dialled.
type dialCounter struct{ n *atomic.Int64 }

func (h dialCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.n.Add(1)
		return next(ctx, network, addr)
	}
}
func (dialCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (dialCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestOutageAndRecovery stops Redis under a live store: every operation
// fails with ErrUnavailable within the retry budget, after exactly
// MaxRetries+1 attempts by go-redis (one dial each), one warning is logged
// for the whole outage; once Redis is back the same store works again and
// one info line says so.
func TestOutageAndRecovery(t *testing.T) {
	r := testenv.StartRedis(t)
	logs := &captureHandler{}
	opts := redisstore.Options{
		Addrs:        []string{r.Addr()},
		DialTimeout:  300 * time.Millisecond,
		ReadTimeout:  300 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond,
		MaxRetries:   3,
		RetryBackoff: 40 * time.Millisecond,
		// More than the 32 failed dials below: after PoolSize failed dials
		// in a row go-redis stops dialling (it returns the last dial error
		// until a background probe succeeds), which would hide attempts.
		PoolSize: 64,
		Logger:   slog.New(logs),
	}
	s := newStore(t, opts)
	var dials atomic.Int64
	s.Client().AddHook(dialCounter{&dials})
	st := storage.Validate(s, 0)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := st.Put(ctx, fmt.Sprintf("k%d", i), []byte("v"), storage.Strong); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.List(ctx, "", storage.Strong); err != nil {
		t.Fatal(err)
	}

	r.Stop()
	// Longest possible: each of the 4 attempts hits the pool and dial
	// timeouts and the write and read timeouts of the connection handshake
	// (3 round trips) and of the command; before retry k go-redis pauses
	// at most 40ms·(1+2^k) (capped at 1s): 120+200+360 ms.
	// Shortest: every pause is at least 40ms.
	budget := s.RetryBudget()
	wantBudget := 4*(2+4*2)*300*time.Millisecond + (120+200+360)*time.Millisecond
	if budget != wantBudget {
		t.Fatalf("RetryBudget = %v, want %v", budget, wantBudget)
	}
	const minElapsed = 3 * 40 * time.Millisecond
	ops := map[string]func() error{
		"get":    func() error { _, err := st.Get(ctx, "k1", storage.Strong); return err },
		"put":    func() error { return st.Put(ctx, "k1", []byte("x"), storage.Strong) },
		"delete": func() error { return st.Delete(ctx, "k1", storage.Eventual) },
		"list":   func() error { _, err := st.List(ctx, "k", storage.Strong); return err },
	}
	for round := 0; round < 2; round++ {
		for name, op := range ops {
			before := dials.Load()
			start := time.Now()
			err := op()
			elapsed := time.Since(start)
			attempts := dials.Load() - before
			if !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("%s with Redis down: err = %v, want ErrUnavailable", name, err)
			}
			if elapsed > budget+time.Second || elapsed < minElapsed {
				t.Fatalf("%s failed after %v, want between %v and %v", name, elapsed, minElapsed, budget+time.Second)
			}
			// Every attempt dials once: the connections of the pool died
			// with the server (round 0 may still find one that looks live
			// and fail on it without dialling).
			if attempts != 4 {
				t.Fatalf("round %d: %s dialled %d times, want 4 (1 attempt + 3 retries)", round, name, attempts)
			}
		}
	}
	if s.Healthy() {
		t.Fatal("Healthy() during outage")
	}
	if n := logs.count(slog.LevelWarn, msgDown); n != 1 {
		t.Fatalf("%d outage warnings for 8 failed operations, want 1: %q", n, logs.above(slog.LevelInfo))
	}

	r.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := st.Put(ctx, "after", []byte("back"), storage.Strong)
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("Put after restart: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover within 15s of the restart: %v", err)
		}
	}
	v, err := st.Get(ctx, "after", storage.Strong)
	if err != nil || string(v) != "back" {
		t.Fatalf("Get after recovery = %q, %v", v, err)
	}
	// The restarted server is empty: the old keys are gone, not an error.
	if _, err := st.Get(ctx, "k1", storage.Strong); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get of a pre-restart key: %v", err)
	}
	if !s.Healthy() {
		t.Fatal("not Healthy() after recovery")
	}
	if n := logs.count(slog.LevelInfo, msgUp); n != 1 {
		t.Fatalf("%d recovery lines, want 1: %q", n, logs.above(slog.LevelInfo))
	}
	if n := logs.count(slog.LevelWarn, msgDown); n != 1 {
		t.Fatalf("%d outage warnings, want 1: %q", n, logs.above(slog.LevelInfo))
	}
	if got := logs.above(slog.LevelInfo); len(got) != 2 {
		t.Fatalf("log lines above debug: %q, want exactly the warning and the recovery", got)
	}
}

// TestOutageByCrash is TestOutageAndRecovery's quick cousin with SIGKILL,
// where clients see resets rather than orderly closes.
func TestOutageByCrash(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, redisstore.Options{Addrs: []string{r.Addr()}, RetryBackoff: 10 * time.Millisecond, MaxRetries: 2})
	ctx := context.Background()
	if err := s.Put(ctx, "k", []byte("v"), storage.Strong); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if _, err := s.Get(ctx, "k", storage.Strong); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Get after SIGKILL: %v", err)
	}
	r.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := s.Get(ctx, "k", storage.Strong)
		if errors.Is(err, storage.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %v", err)
		}
	}
}

func TestNewFailsWhenUnreachable(t *testing.T) {
	r := testenv.StartRedis(t)
	r.Stop()
	start := time.Now()
	_, err := redisstore.New(context.Background(), redisstore.Options{
		Addrs: []string{r.Addr()}, MaxRetries: 2, RetryBackoff: 20 * time.Millisecond,
		DialTimeout: 200 * time.Millisecond,
	})
	elapsed := time.Since(start)
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("New on a stopped server: err = %v, want ErrUnavailable", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("error does not wrap the cause (connection refused): %v", err)
	}
	if elapsed > 3*time.Second || elapsed < 30*time.Millisecond {
		t.Fatalf("New gave up after %v", elapsed)
	}
}

func TestNewOptionErrors(t *testing.T) {
	ctx := context.Background()
	for name, o := range map[string]redisstore.Options{
		"nothing":      {},
		"both":         {Addrs: []string{"127.0.0.1:1"}, URL: "redis://127.0.0.1:1"},
		"bad url":      {URL: "http://%zz"},
		"bad addr":     {Addrs: []string{"no-port"}},
		"neg replicas": {Addrs: []string{"127.0.0.1:1"}, MinReplicas: -1},
	} {
		if s, err := redisstore.New(ctx, o); err == nil {
			s.Close()
			t.Errorf("%s: New succeeded", name)
		} else if errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s: configuration error reported as unavailable: %v", name, err)
		}
	}
}

// TestProgrammingErrorsNotRetried checks that an error of the request
// itself comes back at once, is not ErrUnavailable and is no outage.
func TestProgrammingErrorsNotRetried(t *testing.T) {
	r := testenv.StartRedis(t)
	logs := &captureHandler{}
	s := newStore(t, redisstore.Options{Addrs: []string{r.Addr()}, KeyPrefix: "p:", RetryBackoff: time.Second, Logger: slog.New(logs)})
	if _, err := testenv.RedisCommand(r.Addr(), time.Second, "LPUSH", "p:list", "x"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := s.Get(context.Background(), "list", storage.Strong)
	if err == nil || errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Get of a list: %v, want a WRONGTYPE error that is not ErrUnavailable", err)
	}
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Fatalf("WRONGTYPE took %v: it was retried", elapsed)
	}
	if !s.Healthy() || len(logs.above(slog.LevelInfo)) != 0 {
		t.Fatalf("a WRONGTYPE error counted as an outage: %q", logs.above(slog.LevelInfo))
	}
}

func TestCancelledContextNotRetried(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, redisstore.Options{Addrs: []string{r.Addr()}, RetryBackoff: time.Second, MaxRetries: 5})
	r.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	_, err := s.Get(ctx, "k", storage.Strong)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Fatalf("cancelled Get took %v", elapsed)
	}
	// A deadline that expires during the backoff ends the retries early.
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = s.Put(ctx, "k", []byte("v"), storage.Strong)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Put past its deadline: %v, want DeadlineExceeded and ErrUnavailable", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("Put outlived its 200ms deadline by far: %v", elapsed)
	}
}

// TestMinReplicas covers WAIT: without a replica a Strong write fails with
// ErrUnavailable after WaitTimeout while weaker levels do not wait; with a
// live replica Strong writes succeed and are on the replica when Put returns.
func TestMinReplicas(t *testing.T) {
	primary := testenv.StartRedis(t)
	const waitTimeout = time.Second
	s := newStore(t, redisstore.Options{Addrs: []string{primary.Addr()}, MinReplicas: 1, WaitTimeout: waitTimeout})
	ctx := context.Background()
	start := time.Now()
	err := s.Put(ctx, "k", []byte("v"), storage.Strong)
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "0 of 1 replicas") {
		t.Fatalf("Strong Put without replicas: %v", err)
	}
	// WAIT is not retried: one WAIT timeout, not four.
	if elapsed := time.Since(start); elapsed < waitTimeout || elapsed > 2*waitTimeout {
		t.Fatalf("Strong Put gave up after %v, want one WAIT timeout of %v", elapsed, waitTimeout)
	}
	if !s.Healthy() {
		t.Fatal("missing replicas counted as Redis being down")
	}
	for _, c := range []storage.Consistency{storage.Eventual, storage.ReadYourWrites, storage.Causal} {
		start := time.Now()
		if err := s.Put(ctx, "k", []byte("v"), c); err != nil {
			t.Fatalf("%v Put: %v", c, err)
		}
		if elapsed := time.Since(start); elapsed >= waitTimeout {
			t.Fatalf("%v Put waited %v: it ran WAIT", c, elapsed)
		}
	}
	if err := s.Delete(ctx, "k", storage.Strong); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Strong Delete without replicas: %v", err)
	}

	replica := testenv.StartRedis(t)
	// Start the full sync now rather than after the default 5 s delay.
	if _, err := testenv.RedisCommand(primary.Addr(), time.Second, "CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		t.Fatal(err)
	}
	replica.ReplicaOf(t, primary)
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("r%d", i)
		if err := s.Put(ctx, key, []byte(key), storage.Strong); err != nil {
			t.Fatalf("Strong Put with a replica: %v", err)
		}
		// WAIT returned, so the replica already has it.
		got, err := testenv.RedisCommand(replica.Addr(), time.Second, "GET", s.KeyPrefix()+key)
		if err != nil || got != key {
			t.Fatalf("replica GET %s = %q, %v", key, got, err)
		}
	}
	if err := s.Delete(ctx, "r0", storage.Strong); err != nil {
		t.Fatalf("Strong Delete with a replica: %v", err)
	}
	if got, err := testenv.RedisCommand(replica.Addr(), time.Second, "EXISTS", s.KeyPrefix()+"r0"); err != nil || got != "0" {
		t.Fatalf("replica still has the deleted key: %q, %v", got, err)
	}
}

// TestListWhileDeleting lists while keys disappear: List never fails and
// returns only keys with their right values.
func TestListWhileDeleting(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, redisstore.Options{Addrs: []string{r.Addr()}})
	ctx := context.Background()
	const n = 3000
	for i := 0; i < n; i++ {
		if err := s.Put(ctx, fmt.Sprintf("k%05d", i), []byte(fmt.Sprint(i)), storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := n - 1; i >= 0; i-- {
			_ = s.Delete(ctx, fmt.Sprintf("k%05d", i), storage.Eventual)
		}
	}()
	for lists := 0; ; lists++ {
		kvs, err := s.List(ctx, "k", storage.Strong)
		if err != nil {
			t.Fatal(err)
		}
		for i, kv := range kvs {
			var idx int
			if _, err := fmt.Sscanf(kv.Key, "k%05d", &idx); err != nil || string(kv.Value) != fmt.Sprint(idx) {
				t.Fatalf("List returned %q=%q", kv.Key, kv.Value)
			}
			if i > 0 && kvs[i-1].Key >= kv.Key {
				t.Fatalf("List not sorted at %d", i)
			}
		}
		select {
		case <-done:
			kvs, err := s.List(ctx, "k", storage.Strong)
			if err != nil || len(kvs) != 0 {
				t.Fatalf("after deleting everything: %d keys, %v", len(kvs), err)
			}
			return
		default:
		}
	}
}

func TestPoolStatsAndClient(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, redisstore.Options{Addrs: []string{r.Addr()}, PoolSize: 4})
	if err := s.Put(context.Background(), "k", []byte("v"), storage.Strong); err != nil {
		t.Fatal(err)
	}
	st := s.PoolStats()
	if st == nil || st.TotalConns < 1 || st.TotalConns > 4 {
		t.Fatalf("PoolStats = %+v", st)
	}
	if got, err := s.Client().Get(context.Background(), s.KeyPrefix()+"k").Result(); err != nil || got != "v" {
		t.Fatalf("Client().Get = %q, %v", got, err)
	}
}

// TestClusterFailoverFollowed kills a master of a 3+3 cluster and checks
// that every key is served again within 5 s of the replica's promotion.
func TestClusterFailoverFollowed(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisClusterWithReplicas(t, 3, 1)
	s := newStore(t, redisstore.Options{Addrs: c.Addrs()})
	ctx := context.Background()
	const n = 300
	for i := 0; i < n; i++ {
		if err := s.Put(ctx, fmt.Sprintf("k%04d", i), []byte{byte(i)}, storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	var victim *testenv.Redis
	var others []*testenv.Redis
	for _, node := range c.Nodes {
		role, err := testenv.RedisCommand(node.Addr(), time.Second, "INFO", "replication")
		if err == nil && victim == nil && strings.Contains(role, "role:master") {
			victim = node
			continue
		}
		others = append(others, node)
	}
	if victim == nil {
		t.Fatal("no master found")
	}
	// The replica must be in sync, else it refuses to take over.
	synced := time.Now().Add(20 * time.Second)
	for {
		info, _ := testenv.RedisCommand(victim.Addr(), time.Second, "INFO", "replication")
		if strings.Contains(info, "state=online") {
			if got, err := testenv.RedisCommand(victim.Addr(), 2*time.Second, "WAIT", "1", "1000"); err == nil && got == "1" {
				break
			}
		}
		if time.Now().After(synced) {
			t.Fatalf("replica of %s not in sync: %s", victim.Addr(), info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	victim.Kill()
	killed := time.Now()
	deadline := killed.Add(30 * time.Second)
	// Promotion: a surviving node reports cluster_state:ok again after
	// having seen the failure.
	sawFail := false
	for {
		info, _ := testenv.RedisCommand(others[0].Addr(), time.Second, "CLUSTER", "INFO")
		if strings.Contains(info, "cluster_state:fail") {
			sawFail = true
		}
		if sawFail && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no promotion within 30 s: %s", info)
		}
		time.Sleep(10 * time.Millisecond)
	}
	promoted := time.Now()
	for {
		failed := 0
		for i := 0; i < n; i++ {
			v, err := s.Get(ctx, fmt.Sprintf("k%04d", i), storage.Strong)
			if err != nil || len(v) != 1 || v[0] != byte(i) {
				failed++
			}
		}
		if failed == 0 {
			break
		}
		if time.Since(promoted) > 5*time.Second {
			t.Fatalf("%d of %d keys still failing 5 s after promotion", failed, n)
		}
	}
	t.Logf("kill->promotion %v, promotion->all keys served %v", promoted.Sub(killed).Round(time.Millisecond), time.Since(promoted).Round(time.Millisecond))
}

// TestEventualReadsFromReplicas checks the routing of reads in a 3+3
// cluster by the servers' own command statistics: Eventual reads are spread
// over masters and replicas, every other level reads from masters only, and
// every read returns the written value.
func TestEventualReadsFromReplicas(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisClusterWithReplicas(t, 3, 1)
	s := newStore(t, redisstore.Options{Addrs: c.Addrs()})
	ctx := context.Background()
	const n = 300
	for i := 0; i < n; i++ {
		if err := s.Put(ctx, fmt.Sprintf("r%04d", i), []byte{byte(i)}, storage.Strong); err != nil {
			t.Fatal(err)
		}
	}
	var replicas, masters []string
	for _, node := range c.Nodes {
		info, err := testenv.RedisCommand(node.Addr(), time.Second, "INFO", "replication")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "role:master") {
			masters = append(masters, node.Addr())
		} else {
			replicas = append(replicas, node.Addr())
		}
	}
	if len(masters) != 3 || len(replicas) != 3 {
		t.Fatalf("masters %v replicas %v, want 3 and 3", masters, replicas)
	}
	// Replication is asynchronous: wait until a replica-served read sees
	// every key before counting.
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := 0
		for i := 0; i < n; i++ {
			v, err := s.Get(ctx, fmt.Sprintf("r%04d", i), storage.Eventual)
			if err != nil || len(v) != 1 || v[0] != byte(i) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still missing from replicas after 20 s", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	gets := func(addrs []string) int {
		total := 0
		for _, a := range addrs {
			info, err := testenv.RedisCommand(a, time.Second, "INFO", "commandstats")
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(info, "\n") {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_get:calls="); ok {
					var calls int
					fmt.Sscanf(rest, "%d", &calls)
					total += calls
				}
			}
		}
		return total
	}
	reset := func() {
		for _, node := range c.Nodes {
			if _, err := testenv.RedisCommand(node.Addr(), time.Second, "CONFIG", "RESETSTAT"); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(level storage.Consistency) {
		for i := 0; i < n; i++ {
			v, err := s.Get(ctx, fmt.Sprintf("r%04d", i), level)
			if err != nil || len(v) != 1 || v[0] != byte(i) {
				t.Fatalf("%v read of r%04d = %v, %v", level, i, v, err)
			}
		}
	}

	reset()
	read(storage.Eventual)
	onReplicas, onMasters := gets(replicas), gets(masters)
	if onReplicas+onMasters != n {
		t.Fatalf("Eventual: %d GETs on replicas + %d on masters, want %d in all", onReplicas, onMasters, n)
	}
	// RouteRandomly picks among the slot's master and replica: both sides
	// serve some of 300 reads (the chance of one side getting none is 2^-300).
	if onReplicas == 0 || onMasters == 0 {
		t.Fatalf("Eventual: %d GETs on replicas, %d on masters, want both > 0", onReplicas, onMasters)
	}
	t.Logf("Eventual: %d of %d reads served by replicas", onReplicas, n)

	for _, level := range []storage.Consistency{storage.Strong, storage.ReadYourWrites, storage.Causal} {
		reset()
		read(level)
		if got := gets(replicas); got != 0 {
			t.Fatalf("%v: %d GETs served by replicas, want 0", level, got)
		}
		if got := gets(masters); got != n {
			t.Fatalf("%v: %d GETs on masters, want %d", level, got, n)
		}
	}
}
