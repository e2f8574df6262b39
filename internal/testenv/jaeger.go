package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Jaeger is a real Jaeger all-in-one (the v2 collector, in-memory storage)
// started by StartJaeger: an OTLP/HTTP receiver and the query API, both on
// free loopback ports.
type Jaeger struct {
	// OTLP is the base URL of the OTLP/HTTP receiver (http://127.0.0.1:N).
	OTLP string
	// Query is the base URL of the query API (http://127.0.0.1:N).
	Query string
}

// StartJaeger runs the jaeger binary (scripts/test-deps.sh builds it from
// tools/jaeger) and waits until both ports answer; it is stopped at test
// cleanup.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := ToolPath(t, "jaeger")
	ports := make([]int, 3)
	for i := range ports {
		p, err := freeLoopbackPort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, ports[0], ports[1], ports[2])
	dir := t.TempDir()
	path := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &lockedBuffer{}
	cmd := exec.Command(bin, "--config=file:"+path)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	setParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting jaeger: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("jaeger log:\n%s", log.String())
		}
	})
	j := &Jaeger{
		Query: "http://127.0.0.1:" + strconv.Itoa(ports[0]),
		OTLP:  "http://127.0.0.1:" + strconv.Itoa(ports[2]),
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []int{ports[0], ports[2]} {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("jaeger exited before it was ready:\n%s", log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("jaeger not ready within 30s:\n%s", log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return j
}

// JaegerSpan is one span of a trace as Jaeger's query API returns it.
type JaegerSpan struct {
	SpanID        string
	OperationName string
	Service       string
	ParentSpanID  string
}

// Trace returns the spans Jaeger has of trace id (32 hex digits); none,
// without error, while the trace is unknown.
func (j *Jaeger) Trace(ctx context.Context, id string) ([]JaegerSpan, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.Query+"/api/traces/"+id, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger: GET trace %s: %d %.200s", id, resp.StatusCode, body)
	}
	var r struct {
		Data []struct {
			Spans []struct {
				SpanID        string `json:"spanID"`
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
				References    []struct {
					RefType string `json:"refType"`
					SpanID  string `json:"spanID"`
				} `json:"references"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
				Tags        []struct {
					Key   string `json:"key"`
					Value any    `json:"value"`
				} `json:"tags"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("jaeger: decode trace %s: %w", id, err)
	}
	var out []JaegerSpan
	for _, d := range r.Data {
		for _, s := range d.Spans {
			js := JaegerSpan{SpanID: s.SpanID, OperationName: s.OperationName}
			if p, ok := d.Processes[s.ProcessID]; ok {
				js.Service = p.ServiceName
				for _, tag := range p.Tags {
					if tag.Key == "node.name" {
						js.Service = fmt.Sprint(tag.Value)
					}
				}
			}
			for _, ref := range s.References {
				if ref.RefType == "CHILD_OF" {
					js.ParentSpanID = ref.SpanID
				}
			}
			out = append(out, js)
		}
	}
	return out, nil
}
