package fleet

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
)

// FuzzDecodeAnswer: any body a peer answers an info request with is either
// refused with an error wrapping message.ErrMalformed, or accepted within
// every bound; an accepted answer encodes and decodes to the same answer.
func FuzzDecodeAnswer(f *testing.F) {
	const id = "12D3KooWBL4uFdq4B4zntQvZpgz84VsYXtenHhErmHp2bdnmRKBY"
	good, _ := json.Marshal(Answer{
		Name: "m", Version: "1", State: "active", Capabilities: []string{"text.chunk"},
		MetricsURL: "http://127.0.0.1:8080/metrics", CPUPercent: 1.5, MemoryBytes: 1 << 20,
		Peers: []Edge{{ID: id, LatencyMs: 0.3}},
		Hints: []Hint{{ID: id, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}},
	})
	for _, b := range []string{string(good), `{}`, `[]`, `null`, `{"cpu_percent":-1}`, `{"metrics_url":"http://u:p@h/"}`,
		`{"peers":[{"id":"x"}]}`, `{"name":"\u0001"}`, `{"tasks_running":-5}`} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := decodeAnswer(body)
		if err != nil {
			if !errors.Is(err, message.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(a.Peers) > MaxEdges || len(a.Hints) > MaxHints || len(a.Capabilities) > maxCaps || a.TasksRunning < 0 {
			t.Fatalf("accepted an answer beyond its bounds: %d edges, %d hints, %d capabilities, %d tasks", len(a.Peers), len(a.Hints), len(a.Capabilities), a.TasksRunning)
		}
		again, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("accepted answer does not encode: %v", err)
		}
		b, err := decodeAnswer(again)
		if err != nil {
			t.Fatalf("accepted answer refused once re-encoded: %v", err)
		}
		if again2, _ := json.Marshal(b); string(again2) != string(again) {
			t.Fatalf("round trip changed the answer:\n%s\n%s", again, again2)
		}
	})
}
