package main_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestStartFailuresDoNotPanic starts the built binary in conditions where
// node.New fails after it has begun building the node: the clean-up must
// close what was opened and the process must exit 1 with the cause, never
// a nil-pointer panic.
func TestStartFailuresDoNotPanic(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr)

	keyDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(keyDir, "identity.key"), 0o700); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		dataDir  string
		p2p      string
		contains string
	}{
		{"p2p port in use", t.TempDir(), "/ip4/127.0.0.1/tcp/" + itoa(taken.Port), "127.0.0.1:" + itoa(taken.Port)},
		{"identity key is a directory", keyDir, "/ip4/127.0.0.1/tcp/0", filepath.Join(keyDir, "identity.key")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := testenv.RunCLI(t, "start", "--data-dir", tc.dataDir,
				"--p2p.listen", tc.p2p, "--p2p.mdns", "false",
				"--api.listen", "127.0.0.1:0", "--metrics.listen", "127.0.0.1:0")
			if code != 1 {
				t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
				t.Errorf("stderr shows a panic:\n%s", stderr)
			}
			if !strings.Contains(stderr, tc.contains) {
				t.Errorf("stderr does not name %q:\n%s", tc.contains, stderr)
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
