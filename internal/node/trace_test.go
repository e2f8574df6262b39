package node_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// TestTraceGetBadInput sends trace.get requests a stranger could: a
// payload that is not an object, a malformed trace id, and an unknown
// but well-formed one. The first two get the usual error reply (code
// malformed) and count as malformed; the third gets an empty trace.spans.
func TestTraceGetBadInput(t *testing.T) {
	n, _ := startNode(t, nil)
	s := openMsgStream(t, rawPeer(t), n)
	before, _ := testenv.Scrape(t, nil, n.MetricsURL())
	br := bufio.NewReader(s)
	_ = s.SetDeadline(time.Now().Add(20 * time.Second))
	ask := func(id string, payload json.RawMessage) *message.Envelope {
		t.Helper()
		env := &message.Envelope{V: 1, ID: id, Type: tracing.TypeGet, SentAt: time.Now().UTC(), Payload: payload}
		f, err := message.AppendFrame(nil, env, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(f); err != nil {
			t.Fatal(err)
		}
		resp, err := message.DecodeFrame(br, message.DefaultMaxMessageBytes)
		if err != nil || resp.ID != id {
			t.Fatalf("reply to %s: %+v, %v", id, resp, err)
		}
		return resp
	}
	for _, bad := range []string{`[1,2]`, `{"trace_id":"not-hex"}`} {
		resp := ask("bad", json.RawMessage(bad))
		var ep message.ErrorPayload
		if resp.Type != message.TypeError || json.Unmarshal(resp.Payload, &ep) != nil || ep.Code != message.CodeMalformed {
			t.Fatalf("trace.get %s: %+v %s, want an error with code malformed", bad, resp, resp.Payload)
		}
	}
	resp := ask("unknown", json.RawMessage(`{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}`))
	var r tracing.SpansReply
	if resp.Type != tracing.TypeSpans || json.Unmarshal(resp.Payload, &r) != nil || len(r.Spans) != 0 || r.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("trace.get of an unknown trace: %+v %s", resp, resp.Payload)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		after, _ := testenv.Scrape(t, nil, n.MetricsURL())
		return testenv.CheckDeltas(before, after, []testenv.Delta{
			{Name: "messages_received_total", Labels: testenv.L("type", "trace.get"), Want: 3},
			{Name: "message_processing_errors_total", Labels: testenv.L("type", "trace.get", "reason", "malformed"), Want: 2},
			{Name: "messages_sent_total", Labels: testenv.L("type", "trace.spans"), Want: 1},
			{Name: "messages_sent_total", Labels: testenv.L("type", "error"), Want: 2},
		})
	})
}

// TestAPITraceparent: an API request with a sampled traceparent header is
// traced as its child, whatever the sampling ratio (0 here): the answer
// carries the api span's traceparent, and the trace holds the api span and
// the storage span under it.
func TestAPITraceparent(t *testing.T) {
	n, _ := startNode(t, map[string]string{"tracing.sample_ratio": "0"})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req, _ := http.NewRequest(http.MethodPut, n.APIURL()+"/api/v1/kv/traced?consistency=strong", strings.NewReader("v"))
	req.Header.Set("traceparent", parent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tp := resp.Header.Get("traceparent"); resp.StatusCode != 200 || !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Fatalf("status %d traceparent %q, want a child span of %s", resp.StatusCode, tp, parent)
	}
	// Unsampled header: not traced.
	req, _ = http.NewRequest(http.MethodGet, n.APIURL()+"/api/v1/kv/traced", nil)
	req.Header.Set("traceparent", "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tp := resp.Header.Get("traceparent"); tp != "" {
		t.Fatalf("unsampled request answered traceparent %q", tp)
	}

	tr, err := n.Trace(t.Context(), "4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range tr.Spans {
		names = append(names, s.Name+" "+s.Attributes["http.route"]+s.Attributes["storage.backend"])
	}
	if strings.Join(names, ",") != "api PUT /api/v1/kv/{key...},storage put local" {
		t.Fatalf("spans %v", names)
	}
	if tr.Spans[0].ParentID != "00f067aa0ba902b7" || tr.Spans[1].ParentID != tr.Spans[0].SpanID {
		t.Fatalf("parentage: %+v", tr.Spans)
	}
	if _, err := n.Trace(t.Context(), "5bf92f3577b34da6a3ce929d0e0e4736"); err == nil {
		t.Fatal("the unsampled request left a trace")
	}
}
