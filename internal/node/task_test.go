package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/node"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// taskDeadline bounds the wait for any task to reach a final state.
const taskDeadline = 40 * time.Second

// startPeerOf starts a node whose only bootstrap peer is boot.
func startPeerOf(t *testing.T, boot *node.Node, flags map[string]string) *node.Node {
	t.Helper()
	all := map[string]string{"p2p.bootstrap": boot.Host().Addrs()[0]}
	for k, v := range flags {
		all[k] = v
	}
	n, _ := startNode(t, all)
	return n
}

// waitOffering waits until n sees every one of peers connected and
// offering typ (identify has carried their capabilities).
func waitOffering(t *testing.T, n *node.Node, typ string, peers ...*node.Node) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		offering := n.Host().PeersOffering(typ)
		for _, p := range peers {
			if !slices.Contains(offering, p.PeerID()) {
				return fmt.Errorf("%s does not see %s offering %s (offering: %v)", n.PeerID(), p.PeerID(), typ, offering)
			}
		}
		return nil
	})
}

func submit(t *testing.T, n *node.Node, typ, input string, on peer.ID) task.Record {
	t.Helper()
	req := api.TaskRequest{Type: typ, Input: json.RawMessage(input)}
	if on != "" {
		req.Peer = on.String()
	}
	rec, err := client(n).SubmitTask(context.Background(), req)
	if err != nil {
		t.Fatalf("submit %s: %v", typ, err)
	}
	if rec.ID == "" || rec.State != task.StateQueued || rec.Origin != n.PeerID().String() {
		t.Fatalf("submit %s: record %+v", typ, rec)
	}
	return rec
}

// awaitFinal polls the task through the control API until it is final; it
// returns the record and its JSON, for messages and comparisons.
func awaitFinal(t *testing.T, n *node.Node, id string) (task.Record, json.RawMessage) {
	t.Helper()
	var rec task.Record
	testenv.Eventually(t, taskDeadline, func() error {
		var err error
		rec, err = client(n).Task(context.Background(), id)
		if err != nil {
			return err
		}
		if !rec.State.Final() {
			return fmt.Errorf("task %s still %s (peer %s, attempt %d)", id, rec.State, rec.Peer, rec.Attempts)
		}
		return nil
	})
	return rec, recordJSON(t, rec)
}

// recordJSON is rec as the API encodes it.
func recordJSON(t *testing.T, rec task.Record) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func chunkTexts(t *testing.T, rec task.Record) []string {
	t.Helper()
	var out task.ChunkOutput
	if err := json.Unmarshal(rec.Result, &out); err != nil {
		t.Fatalf("chunk result %s: %v", rec.Result, err)
	}
	var texts []string
	for _, c := range out.Chunks {
		texts = append(texts, c.Text)
	}
	return texts
}

// tasksTotalDelta sums the rise of every tasks_total series.
func tasksTotalDelta(before, after testenv.Families) float64 {
	var d float64
	for _, m := range after["tasks_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		d += m.GetCounter().GetValue() - before.Value("tasks_total", labels)
	}
	return d
}

const chunkInput = `{"text":"one two three four five","size":2,"overlap":0}`

var wantChunks = []string{"one two", "three four", "five"}

// remoteChunk submits a text.chunk on a (to peer on, or to no peer) and
// checks it ran on b: the record, and the exact counter deltas on both
// nodes (the executing node alone records task metrics).
func remoteChunk(t *testing.T, a, b *node.Node, on peer.ID) {
	a0, _ := testenv.Scrape(t, nil, a.MetricsURL())
	b0, _ := testenv.Scrape(t, nil, b.MetricsURL())

	sub := submit(t, a, task.TypeChunk, chunkInput, on)
	rec, _ := awaitFinal(t, a, sub.ID)
	if rec.State != task.StateSucceeded || rec.Peer != b.PeerID().String() || rec.Origin != a.PeerID().String() || rec.Attempts != 1 {
		t.Fatalf("record: state %s peer %s origin %s attempts %d error %q; want succeeded on %s from %s in 1 attempt",
			rec.State, rec.Peer, rec.Origin, rec.Attempts, rec.Error, b.PeerID(), a.PeerID())
	}
	if got := chunkTexts(t, rec); !slices.Equal(got, wantChunks) {
		t.Fatalf("chunks = %q, want %q", got, wantChunks)
	}

	// B writes task.result after executing, and counts it after the write:
	// wait for B's totals, then compare everything exactly.
	var b1 testenv.Families
	testenv.Eventually(t, 10*time.Second, func() error {
		b1, _ = testenv.Scrape(t, nil, b.MetricsURL())
		return testenv.CheckDeltas(b0, b1, []testenv.Delta{{Name: "messages_sent_total", Labels: testenv.L("type", "task.result"), Want: 1}})
	})
	a1, _ := testenv.Scrape(t, nil, a.MetricsURL())
	if err := testenv.CheckDeltas(b0, b1, []testenv.Delta{
		{Name: "tasks_total", Labels: testenv.L("type", "text.chunk", "outcome", "succeeded"), Want: 1},
		{Name: "messages_received_total", Labels: testenv.L("type", "task.request"), Want: 1},
		{Name: "message_processing_errors_total", Labels: testenv.L("type", "task.request", "reason", "handler"), Want: 0},
		{Name: "messages_sent_total", Labels: testenv.L("type", "task.request"), Want: 0},
	}); err != nil {
		t.Error("executing node B: " + err.Error())
	}
	if d := tasksTotalDelta(b0, b1); d != 1 {
		t.Errorf("B's tasks_total rose by %v in all, want 1", d)
	}
	if d := testenv.HistDelta(b0, b1, "task_duration_seconds", testenv.L("type", "text.chunk")); d != 1 {
		t.Errorf("B's task_duration_seconds_count{text.chunk} rose by %d, want 1", d)
	}
	if d := testenv.HistDelta(b0, b1, "message_processing_duration_seconds", testenv.L("type", "task.request")); d != 1 {
		t.Errorf("B's message_processing_duration_seconds_count{task.request} rose by %d, want 1", d)
	}
	if d := tasksTotalDelta(a0, a1); d != 0 {
		t.Errorf("submitting node A's tasks_total rose by %v, want 0 (only the executing node counts)", d)
	}
	if err := testenv.CheckDeltas(a0, a1, []testenv.Delta{
		{Name: "messages_sent_total", Labels: testenv.L("type", "task.request"), Want: 1},
		{Name: "messages_received_total", Labels: testenv.L("type", "task.result"), Want: 1},
		{Name: "messages_received_total", Labels: testenv.L("type", "task.request"), Want: 0},
	}); err != nil {
		t.Error("submitting node A: " + err.Error())
	}
}

// TestRemoteTaskRunsOnRequestedPeer: a task submitted with a peer runs
// there, and only there.
func TestRemoteTaskRunsOnRequestedPeer(t *testing.T) {
	a, _ := startNode(t, nil)
	b := startPeerOf(t, a, nil)
	waitOffering(t, a, task.TypeChunk, b)
	remoteChunk(t, a, b, b.PeerID())
}

// TestTaskWithoutPeerRunsOnOfferingPeer: without a peer, a task runs on a
// connected peer offering its type (docs/tasks.md "Where a task runs").
func TestTaskWithoutPeerRunsOnOfferingPeer(t *testing.T) {
	a, _ := startNode(t, nil)
	b := startPeerOf(t, a, nil)
	waitOffering(t, a, task.TypeChunk, b)
	remoteChunk(t, a, b, "")
}

// TestTaskSurvivesKilledExecutingPeer: the executing peer dies while it
// holds a task. The submitter never hangs: without a requested peer the
// task is retried locally and succeeds; with one it fails, naming the
// peer and both attempts.
func TestTaskSurvivesKilledExecutingPeer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		withPeer  bool
		wantState task.State
	}{
		{"no peer requested: retried locally", false, task.StateSucceeded},
		{"peer requested: fails", true, task.StateFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The attempt timeout is well above the 5s go-libp2p gives a
			// dial to a loopback address, so the retry to a dead peer
			// fails as unreachable rather than timing out.
			a, _ := startNode(t, map[string]string{"task.timeout": "20s"})
			b := startPeerOf(t, a, nil)
			// B takes the request and never answers: a task that is
			// still running when B dies.
			started := make(chan struct{}, 1)
			release := make(chan struct{})
			b.Service().Handle(message.TypeTaskRequest, func(ctx context.Context, _ peer.ID, _ *message.Envelope) (*message.Envelope, error) {
				started <- struct{}{}
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-release:
					return nil, fmt.Errorf("released")
				}
			})
			t.Cleanup(func() { close(release) }) // runs before B's Shutdown
			waitOffering(t, a, task.TypeChunk, b)
			a0, _ := testenv.Scrape(t, nil, a.MetricsURL())

			on := peer.ID("")
			if tc.withPeer {
				on = b.PeerID()
			}
			sub := submit(t, a, task.TypeChunk, chunkInput, on)
			select {
			case <-started:
			case <-time.After(taskDeadline):
				t.Fatal("B never received the task")
			}
			killed := time.Now()
			if err := b.Host().Close(); err != nil { // every connection of B dies
				t.Fatal(err)
			}
			rec, raw := awaitFinal(t, a, sub.ID)
			t.Logf("final after %v: %s", time.Since(killed).Round(time.Millisecond), raw)
			a1, _ := testenv.Scrape(t, nil, a.MetricsURL())
			if rec.State != tc.wantState || rec.Attempts != 2 || rec.Origin != a.PeerID().String() {
				t.Fatalf("record: state %s attempts %d origin %s, want %s after 2 attempts", rec.State, rec.Attempts, rec.Origin, tc.wantState)
			}
			attempt1 := "attempt 1 on peer " + b.PeerID().String() + ": "
			if !tc.withPeer {
				if rec.Peer != a.PeerID().String() || !slices.Equal(chunkTexts(t, rec), wantChunks) {
					t.Fatalf("record: peer %s result %s, want the chunks computed on A %s", rec.Peer, rec.Result, a.PeerID())
				}
				if err := testenv.CheckDeltas(a0, a1, []testenv.Delta{{Name: "tasks_total", Labels: testenv.L("type", "text.chunk", "outcome", "succeeded"), Want: 1}}); err != nil {
					t.Fatal(err)
				}
				return
			}
			attempt2 := "; attempt 2 on peer " + b.PeerID().String() + ": no peer available: "
			if rec.Peer != b.PeerID().String() || rec.Code != task.CodeUnavailable || rec.Result != nil ||
				!strings.HasPrefix(rec.Error, attempt1) || !strings.Contains(rec.Error, attempt2) || !strings.Contains(rec.Error, "peer unreachable") {
				t.Fatalf("record: peer %s code %q error %q; want a failure on %s naming both attempts", rec.Peer, rec.Code, rec.Error, b.PeerID())
			}
			if d := tasksTotalDelta(a0, a1); d != 0 {
				t.Errorf("A's tasks_total rose by %v, want 0: the task never ran on A", d)
			}
		})
	}
}

// TestTaskResultReadableAfterRestart: the record of a finished task is
// stored, so a node restarted on the same data directory serves it
// unchanged.
func TestTaskResultReadableAfterRestart(t *testing.T) {
	dir := t.TempDir()
	a, _ := startNode(t, map[string]string{"node.data_dir": dir})
	sub := submit(t, a, task.TypeChunk, chunkInput, "")
	rec, raw := awaitFinal(t, a, sub.ID)
	if rec.State != task.StateSucceeded || rec.Peer != a.PeerID().String() || !slices.Equal(chunkTexts(t, rec), wantChunks) {
		t.Fatalf("before restart: %s", raw)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	a2, _ := startNode(t, map[string]string{"node.data_dir": dir})
	if a2.PeerID() != a.PeerID() {
		t.Fatalf("restarted node is %s, was %s", a2.PeerID(), a.PeerID())
	}
	rec2, err := client(a2).Task(context.Background(), sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if raw2 := recordJSON(t, rec2); !bytes.Equal(raw2, raw) {
		t.Fatalf("after restart:\n%s\nbefore:\n%s", raw2, raw)
	}
	// a missing id is still a 404, not a stale answer
	if _, err := client(a2).Task(context.Background(), strings.Repeat("0", 32)); err == nil {
		t.Fatal("unknown task found after restart")
	} else if ae, ok := err.(*api.Error); !ok || ae.StatusCode != 404 {
		t.Fatalf("unknown task: %v, want 404", err)
	}
}

// TestSearchFansOutAcrossMesh: documents indexed on B and on C (same
// collection) are found by one index.search submitted on A without a peer,
// which asks every offering peer and merges their top-k.
func TestSearchFansOutAcrossMesh(t *testing.T) {
	a, _ := startNode(t, nil)
	b := startPeerOf(t, a, nil)
	c := startPeerOf(t, a, nil)
	waitOffering(t, a, task.TypeSearch, b, c)

	docs := []struct {
		on   *node.Node
		id   string
		text string
	}{
		{b, "cats", "Cats purr and sleep on warm windowsills all afternoon, dreaming of mice."},
		{c, "rockets", "Rockets burn liquid fuel to launch satellites into orbit around the earth."},
	}
	for _, d := range docs {
		in, _ := json.Marshal(map[string]string{"collection": "mesh", "id": d.id, "text": d.text})
		sub := submit(t, a, task.TypeAdd, string(in), d.on.PeerID())
		rec, raw := awaitFinal(t, a, sub.ID)
		if rec.State != task.StateSucceeded || rec.Peer != d.on.PeerID().String() {
			t.Fatalf("index.add %s: %s", d.id, raw)
		}
	}
	// index data lives where index.add ran
	for _, n := range []*node.Node{a, b, c} {
		kvs, err := n.Store().List(context.Background(), task.IndexPrefix+"mesh/", storage.Strong)
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		for _, kv := range kvs {
			have = append(have, kv.Key)
		}
		var want []string
		for _, d := range docs {
			if d.on == n {
				want = append(want, task.IndexPrefix+"mesh/"+d.id+"/000000")
			}
		}
		if !slices.Equal(have, want) {
			t.Fatalf("%s stores %v, want %v", n.PeerID(), have, want)
		}
	}

	before := map[*node.Node]testenv.Families{}
	for _, n := range []*node.Node{a, b, c} {
		before[n], _ = testenv.Scrape(t, nil, n.MetricsURL())
	}
	everyNode := []string{a.PeerID().String(), b.PeerID().String(), c.PeerID().String()}
	slices.Sort(everyNode)
	searches := []struct {
		query   string
		top     string
		topPeer *node.Node
		want    []string // doc ids expected among the results
	}{
		{"rockets launch satellites into orbit", "rockets", c, []string{"rockets"}},
		{"cats sleep on warm windowsills", "cats", b, []string{"cats"}},
		{"cats dreaming of rockets and satellites", "", nil, []string{"cats", "rockets"}},
	}
	for _, s := range searches {
		in, _ := json.Marshal(map[string]any{"collection": "mesh", "query": s.query, "k": 5})
		sub := submit(t, a, task.TypeSearch, string(in), "")
		rec, raw := awaitFinal(t, a, sub.ID)
		if rec.State != task.StateSucceeded || rec.Peer != a.PeerID().String() || rec.Attempts != 1 {
			t.Fatalf("search %q: %s", s.query, raw)
		}
		var out task.SearchOutput
		if err := json.Unmarshal(rec.Result, &out); err != nil {
			t.Fatal(err)
		}
		peers := slices.Clone(out.Peers)
		slices.Sort(peers)
		if !slices.Equal(peers, everyNode) || len(out.Failed) != 0 || out.Collection != "mesh" {
			t.Fatalf("search %q answered by %v (failed %v), want every node %v", s.query, out.Peers, out.Failed, everyNode)
		}
		if len(out.Results) == 0 {
			t.Fatalf("search %q: no results", s.query)
		}
		holder := map[string]string{"cats": b.PeerID().String(), "rockets": c.PeerID().String()}
		var ids []string
		for i, r := range out.Results {
			ids = append(ids, r.ID)
			if r.Peer != holder[r.ID] {
				t.Errorf("search %q: result %s attributed to %s, stored on %s", s.query, r.ID, r.Peer, holder[r.ID])
			}
			if i > 0 && r.Score > out.Results[i-1].Score {
				t.Errorf("search %q: results not sorted by score: %+v", s.query, out.Results)
			}
		}
		for _, id := range s.want {
			if !slices.Contains(ids, id) {
				t.Errorf("search %q: %s missing from the merged results %v", s.query, id, ids)
			}
		}
		if s.top != "" && (out.Results[0].ID != s.top || out.Results[0].Peer != s.topPeer.PeerID().String()) {
			t.Errorf("search %q: top hit %s from %s, want %s from %s", s.query, out.Results[0].ID, out.Results[0].Peer, s.top, s.topPeer.PeerID())
		}
	}
	// every search ran exactly once on every node, including A itself
	for name, n := range map[string]*node.Node{"A": a, "B": b, "C": c} {
		after, _ := testenv.Scrape(t, nil, n.MetricsURL())
		if err := testenv.CheckDeltas(before[n], after, []testenv.Delta{
			{Name: "tasks_total", Labels: testenv.L("type", "index.search", "outcome", "succeeded"), Want: float64(len(searches))},
		}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if d := tasksTotalDelta(before[n], after); d != float64(len(searches)) {
			t.Errorf("%s: tasks_total rose by %v in all, want %d", name, d, len(searches))
		}
	}
}
