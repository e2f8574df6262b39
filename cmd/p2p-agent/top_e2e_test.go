package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// tmux runs a tmux command on the test's own server (socket -L name).
func tmux(t *testing.T, socket string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", socket}, args...)...).CombinedOutput()
	return string(out), err
}

// TestTopInATerminal runs `p2p-agent top` in a real pseudo-terminal (tmux,
// 100x30) against one node of a 2-node mesh: it shows the peer count,
// updates the message rate after pings, and leaves on q with the
// terminal's alternate screen off and exit status 0. Without a terminal it
// prints one report and exits.
func TestTopInATerminal(t *testing.T) {
	testenv.SkipIfShort(t, "starts two binaries and tmux")
	testenv.ToolPath(t, "tmux")
	a := testenv.StartNode(t, testenv.NodeOptions{Args: []string{"--node.name=alpha"}})
	b := testenv.StartNode(t, testenv.NodeOptions{Args: []string{"--node.name=bravo", "--p2p.bootstrap=" + a.FullAddr()}})
	poll(t, 20*time.Second, 20*time.Millisecond, func() error {
		if gauge(t, a, "agent_peers_connected") != 1 {
			return fmt.Errorf("alpha not connected yet")
		}
		return nil
	})

	// Not a terminal: one plain report.
	out, errOut, code := a.CLI("top", "--interval", "200ms")
	if code != 0 || !strings.Contains(out, "peers          1") || !strings.Contains(out, "alpha") || strings.Contains(out, "\x1b[") {
		t.Fatalf("top without a terminal: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	socket := fmt.Sprintf("p2p-agent-test-%d", time.Now().UnixNano())
	t.Cleanup(func() { _, _ = tmux(t, socket, "kill-server") })
	// The exit status goes to a file: tmux does not always report the
	// status of a dead pane.
	exitFile := filepath.Join(t.TempDir(), "exit")
	cmdline := fmt.Sprintf("%s top --interval 300ms --api %s; echo $? > %s", testenv.Binary(t), a.APIAddr, exitFile)
	if out, err := tmux(t, socket, "new-session", "-d", "-x", "100", "-y", "30", "-s", "top", cmdline); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	if out, err := tmux(t, socket, "set-option", "-t", "top", "remain-on-exit", "on"); err != nil {
		t.Fatalf("tmux set-option: %v: %s", err, out)
	}
	screen := func() string {
		s, _ := tmux(t, socket, "capture-pane", "-p", "-t", "top")
		return s
	}
	poll(t, 10*time.Second, 50*time.Millisecond, func() error {
		if s := screen(); !strings.Contains(s, "peers          1") || !strings.Contains(s, "refresh 300ms") {
			return fmt.Errorf("screen:\n%s", s)
		}
		return nil
	})
	if s, _ := tmux(t, socket, "display-message", "-p", "-t", "top", "#{alternate_on}"); strings.TrimSpace(s) != "1" {
		t.Fatalf("top is not on the alternate screen: %q", s)
	}

	// Pings from bravo: alpha's message rate and p99 move.
	if _, errOut, code := b.CLI("ping", a.PeerID, "--count", "30"); code != 0 {
		t.Fatalf("ping: exit %d: %s", code, errOut)
	}
	inRate := regexp.MustCompile(`messages/s\s+in ([0-9.]+)`)
	poll(t, 10*time.Second, 50*time.Millisecond, func() error {
		s := screen()
		m := inRate.FindStringSubmatch(s)
		if m == nil {
			return fmt.Errorf("no message rate on screen:\n%s", s)
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v <= 0 || !strings.Contains(s, "handled)") {
			return fmt.Errorf("message rate %s, no p99 yet:\n%s", m[1], s)
		}
		return nil
	})

	if out, err := tmux(t, socket, "send-keys", "-t", "top", "q"); err != nil {
		t.Fatalf("send-keys: %v: %s", err, out)
	}
	poll(t, 5*time.Second, 50*time.Millisecond, func() error {
		s, _ := tmux(t, socket, "display-message", "-p", "-t", "top", "#{pane_dead} #{alternate_on}")
		code, _ := os.ReadFile(exitFile)
		if strings.TrimSpace(s) != "1 0" || strings.TrimSpace(string(code)) != "0" {
			return fmt.Errorf("pane dead/alternate = %q, exit status %q", s, code)
		}
		return nil
	})
}
