package main_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// chromium runs headless Chromium with args and returns its stdout.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin := testenv.ToolPath(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000"}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return string(out)
}

// TestWebViewInChromium opens /ui/ of alpha, in a mesh of three named
// nodes, in a real headless Chromium: the rendered DOM shows the three
// names and the three edges between them, the panel of the selected node
// (alpha, selected first) shows its peer count, and a screenshot is taken.
func TestWebViewInChromium(t *testing.T) {
	testenv.SkipIfShort(t, "starts three binaries and chromium")
	a, _, _ := threeNamed(t)
	url := "http://" + a.APIAddr + "/ui/"

	dom := chromium(t, "--dump-dom", url)
	for _, name := range []string{"alpha", "bravo", "charlie"} {
		if !strings.Contains(dom, `data-name="`+name+`"`) {
			t.Errorf("DOM has no node %q:\n%.3000s", name, dom)
		}
	}
	if n := len(regexp.MustCompile(`<line [^>]*class="edge `).FindAllString(dom, -1)); n != 3 {
		t.Errorf("DOM has %d edges, want 3 (a full mesh of three):\n%.3000s", n, dom)
	}
	if !strings.Contains(dom, `id="panel-name">alpha<`) || !strings.Contains(dom, `id="panel-peers">2<`) {
		t.Errorf("panel does not show alpha with 2 peers:\n%.3000s", dom)
	}

	shot := filepath.Join(t.TempDir(), "mesh.png")
	chromium(t, "--window-size=1400,900", "--screenshot="+shot, url)
	fi, err := os.Stat(shot)
	if err != nil || fi.Size() < 10_000 {
		t.Fatalf("screenshot %s: %v (%d bytes)", shot, err, fi.Size())
	}
	if dst := os.Getenv("P2P_AGENT_SCREENSHOT"); dst != "" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
