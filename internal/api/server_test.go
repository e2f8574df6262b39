package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
)

// maxValue and maxBody are the limits of every test server: small, so that
// the 413 cases stay cheap.
const (
	maxValue = 1024
	maxBody  = 4096
)

func newPeerID(t testing.TB) peer.ID {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type fixedStatus api.Status

func (s fixedStatus) Status() api.Status { return api.Status(s) }

// network stands in for the p2p host and pinger, which need other
// processes to talk to: peers are a fixed list, targets resolve by
// p2p.ParsePeer, and pings answer what pings maps the target to.
type network struct {
	peers     []p2p.PeerInfo
	pings     map[string]pingAnswer
	unreached peer.ID // Resolve fails with message.ErrPeerUnreachable
	counts    atomic.Int64
	entered   chan struct{} // closed when a ping of target "block" starts
	release   chan struct{} // which it then waits for
}

type pingAnswer struct {
	stats p2p.PingStats
	err   error
}

func (n *network) Peers() []p2p.PeerInfo { return n.peers }

func (n *network) Resolve(_ context.Context, target string) (peer.ID, error) {
	ai, err := p2p.ParsePeer(target)
	if err != nil {
		return "", err
	}
	if ai.ID == n.unreached {
		return "", fmt.Errorf("%w: %s: no known address", message.ErrPeerUnreachable, ai.ID)
	}
	return ai.ID, nil
}

func (n *network) Ping(ctx context.Context, target string, count int) (p2p.PingStats, error) {
	n.counts.Store(int64(count))
	if target == "block" {
		close(n.entered)
		select {
		case <-n.release:
		case <-ctx.Done():
			return p2p.PingStats{}, ctx.Err()
		}
	}
	a, ok := n.pings[target]
	if !ok {
		return p2p.PingStats{}, fmt.Errorf("test network: no answer for %q", target)
	}
	return a.stats, a.err
}

// blocker is a task type whose tasks signal started (holding their
// execution slot) and then run until release is closed.
type blocker struct{ started, release chan struct{} }

func (blocker) Type() string { return "test.block" }

func (b blocker) Execute(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
	closeOnce(b.started)
	select {
	case <-b.release:
		return json.RawMessage(`{}`), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// harness is a control API over a real local store and a real task engine
// (without transport), served by httptest.
type harness struct {
	url       string
	self      peer.ID
	raw       *local.Store
	store     storage.Store
	engine    *task.Engine
	net       *network
	started   chan struct{} // of the test.block tasks
	release   chan struct{}
	accepting atomic.Bool
}

type option func(*harness, *api.ServerConfig, *api.Deps)

func withToken(tok string) option {
	return func(_ *harness, c *api.ServerConfig, _ *api.Deps) { c.Token = tok }
}

func withoutSubsystems() option {
	return func(_ *harness, _ *api.ServerConfig, d *api.Deps) {
		d.Store, d.Peers, d.Pinger, d.Tasks = nil, nil, nil, nil
	}
}

func withBodyBudget(n int64) option {
	return func(_ *harness, c *api.ServerConfig, _ *api.Deps) { c.Limits.MaxBodyBytesInFlight = n }
}

func openLocal(t *testing.T, opts local.Options) *local.Store {
	t.Helper()
	s, err := local.Open(filepath.Join(t.TempDir(), "store"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newHarness(t *testing.T, storeOpts local.Options, opts ...option) *harness {
	t.Helper()
	h := &harness{self: newPeerID(t), started: make(chan struct{}), release: make(chan struct{}),
		net: &network{entered: make(chan struct{}), release: make(chan struct{})}}
	h.accepting.Store(true)
	h.raw = openLocal(t, storeOpts)
	h.store = storage.Validate(h.raw, maxValue)
	h.engine = task.NewEngine(h.store, nil, nil, h.self, task.Options{
		Timeout:       10 * time.Second,
		MaxConcurrent: 1,
		MaxQueued:     -1,
		Executors:     []task.Executor{blocker{h.started, h.release}},
	})
	t.Cleanup(func() {
		closeOnce(h.release)
		_ = h.engine.Close(context.Background())
	})
	cfg := api.ServerConfig{MaxValueBytes: maxValue, MaxBodyBytes: maxBody}
	deps := api.Deps{
		Status:    fixedStatus{PeerID: h.self.String(), State: "active", Version: "test"},
		Store:     h.store,
		Peers:     h.net,
		Pinger:    h.net,
		Tasks:     h.engine,
		Accepting: h.accepting.Load,
	}
	for _, o := range opts {
		o(h, &cfg, &deps)
	}
	srv := httptest.NewServer(api.NewServer(cfg, deps).Handler())
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

// do sends one request with headers given as name, value pairs.
func (h *harness) do(t *testing.T, method, path, body string, hdr ...string) answer {
	t.Helper()
	a, err := h.send(method, path, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (h *harness) send(method, path, body string, hdr ...string) (answer, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, r)
	if err != nil {
		return answer{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, header: resp.Header, body: b}, err
}

// errorOf is the message of a JSON error answer; it fails the test when
// the body is not {"error": "..."}.
func errorOf(t *testing.T, a answer) string {
	t.Helper()
	var eb api.ErrorBody
	if err := json.Unmarshal(a.body, &eb); err != nil || eb.Error == "" {
		t.Fatalf("answer %d %q is not a JSON error", a.code, a.body)
	}
	return eb.Error
}

func decode[T any](t *testing.T, a answer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("answer %d %q: %v", a.code, a.body, err)
	}
	return v
}

type routeCase struct {
	name         string
	method, path string
	body         string
	want         int
	wantErr      string // a substring of the error message, for error answers
}

func (h *harness) run(t *testing.T, cases []routeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := h.do(t, tc.method, tc.path, tc.body)
			if a.code != tc.want {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, a.code, a.body, tc.want)
			}
			if tc.want >= 400 {
				if msg := errorOf(t, a); !strings.Contains(msg, tc.wantErr) {
					t.Fatalf("%s %s: error %q does not contain %q", tc.method, tc.path, msg, tc.wantErr)
				}
			}
		})
	}
}

func TestStatusRoute(t *testing.T) {
	h := newHarness(t, local.Options{})
	a := h.do(t, "GET", "/api/v1/status", "")
	st := decode[api.Status](t, a)
	if a.code != 200 || st.PeerID != h.self.String() || st.State != "active" || st.Version != "test" {
		t.Fatalf("status = %d %+v", a.code, st)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
}

func TestPeersRoute(t *testing.T) {
	h := newHarness(t, local.Options{})
	a := h.do(t, "GET", "/api/v1/peers", "")
	if a.code != 200 || string(bytes.TrimSpace(a.body)) != "[]" {
		t.Fatalf("no peers = %d %s, want 200 []", a.code, a.body)
	}
	id := newPeerID(t)
	h.net.peers = []p2p.PeerInfo{{ID: id, Addr: "/ip4/127.0.0.1/tcp/4001", Direction: "inbound", Latency: 1500 * time.Microsecond,
		AgentVersion: "p2p-agent/x", Protocols: []string{"/p"}, Capabilities: []string{"text.chunk"}}}
	a = h.do(t, "GET", "/api/v1/peers", "")
	got := decode[[]api.Peer](t, a)
	want := api.Peer{ID: id.String(), Address: "/ip4/127.0.0.1/tcp/4001", Direction: "inbound", LatencyMs: 1.5,
		AgentVersion: "p2p-agent/x", Capabilities: []string{"text.chunk"}}
	if a.code != 200 || len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Fatalf("peers = %d %+v, want [%+v]", a.code, got, want)
	}
}

func TestKVRoutes(t *testing.T) {
	h := newHarness(t, local.Options{})
	big := strings.Repeat("x", maxValue+1)
	h.run(t, []routeCase{
		{name: "put", method: "PUT", path: "/api/v1/kv/a%2Fb%20c", body: "v", want: 200},
		{name: "put at limit", method: "PUT", path: "/api/v1/kv/big", body: big[1:], want: 200},
		{name: "put over limit", method: "PUT", path: "/api/v1/kv/big", body: big, want: 413, wantErr: "too large"},
		{name: "put NUL in key", method: "PUT", path: "/api/v1/kv/a%00b", body: "v", want: 400},
		{name: "put bad consistency", method: "PUT", path: "/api/v1/kv/a?consistency=sometimes", body: "v", want: 400, wantErr: "sometimes"},
		{name: "get", method: "GET", path: "/api/v1/kv/a%2Fb%20c?consistency=eventual", want: 200},
		{name: "get missing", method: "GET", path: "/api/v1/kv/nope", want: 404, wantErr: "not found"},
		{name: "get bad consistency", method: "GET", path: "/api/v1/kv/a?consistency=sometimes", want: 400},
		{name: "delete bad consistency", method: "DELETE", path: "/api/v1/kv/a?consistency=x", want: 400},
		{name: "list bad consistency", method: "GET", path: "/api/v1/kv?consistency=x", want: 400},
		{name: "list limit 0", method: "GET", path: "/api/v1/kv?limit=0", want: 400, wantErr: "limit"},
		{name: "list limit negative", method: "GET", path: "/api/v1/kv?limit=-1", want: 400, wantErr: "limit"},
		{name: "list limit not a number", method: "GET", path: "/api/v1/kv?limit=ten", want: 400, wantErr: "limit"},
		{name: "list limit over max", method: "GET", path: fmt.Sprintf("/api/v1/kv?limit=%d", storage.MaxPageLimit+1), want: 400, wantErr: "limit"},
		{name: "list prefix with NUL", method: "GET", path: "/api/v1/kv?prefix=a%00", want: 400, wantErr: "invalid key"},
		{name: "list after with NUL", method: "GET", path: "/api/v1/kv?after=a%00", want: 400, wantErr: "invalid key"},
		{name: "list limit max", method: "GET", path: fmt.Sprintf("/api/v1/kv?limit=%d", storage.MaxPageLimit), want: 200},
	})

	a := h.do(t, "GET", "/api/v1/kv/a%2Fb%20c", "")
	if a.code != 200 || string(a.body) != "v" || a.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("get = %d %q (%s), want 200 \"v\"", a.code, a.body, a.header.Get("Content-Type"))
	}
	a = h.do(t, "PUT", "/api/v1/kv/k?consistency=eventual", "hello")
	if got := decode[api.KVPut](t, a); a.code != 200 || got != (api.KVPut{Key: "k", Bytes: 5, Consistency: "eventual"}) {
		t.Fatalf("put = %d %+v", a.code, got)
	}
	// A body of unknown length over the limit is cut at the limit.
	req, _ := http.NewRequest("PUT", h.url+"/api/v1/kv/chunked", io.MultiReader(strings.NewReader(big))) // no length
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked put over the limit = %d, want 413", resp.StatusCode)
	}
	a = h.do(t, "DELETE", "/api/v1/kv/k", "")
	if got := decode[api.KVDeleted](t, a); a.code != 200 || got != (api.KVDeleted{Key: "k", Deleted: true}) {
		t.Fatalf("delete = %d %+v", a.code, got)
	}
	if a = h.do(t, "GET", "/api/v1/kv/k", ""); a.code != 404 {
		t.Fatalf("get after delete = %d, want 404", a.code)
	}
}

func TestKVListPages(t *testing.T) {
	h := newHarness(t, local.Options{})
	for _, k := range []string{"p/1", "p/2", "p/3", "p/4", "p/5", "q/1"} {
		if a := h.do(t, "PUT", "/api/v1/kv/"+k, "v"+k); a.code != 200 {
			t.Fatalf("put %s = %d", k, a.code)
		}
	}
	type page struct {
		query string
		keys  []string
		next  string
	}
	for _, p := range []page{
		{"prefix=p/&limit=2", []string{"p/1", "p/2"}, "p/2"},
		{"prefix=p/&limit=2&after=p/2", []string{"p/3", "p/4"}, "p/4"},
		{"prefix=p/&limit=2&after=p/4", []string{"p/5"}, ""},
		{"prefix=p/", []string{"p/1", "p/2", "p/3", "p/4", "p/5"}, ""},
		{"", []string{"p/1", "p/2", "p/3", "p/4", "p/5", "q/1"}, ""},
		{"prefix=z/", []string{}, ""},
	} {
		a := h.do(t, "GET", "/api/v1/kv?"+p.query, "")
		l := decode[api.KVList](t, a)
		keys := []string{}
		for _, it := range l.Items {
			keys = append(keys, it.Key)
			if string(it.Value) != "v"+it.Key {
				t.Errorf("%s: %s = %q", p.query, it.Key, it.Value)
			}
		}
		if a.code != 200 || fmt.Sprint(keys) != fmt.Sprint(p.keys) || l.Next != p.next || l.Count != len(p.keys) || l.Items == nil {
			t.Errorf("list %s = %d %+v, want keys %v next %q", p.query, a.code, l, p.keys, p.next)
		}
	}
}

// TestKVDiskFull: a real local store with its free-space reserve refuses
// writes with storage.ErrInsufficientStorage (507); reads and deletes go on.
func TestKVDiskFull(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 30)
	h := newHarness(t, local.Options{MinFreeBytes: 1 << 20, BallastBytes: -1, FreeCheckInterval: time.Nanosecond,
		FreeBytes: func(string) (int64, error) { return free.Load(), nil }})
	if a := h.do(t, "PUT", "/api/v1/kv/a", "v"); a.code != 200 {
		t.Fatalf("put with room = %d %s", a.code, a.body)
	}
	free.Store(1 << 10)
	h.run(t, []routeCase{
		{name: "put on a full disk", method: "PUT", path: "/api/v1/kv/b", body: "v", want: 507, wantErr: "insufficient storage"},
		{name: "get on a full disk", method: "GET", path: "/api/v1/kv/a", want: 200},
		{name: "delete on a full disk", method: "DELETE", path: "/api/v1/kv/a", want: 200},
	})
}

// TestKVStoreClosed: a closed store answers 503.
func TestKVStoreClosed(t *testing.T) {
	h := newHarness(t, local.Options{})
	if err := h.raw.Close(); err != nil {
		t.Fatal(err)
	}
	h.run(t, []routeCase{
		{name: "get", method: "GET", path: "/api/v1/kv/a", want: 503},
		{name: "put", method: "PUT", path: "/api/v1/kv/a", body: "v", want: 503},
		{name: "list", method: "GET", path: "/api/v1/kv", want: 503},
	})
}

func TestPingRoute(t *testing.T) {
	h := newHarness(t, local.Options{})
	id := newPeerID(t)
	h.net.pings = map[string]pingAnswer{
		id.String(): {stats: p2p.PingStats{Peer: id, RTTs: []time.Duration{time.Millisecond, 3 * time.Millisecond},
			Min: time.Millisecond, Avg: 2 * time.Millisecond, Max: 3 * time.Millisecond}},
		"bad":         {err: fmt.Errorf("%w: %q is not a peer ID", p2p.ErrBadPeer, "bad")},
		"unreachable": {err: fmt.Errorf("%w: dial failed", message.ErrPeerUnreachable)},
		"refused":     {err: &message.RemoteError{Code: message.CodeInternal, Message: "no"}},
		"lost":        {err: fmt.Errorf("%w: reset", message.ErrStreamClosed)},
		"closed":      {err: message.ErrServiceClosed},
		"slow":        {err: fmt.Errorf("ping: %w", context.DeadlineExceeded)},
		"odd":         {err: errors.New("something else")},
	}
	a := h.do(t, "POST", "/api/v1/ping", `{"peer":"`+id.String()+`","count":2}`)
	got := decode[api.PingResult](t, a)
	want := api.PingResult{Peer: id.String(), RTTsMs: []float64{1, 3}, MinMs: 1, AvgMs: 2, MaxMs: 3}
	if a.code != 200 || fmt.Sprint(got) != fmt.Sprint(want) || h.net.counts.Load() != 2 {
		t.Fatalf("ping = %d %+v (count %d), want %+v", a.code, got, h.net.counts.Load(), want)
	}
	if a := h.do(t, "POST", "/api/v1/ping", `{"peer":"`+id.String()+`"}`); a.code != 200 || h.net.counts.Load() != 1 {
		t.Fatalf("ping without count = %d, count %d; want 200 and 1 ping", a.code, h.net.counts.Load())
	}
	ping := func(peer string) string { return `{"peer":"` + peer + `","count":1}` }
	h.run(t, []routeCase{
		{name: "no peer", method: "POST", path: "/api/v1/ping", body: `{"count":1}`, want: 400, wantErr: "peer is required"},
		{name: "count over 1000", method: "POST", path: "/api/v1/ping", body: `{"peer":"x","count":1001}`, want: 400, wantErr: "1001"},
		{name: "bad JSON", method: "POST", path: "/api/v1/ping", body: `{"peer":`, want: 400, wantErr: "invalid JSON"},
		{name: "body too large", method: "POST", path: "/api/v1/ping", body: `{"peer":"` + strings.Repeat("x", maxBody) + `"}`, want: 413},
		{name: "bad peer", method: "POST", path: "/api/v1/ping", body: ping("bad"), want: 400, wantErr: "invalid peer"},
		{name: "unreachable", method: "POST", path: "/api/v1/ping", body: ping("unreachable"), want: 502},
		{name: "remote error", method: "POST", path: "/api/v1/ping", body: ping("refused"), want: 502, wantErr: "remote error internal"},
		{name: "stream lost", method: "POST", path: "/api/v1/ping", body: ping("lost"), want: 502},
		{name: "service closed", method: "POST", path: "/api/v1/ping", body: ping("closed"), want: 503},
		{name: "deadline", method: "POST", path: "/api/v1/ping", body: ping("slow"), want: 504},
		{name: "other error", method: "POST", path: "/api/v1/ping", body: ping("odd"), want: 500, wantErr: "something else"},
	})
}

// client is the typed client of the harness's API.
func (h *harness) client() *api.Client { return api.NewClient(h.url, "") }

func (h *harness) awaitFinal(t *testing.T, id string) task.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, err := h.client().Task(context.Background(), id)
		if err == nil && rec.State.Final() {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not final: %+v, %v", id, rec, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTaskRoutes(t *testing.T) {
	h := newHarness(t, local.Options{})
	other := newPeerID(t)
	h.net.unreached = newPeerID(t)
	a := h.do(t, "POST", "/api/v1/tasks", `{"type":"text.chunk","input":{"text":"a b c"}}`)
	rec := decode[task.Record](t, a)
	if a.code != 202 || rec.State != task.StateQueued || rec.Type != task.TypeChunk || rec.Origin != h.self.String() || len(rec.ID) != 32 {
		t.Fatalf("submit = %d %s", a.code, a.body)
	}
	final := h.awaitFinal(t, rec.ID)
	if final.State != task.StateSucceeded || final.Peer != h.self.String() || final.Attempts != 1 || len(final.Result) == 0 {
		t.Fatalf("final record %+v", final)
	}
	a = h.do(t, "GET", "/api/v1/tasks/"+rec.ID, "")
	if got := decode[task.Record](t, a); a.code != 200 || got.ID != rec.ID || got.State != task.StateSucceeded {
		t.Fatalf("get = %d %s", a.code, a.body)
	}

	// An absent input is the empty object, which text.chunk then refuses.
	a = h.do(t, "POST", "/api/v1/tasks", `{"type":"text.chunk"}`)
	if rec = decode[task.Record](t, a); a.code != 202 {
		t.Fatalf("submit without input = %d %s", a.code, a.body)
	}
	if final := h.awaitFinal(t, rec.ID); final.State != task.StateFailed || final.Code != task.CodeBadInput {
		t.Fatalf("task without input: %+v, want failed with code %s", final, task.CodeBadInput)
	}
	// This node named as the peer runs it here.
	rec, err := h.client().SubmitTask(context.Background(), api.TaskRequest{Type: task.TypeChunk, Input: json.RawMessage(`{"text":"x"}`), Peer: h.self.String()})
	if err != nil {
		t.Fatal(err)
	}
	if final := h.awaitFinal(t, rec.ID); final.State != task.StateSucceeded || final.Peer != h.self.String() {
		t.Fatalf("task on this node by ID: %+v", final)
	}

	h.run(t, []routeCase{
		{name: "bad JSON", method: "POST", path: "/api/v1/tasks", body: `{not json`, want: 400, wantErr: "invalid JSON"},
		{name: "unknown type", method: "POST", path: "/api/v1/tasks", body: `{"type":"rm.rf","input":{}}`, want: 400, wantErr: "unknown task type"},
		{name: "input not an object", method: "POST", path: "/api/v1/tasks", body: `{"type":"text.chunk","input":"x"}`, want: 400, wantErr: "bad task input"},
		{name: "body too large", method: "POST", path: "/api/v1/tasks", body: `{"type":"text.chunk","input":{"text":"` + strings.Repeat("x", maxBody) + `"}}`, want: 413},
		{name: "bad peer", method: "POST", path: "/api/v1/tasks", body: `{"type":"text.chunk","input":{},"peer":"nope"}`, want: 400, wantErr: "invalid peer"},
		{name: "unreachable peer", method: "POST", path: "/api/v1/tasks", body: `{"type":"text.chunk","input":{},"peer":"` + h.net.unreached.String() + `"}`, want: 502},
		{name: "peer without transport", method: "POST", path: "/api/v1/tasks", body: `{"type":"text.chunk","input":{},"peer":"` + other.String() + `"}`, want: 502, wantErr: "no peer available"},
		{name: "unknown id", method: "GET", path: "/api/v1/tasks/0123456789abcdef0123456789abcdef", want: 404},
		{name: "invalid id", method: "GET", path: "/api/v1/tasks/not-an-id", want: 404},
	})
}

// TestTaskBusyAndClosed: an engine with no slot left answers 503, and so
// does a closed one.
func TestTaskBusyAndClosed(t *testing.T) {
	h := newHarness(t, local.Options{})
	rec, err := h.client().SubmitTask(context.Background(), api.TaskRequest{Type: "test.block", Input: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.started: // the task holds the one execution slot
	case <-time.After(20 * time.Second):
		t.Fatal("blocking task never started")
	}
	h.run(t, []routeCase{
		{name: "busy", method: "POST", path: "/api/v1/tasks", body: `{"type":"test.block","input":{}}`, want: 503, wantErr: "busy"},
	})
	close(h.release)
	if final := h.awaitFinal(t, rec.ID); final.State != task.StateSucceeded {
		t.Fatalf("blocking task: %+v", final)
	}
	if err := h.engine.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.run(t, []routeCase{
		{name: "closed", method: "POST", path: "/api/v1/tasks", body: `{"type":"text.chunk","input":{}}`, want: 503, wantErr: "closed"},
	})
}

// every route but status, with a body where it takes one.
var workRoutes = []routeCase{
	{name: "peers", method: "GET", path: "/api/v1/peers"},
	{name: "kv list", method: "GET", path: "/api/v1/kv"},
	{name: "kv get", method: "GET", path: "/api/v1/kv/a"},
	{name: "kv put", method: "PUT", path: "/api/v1/kv/a", body: "v"},
	{name: "kv delete", method: "DELETE", path: "/api/v1/kv/a"},
	{name: "ping", method: "POST", path: "/api/v1/ping", body: `{"peer":"x"}`},
	{name: "task submit", method: "POST", path: "/api/v1/tasks", body: `{"type":"text.chunk","input":{}}`},
	{name: "task get", method: "GET", path: "/api/v1/tasks/0123456789abcdef0123456789abcdef"},
}

func withStatus(cases []routeCase, code int, msg string) []routeCase {
	out := make([]routeCase, len(cases))
	for i, c := range cases {
		c.want, c.wantErr = code, msg
		out[i] = c
	}
	return out
}

// TestDraining: while the node does not accept work, every route but
// status answers 503.
func TestDraining(t *testing.T) {
	h := newHarness(t, local.Options{})
	h.accepting.Store(false)
	h.run(t, append(withStatus(workRoutes, 503, "not active"),
		routeCase{name: "status", method: "GET", path: "/api/v1/status", want: 200}))
}

// TestSubsystemsNotRunning: a node without store, p2p or task engine
// answers 503 on their routes.
func TestSubsystemsNotRunning(t *testing.T) {
	h := newHarness(t, local.Options{}, withoutSubsystems())
	cases := withStatus(workRoutes, 503, "is not running")
	cases = append(cases, routeCase{name: "status", method: "GET", path: "/api/v1/status", want: 200})
	h.run(t, cases)
}

func TestNoRoute(t *testing.T) {
	h := newHarness(t, local.Options{})
	h.run(t, []routeCase{
		{name: "unknown path", method: "GET", path: "/api/v2/nothing", want: 404, wantErr: "no route for GET /api/v2/nothing"},
		{name: "root", method: "GET", path: "/", want: 404, wantErr: "no route"},
		{name: "wrong method", method: "POST", path: "/api/v1/status", want: 404, wantErr: "no route for POST"},
		{name: "tasks without id", method: "GET", path: "/api/v1/tasks", want: 404},
	})
}

// TestAuth: with a token every route, unknown ones included, needs it.
func TestAuth(t *testing.T) {
	h := newHarness(t, local.Options{}, withToken("t0ken"))
	routes := append(append([]routeCase{}, workRoutes...),
		routeCase{name: "status", method: "GET", path: "/api/v1/status"},
		routeCase{name: "no route", method: "GET", path: "/api/v2/nothing"})
	for _, r := range routes {
		for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "t0ken"}, {"Authorization", "Basic t0ken"}} {
			a := h.do(t, r.method, r.path, r.body, hdr...)
			if a.code != 401 || a.header.Get("WWW-Authenticate") != `Bearer realm="p2p-agent"` || !strings.Contains(errorOf(t, a), "bearer token") {
				t.Errorf("%s %s with %v = %d %s %v, want 401", r.method, r.path, hdr, a.code, a.body, a.header)
			}
		}
	}
	if a := h.do(t, "GET", "/api/v1/status", "", "Authorization", "Bearer t0ken"); a.code != 200 {
		t.Fatalf("status with the token = %d", a.code)
	}
	if _, err := api.NewClient(h.url, "t0ken").Status(context.Background()); err != nil {
		t.Fatalf("client with the token: %v", err)
	}
	_, err := api.NewClient(h.url, "").Status(context.Background())
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != 401 {
		t.Fatalf("client without the token: %v, want an *api.Error 401", err)
	}
}

// TestBodyBudget: a request whose body does not fit in the bytes in flight
// is refused with 503 and Retry-After, unread.
func TestBodyBudget(t *testing.T) {
	h := newHarness(t, local.Options{}, withBodyBudget(64))
	h.net.pings = map[string]pingAnswer{"block": {stats: p2p.PingStats{Peer: h.self}}}
	type result struct {
		a   answer
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := h.send("POST", "/api/v1/ping", `{"peer":"block","count":1,"pad":"`+strings.Repeat("x", 20)+`"}`)
		done <- result{a, err}
	}()
	select {
	case <-h.net.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("blocking ping never started")
	}
	a := h.do(t, "PUT", "/api/v1/kv/a", strings.Repeat("v", 40))
	if a.code != 503 || a.header.Get("Retry-After") != "1" || !strings.Contains(errorOf(t, a), "in flight") {
		t.Fatalf("put while the budget is held = %d %s %v, want 503 with Retry-After", a.code, a.body, a.header)
	}
	close(h.net.release)
	if r := <-done; r.err != nil || r.a.code != 200 {
		t.Fatalf("blocking ping = %d %s, %v", r.a.code, r.a.body, r.err)
	}
	if a := h.do(t, "PUT", "/api/v1/kv/a", strings.Repeat("v", 40)); a.code != 200 {
		t.Fatalf("put after the budget was released = %d %s", a.code, a.body)
	}
}
