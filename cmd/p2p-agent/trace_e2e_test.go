package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// threeNamed starts alpha, then bravo and charlie bootstrapping from it, and
// waits for the full mesh.
func threeNamed(t *testing.T, extra ...string) (a, b, c *testenv.Node) {
	t.Helper()
	a = testenv.StartNode(t, testenv.NodeOptions{Args: append([]string{"--node.name=alpha"}, extra...)})
	boot := "--p2p.bootstrap=" + a.FullAddr()
	b = testenv.StartNode(t, testenv.NodeOptions{Args: append([]string{"--node.name=bravo", boot}, extra...)})
	c = testenv.StartNode(t, testenv.NodeOptions{Args: append([]string{"--node.name=charlie", boot}, extra...)})
	for _, n := range []*testenv.Node{a, b, c} {
		poll(t, 20*time.Second, 20*time.Millisecond, func() error {
			ps, err := peersOf(t, n)
			if err != nil {
				return err
			}
			offering := 0
			for _, p := range ps {
				if slices.Contains(p.Capabilities, "index.search") {
					offering++
				}
			}
			if offering != 2 {
				return fmt.Errorf("%s sees %d peers offering index.search, want 2", n.PeerID, offering)
			}
			return nil
		})
	}
	return a, b, c
}

// TestTraceAcrossThreeNodes submits a traced index.search on alpha, which
// fans it out to bravo and charlie: one trace id, spans from all three, each
// remote server span the child of the requester's msg.send span, exact span
// names and counts per node; `trace` prints the timeline and --json the
// spans; an unknown id exits 1; once charlie is gone the trace is marked
// incomplete instead of failing.
func TestTraceAcrossThreeNodes(t *testing.T) {
	testenv.SkipIfShort(t, "starts three binaries")
	a, b, c := threeNamed(t, "--tracing.sample_ratio=0")
	stdout, stderr, code := a.CLI("task", "submit", "index.search", "--trace", "--wait", "--input", writeTemp(t, `{"collection":"none","query":"hello"}`))
	if code != 0 {
		t.Fatalf("task submit: exit %d: %s", code, stderr)
	}
	traceID := strings.TrimSpace(strings.TrimPrefix(firstLine(stderr, "trace "), "trace "))
	if _, err := tracing.ParseTraceID(traceID); err != nil {
		t.Fatalf("no trace id on stderr (%q): %v; stdout %s", stderr, err, stdout)
	}

	// The trace, as JSON: wait until alpha's task.submit span has ended
	// (just after the final record is stored).
	var tr tracing.Trace
	poll(t, 10*time.Second, 20*time.Millisecond, func() error {
		out, errOut, code := a.CLI("trace", traceID, "--json")
		if code != 0 {
			return fmt.Errorf("trace --json: exit %d: %s", code, errOut)
		}
		tr = tracing.Trace{}
		if err := json.Unmarshal([]byte(out), &tr); err != nil {
			return err
		}
		if countSpans(tr, "alpha", "task.submit") != 1 {
			return fmt.Errorf("no task.submit span yet")
		}
		return nil
	})
	if tr.TraceID != traceID || len(tr.Incomplete) != 0 || tr.Nodes() != 3 {
		t.Fatalf("trace %s: %d nodes, incomplete %v", tr.TraceID, tr.Nodes(), tr.Incomplete)
	}
	want := map[string]int{
		// the root, one dispatch and one send per peer, the local share
		// (queue, execute, the store page it read) and the record writes
		// made under the task (queued, running, final).
		"alpha/task.submit": 1, "alpha/task.dispatch": 2, "alpha/msg.send": 2,
		"alpha/task.queue": 1, "alpha/task.execute": 1, "alpha/storage list": 1, "alpha/storage put": 3,
		// each peer: the server span, its queue, execution and store page
		"bravo/msg": 1, "bravo/task.queue": 1, "bravo/task.execute": 1, "bravo/storage list": 1,
		"charlie/msg": 1, "charlie/task.queue": 1, "charlie/task.execute": 1, "charlie/storage list": 1,
	}
	got := map[string]int{}
	byID := map[string]tracing.SpanRecord{}
	for _, s := range tr.Spans {
		got[s.Node+"/"+s.Name]++
		byID[s.SpanID] = s
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("spans per node:\n got %v\nwant %v", got, want)
	}
	peerIDs := map[string]string{"bravo": b.PeerID, "charlie": c.PeerID}
	for _, s := range tr.Spans {
		if s.Name != "msg" {
			continue
		}
		parent, ok := byID[s.ParentID]
		if !ok || parent.Node != "alpha" || parent.Name != "msg.send" || parent.Attributes["net.peer"] != peerIDs[s.Node] {
			t.Errorf("%s's server span has parent %+v, want alpha's msg.send to it", s.Node, parent)
		}
		if disp := byID[parent.ParentID]; disp.Name != "task.dispatch" || disp.Attributes["peer"] != peerIDs[s.Node] {
			t.Errorf("msg.send to %s is not under the dispatch to it: %+v", s.Node, disp)
		}
	}

	// The timeline.
	out, errOut, code := a.CLI("trace", traceID)
	if code != 0 {
		t.Fatalf("trace: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "trace "+traceID+"   total ") || !strings.HasSuffix(lines[0], "nodes 3") || len(lines) != 1+len(tr.Spans) {
		t.Fatalf("timeline:\n%s", out)
	}
	if !strings.Contains(out, "task.dispatch bravo") || !strings.Contains(out, "task.dispatch charlie") || !strings.Contains(out, "charlie  msg task.request") {
		t.Fatalf("timeline lacks the dispatches or charlie's server span:\n%s", out)
	}
	t.Logf("timeline:\n%s", out)

	// Unknown and malformed ids.
	if _, errOut, code := a.CLI("trace", "4bf92f3577b34da6a3ce929d0e0e4736"); code != 1 || !strings.Contains(errOut, "trace not found") {
		t.Fatalf("unknown trace: exit %d: %q", code, errOut)
	}
	if _, errOut, code := a.CLI("trace", "xyz"); code != 2 || !strings.Contains(errOut, "32 hex digits") {
		t.Fatalf("malformed trace id: exit %d: %q", code, errOut)
	}

	// charlie gone: the trace is still there, marked incomplete.
	c.Kill()
	out, errOut, code = a.CLI("trace", traceID, "--json")
	if code != 0 {
		t.Fatalf("trace with charlie gone: exit %d: %s", code, errOut)
	}
	tr = tracing.Trace{}
	if err := json.Unmarshal([]byte(out), &tr); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tr.Incomplete) != fmt.Sprint([]string{c.PeerID}) || countSpans(tr, "charlie", "msg") != 0 || countSpans(tr, "bravo", "msg") != 1 {
		t.Fatalf("with charlie gone: incomplete %v, spans %d", tr.Incomplete, len(tr.Spans))
	}
}

func countSpans(t tracing.Trace, node, name string) int {
	n := 0
	for _, s := range t.Spans {
		if s.Node == node && s.Name == name {
			n++
		}
	}
	return n
}

func firstLine(s, prefix string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

// writeTemp writes content to a file in a test temp dir and returns its path.
func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "input.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExemplars traces a task on one node and finds its trace id as an
// exemplar of the task and storage duration histograms: in the OpenMetrics
// exposition, and in a real Prometheus with exemplar storage.
func TestExemplars(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary and prometheus")
	n := testenv.StartNode(t, testenv.NodeOptions{Args: []string{"--tracing.sample_ratio=0"}})
	_, stderr, code := n.CLI("task", "submit", "text.chunk", "--trace", "--wait", "--input", writeTemp(t, `{"text":"one two three"}`))
	if code != 0 {
		t.Fatalf("task submit: exit %d: %s", code, stderr)
	}
	traceID := strings.TrimPrefix(firstLine(stderr, "trace "), "trace ")
	if len(traceID) != 32 {
		t.Fatalf("no trace id on stderr: %q", stderr)
	}

	req, _ := http.NewRequest(http.MethodGet, n.MetricsURL, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `# {trace_id="` + traceID + `"}`
	for _, family := range []string{"task_duration_seconds_bucket{", "storage_operation_duration_seconds_bucket{"} {
		found := false
		for line := range strings.SplitSeq(string(body), "\n") {
			if strings.HasPrefix(line, family) && strings.Contains(line, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("OpenMetrics exposition: no %s line with exemplar %s", family, want)
		}
	}

	p := scrapeNode(t, n, "--enable-feature=exemplar-storage")
	testenv.Eventually(t, 30*time.Second, func() error {
		ex, err := p.QueryExemplars(`task_duration_seconds_bucket{type="text.chunk"}`)
		if err != nil {
			return err
		}
		for _, e := range ex {
			if e.Labels["trace_id"] == traceID {
				return nil
			}
		}
		return fmt.Errorf("no exemplar with trace_id %s among %d", traceID, len(ex))
	})
}

// TestOTLPExportToJaeger exports the spans of a traced remote task from two
// nodes to a real Jaeger over OTLP/HTTP: Jaeger has the trace, with spans
// from both nodes and the remote server span under the requester's send.
func TestOTLPExportToJaeger(t *testing.T) {
	testenv.SkipIfShort(t, "starts jaeger and two binaries")
	j := testenv.StartJaeger(t)
	export := "--tracing.otlp_endpoint=" + j.OTLP
	a := testenv.StartNode(t, testenv.NodeOptions{Args: []string{"--node.name=alpha", "--tracing.sample_ratio=0", export}})
	b := testenv.StartNode(t, testenv.NodeOptions{Args: []string{"--node.name=bravo", "--tracing.sample_ratio=0", export, "--p2p.bootstrap=" + a.FullAddr()}})
	_, stderr, code := a.CLI("task", "submit", "text.chunk", "--trace", "--wait", "--peer", b.PeerID, "--input", writeTemp(t, `{"text":"one two three"}`))
	if code != 0 {
		t.Fatalf("task submit: exit %d: %s", code, stderr)
	}
	traceID := strings.TrimPrefix(firstLine(stderr, "trace "), "trace ")
	if len(traceID) != 32 {
		t.Fatalf("no trace id on stderr: %q", stderr)
	}
	var spans []testenv.JaegerSpan
	testenv.Eventually(t, 30*time.Second, func() error {
		var err error
		spans, err = j.Trace(context.Background(), traceID)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, s := range spans {
			have[s.Service+"/"+s.OperationName] = true
		}
		for _, w := range []string{"alpha/task.submit", "alpha/task.dispatch", "alpha/msg.send", "bravo/msg", "bravo/task.execute"} {
			if !have[w] {
				return fmt.Errorf("jaeger has %d spans of %s, none %s yet", len(spans), traceID, w)
			}
		}
		return nil
	})
	byID := map[string]testenv.JaegerSpan{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	for _, s := range spans {
		if s.Service == "bravo" && s.OperationName == "msg" {
			if p := byID[s.ParentSpanID]; p.Service != "alpha" || p.OperationName != "msg.send" {
				t.Fatalf("bravo's msg span has parent %+v in Jaeger, want alpha's msg.send", p)
			}
		}
	}
	t.Logf("jaeger holds %d spans of trace %s", len(spans), traceID)
}
