package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestCLITask: task submit (with and without --wait) and task get against a
// running node; task get prints the record exactly as the API sends it.
func TestCLITask(t *testing.T) {
	n := testenv.StartNode(t, testenv.NodeOptions{})
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	text := write("words.txt", "one two three four\n")

	out, errOut, code := n.CLI("task", "submit", "text.chunk", "--input", text, "--wait")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d: %s", code, errOut)
	}
	var res task.ChunkOutput
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Chunks) != 1 || res.Chunks[0].Text != "one two three four" || res.Chunks[0].Tokens != 4 {
		t.Fatalf("submit --wait printed %q (%v)", out, err)
	}
	if !regexp.MustCompile(`^(trace [0-9a-f]{32}\n)?task [0-9a-f]{32}: queued after .*\n(task [0-9a-f]{32}: running after .*\n)?task [0-9a-f]{32}: succeeded after .*\n$`).MatchString(errOut) {
		t.Fatalf("progress on stderr = %q", errOut)
	}

	out, errOut, code = n.CLI("task", "submit", "text.chunk", "--input", text)
	id := strings.TrimSpace(out)
	// stdout is the id alone; stderr is empty, or names the trace when the
	// submission was sampled (tracing.sample_ratio, 1 % by default).
	if code != 0 || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) || !regexp.MustCompile(`^(trace [0-9a-f]{32}\n)?$`).MatchString(errOut) {
		t.Fatalf("submit: exit %d, stdout %q, stderr %q; want the id alone", code, out, errOut)
	}
	var raw []byte
	testenv.Eventually(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + n.APIAddr + "/api/v1/tasks/" + id)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if raw, err = io.ReadAll(resp.Body); err != nil {
			return err
		}
		if !strings.Contains(string(raw), `"state": "succeeded"`) {
			return fmt.Errorf("task %s: %d %s", id, resp.StatusCode, raw)
		}
		return nil
	})
	out, errOut, code = n.CLI("task", "get", id)
	if code != 0 || out != string(raw) {
		t.Fatalf("task get: exit %d, stderr %q\n%s\nwant the API's answer\n%s", code, errOut, out, raw)
	}

	bad := write("bad.json", `{"text":"a b","size":2,"overlap":2}`)
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"unknown type", []string{"task", "submit", "rm.rf", "--input", bad}, 2, "unknown task type"},
		{"input refused by the executor", []string{"task", "submit", "text.chunk", "--input", bad, "--wait"}, 1, "failed"},
		{"unknown task", []string{"task", "get", strings.Repeat("0", 32)}, 1, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := n.CLI(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.contains) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.contains)
			}
		})
	}
}
