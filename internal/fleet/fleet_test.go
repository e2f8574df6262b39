package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

func newHost(t *testing.T) host.Host {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// refusals counts Config.Refused calls by reason.
type refusals struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[reason]++
}

func (r *refusals) get(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[reason]
}

func startService(t *testing.T, h host.Host, name string, ttl time.Duration, ref *refusals) *Service {
	t.Helper()
	cfg := Config{
		Local: func() Local {
			return Local{Name: name, Version: "v-test", State: "active", Capabilities: []string{"text.chunk"}, MemoryBytes: 1234, TasksRunning: 2}
		},
		MetricsURL: func(local net.IP) string { return "http://" + local.String() + ":9100/metrics" },
		TTL:        ttl,
	}
	if ref != nil {
		cfg.Refused = ref.add
	}
	s := New(h, cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func connect(t *testing.T, a, b host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestViewAndExpiry: three hosts in a line (A-B, B-C); A learns C through
// B's hints and asks C itself; each entry holds what that node said about
// itself; a closed node leaves the view within the TTL.
func TestViewAndExpiry(t *testing.T) {
	ha, hb, hc := newHost(t), newHost(t), newHost(t)
	const ttl = 2 * time.Second
	a := startService(t, ha, "a", ttl, nil)
	startService(t, hb, "b", ttl, nil)
	sc := startService(t, hc, "c", ttl, nil)
	connect(t, ha, hb)
	connect(t, hb, hc)

	eventually(t, 10*time.Second, func() error {
		var got []string
		for _, n := range a.Nodes() {
			got = append(got, n.Answer.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"b", "c"}) {
			return fmt.Errorf("A's view %v, want [b c]", got)
		}
		return nil
	})
	for _, n := range a.Nodes() {
		want := map[string]peer.ID{"b": hb.ID(), "c": hc.ID()}[n.Answer.Name]
		if n.ID != want {
			t.Errorf("node named %q recorded under %s, want %s", n.Answer.Name, n.ID, want)
		}
		if n.Answer.MetricsURL != "http://127.0.0.1:9100/metrics" || n.Answer.Version != "v-test" || n.Answer.TasksRunning != 2 || n.Answer.MemoryBytes != 1234 {
			t.Errorf("node %s answered %+v", n.Answer.Name, n.Answer)
		}
	}
	v := a.Network(context.Background())
	if len(v.Edges[hb.ID()]) != 2 || len(v.Edges[hc.ID()]) < 1 {
		t.Errorf("edges %v: want B with 2 and C with at least 1", v.Edges)
	}

	sc.Close()
	hc.Close()
	closed := time.Now()
	eventually(t, ttl+time.Second, func() error {
		for _, n := range a.Nodes() {
			if n.ID == hc.ID() {
				return fmt.Errorf("C still in A's view %s after it closed", time.Since(closed))
			}
		}
		return nil
	})
	// the poll runs every 20ms: allow that much past the TTL
	if d := time.Since(closed); d > ttl+100*time.Millisecond {
		t.Errorf("C left the view %s after closing, over the TTL %s", d, ttl)
	}
}

// TestBadAnswersRefusedAndCounted: a peer answering an oversized frame, a
// frame that is not JSON, and JSON over a field bound is not recorded and
// each answer is counted with its reason.
func TestBadAnswersRefusedAndCounted(t *testing.T) {
	ha, hm := newHost(t), newHost(t)
	ref := &refusals{n: map[string]int{}}
	a := New(ha, Config{Local: func() Local { return Local{Name: "a"} }, TTL: time.Minute, Refused: ref.add})
	a.ctx, a.cancel = context.WithCancel(context.Background())
	t.Cleanup(a.Close)

	var answer []byte
	var mu sync.Mutex
	hm.SetStreamHandler(ProtocolID, func(s network.Stream) {
		defer s.Close()
		mu.Lock()
		b := answer
		mu.Unlock()
		_, _ = s.Write(b)
	})
	connect(t, ha, hm)
	frame := func(body []byte) []byte {
		f, err := message.AppendRawFrame(nil, body, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	long := strings.Repeat("x", maxNameLen+1)
	cases := []struct {
		name, reason string
		answer       []byte
	}{
		{"oversized", "too_large", frame(bytes.Repeat([]byte(" "), MaxAnswerBytes+1))},
		{"not json", "malformed", frame([]byte("{not json"))},
		{"long name", "malformed", frame([]byte(`{"name":"` + long + `"}`))},
		{"bad url", "malformed", frame([]byte(`{"name":"m","metrics_url":"http://u:p@h/metrics"}`))},
		{"negative cpu", "malformed", frame([]byte(`{"name":"m","cpu_percent":-1}`))},
		{"edge not a peer", "malformed", frame([]byte(`{"name":"m","peers":[{"id":"nope","latency_ms":1}]}`))},
	}
	want := map[string]int{}
	for _, c := range cases {
		mu.Lock()
		answer = c.answer
		mu.Unlock()
		if _, err := a.query(hm.ID(), false); err == nil {
			t.Errorf("%s: answer accepted", c.name)
		}
		want[c.reason]++
		for _, r := range []string{"too_large", "malformed"} {
			if got := ref.get(r); got != want[r] {
				t.Errorf("after %s: %d refusals %s, want %d", c.name, got, r, want[r])
			}
		}
	}
	if n := a.Nodes(); len(n) != 0 {
		t.Errorf("view holds %v after bad answers only", n)
	}
	// a good answer is recorded
	good, _ := json.Marshal(Answer{Name: "m", Version: "1", State: "active", Capabilities: []string{}})
	mu.Lock()
	answer = frame(good)
	mu.Unlock()
	if _, err := a.query(hm.ID(), false); err != nil {
		t.Fatal(err)
	}
	if n := a.Nodes(); len(n) != 1 || n[0].ID != hm.ID() || n[0].Answer.Name != "m" {
		t.Errorf("view %+v, want the one good answer under the answering peer", n)
	}
}

// TestHintsBounded: a refresh answer carries neither hints nor edges, a
// hints answer at most MaxHints hints, an edges answer every agent peer.
func TestHintsBounded(t *testing.T) {
	center := newHost(t)
	s := startService(t, center, "center", time.Minute, nil)
	var others []host.Host
	for i := 0; i < MaxHints+3; i++ {
		h := newHost(t)
		startService(t, h, fmt.Sprint("n", i), time.Minute, nil)
		connect(t, h, center)
		others = append(others, h)
	}
	eventually(t, 10*time.Second, func() error {
		if n := len(s.edges()); n != len(others) {
			return fmt.Errorf("%d agent edges, want %d", n, len(others))
		}
		return nil
	})
	if a := s.answer(net.IPv4(127, 0, 0, 1), others[0].ID(), request{}); a.Hints != nil || a.Peers != nil {
		t.Errorf("refresh answer: %d hints, %d edges; want none", len(a.Hints), len(a.Peers))
	}
	a := s.answer(net.IPv4(127, 0, 0, 1), others[0].ID(), request{Hints: true})
	if len(a.Hints) != MaxHints || a.Peers != nil {
		t.Errorf("hints answer: %d hints, %d edges; want %d and none", len(a.Hints), len(a.Peers), MaxHints)
	}
	for _, h := range a.Hints {
		if h.ID == others[0].ID().String() {
			t.Errorf("the asker is hinted to itself")
		}
	}
	if e := s.answer(nil, others[0].ID(), request{Edges: true}); len(e.Peers) != len(others) || e.Hints != nil {
		t.Errorf("edges answer: %d edges %d hints, want %d and none", len(e.Peers), len(e.Hints), len(others))
	}
}

// TestAskingTooOftenIsRefused: a stranger asking for info in a tight loop
// gets at most the burst plus the rate answered; the rest are reset and
// counted as busy, and a well-behaved peer is still answered meanwhile.
func TestAskingTooOftenIsRefused(t *testing.T) {
	ref := &refusals{n: map[string]int{}}
	server := newHost(t)
	startService(t, server, "server", time.Minute, ref)
	stranger := newHost(t)
	connect(t, stranger, server)
	ask := func(h host.Host) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := h.NewStream(ctx, server.ID(), ProtocolID)
		if err != nil {
			return err
		}
		defer st.Close()
		f, _ := message.AppendRawFrame(nil, []byte(`{}`), maxRequestBytes)
		if _, err := st.Write(f); err != nil {
			return err
		}
		_, err = readAnswer(st)
		return err
	}
	const tries = 40
	start := time.Now()
	answered := 0
	for range tries {
		if ask(stranger) == nil {
			answered++
		}
	}
	allowed := AnswerBurst + int(time.Since(start).Seconds()*AnswerRate) + 1
	if answered < AnswerBurst || answered > allowed {
		t.Fatalf("%d of %d rapid requests answered, want %d..%d", answered, tries, AnswerBurst, allowed)
	}
	eventually(t, 5*time.Second, func() error {
		if got := ref.get(message.ReasonBusy); got != tries-answered {
			return fmt.Errorf("%d refusals counted busy, want %d", got, tries-answered)
		}
		return nil
	})
	polite := newHost(t)
	connect(t, polite, server)
	if err := ask(polite); err != nil {
		t.Fatalf("a well-behaved peer is refused too: %v", err)
	}
}
