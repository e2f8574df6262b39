package main_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// startFailure is one way `p2p-agent start` must fail.
type startFailure struct {
	name string
	// setup prepares the files under root and returns the data dir and the
	// arguments after "start" that replace the defaults (same flag names).
	setup func(t *testing.T, root string) (dataDir string, args map[string]string)
	code  int
	// want are substrings of the one error line (%D is the data dir).
	want []string
}

// TestStartFailures starts the built binary in every condition it cannot
// start in and checks the contract: the exact exit code, exactly one
// non-log line on stderr that names the cause and the path or address, no
// panic, and the files under the test's root exactly as they were before
// the start (no new identity, no empty store, an existing key byte- and
// mode-identical).
func TestStartFailures(t *testing.T) {
	taken := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().String()
	}
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	withKey := func(t *testing.T, root string) string {
		dir := filepath.Join(root, "node")
		if _, stderr, code := testenv.RunCLI(t, "id", "--data-dir", dir); code != 0 {
			t.Fatalf("id: exit %d: %s", code, stderr)
		}
		return dir
	}

	cases := []startFailure{
		{
			name: "p2p port in use, fresh data dir",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				a := taken(t)
				t.Setenv("TAKEN", a)
				return filepath.Join(root, "node"), map[string]string{"p2p.listen": "/ip4/127.0.0.1/tcp/" + port(a)}
			},
			code: 1, want: []string{"starting p2p host", "$TAKEN", "address already in use"},
		},
		{
			name: "api port in use, existing identity",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				a := taken(t)
				t.Setenv("TAKEN", a)
				return withKey(t, root), map[string]string{"api.listen": a}
			},
			code: 1, want: []string{"api listener $TAKEN", "address already in use"},
		},
		{
			name: "metrics port in use, fresh data dir",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				a := taken(t)
				t.Setenv("TAKEN", a)
				return filepath.Join(root, "node"), map[string]string{"metrics.listen": a}
			},
			code: 1, want: []string{"metrics listener $TAKEN", "address already in use"},
		},
		{
			name: "identity key is garbage",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				dir := filepath.Join(root, "node")
				writeFile(t, filepath.Join(dir, "identity.key"), []byte("this is not a key\x00\xff"), 0o600)
				return dir, nil
			},
			code: 1, want: []string{"corrupt identity key: %D/identity.key", "the file is left as it is"},
		},
		{
			name: "identity key readable by others",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				dir := withKey(t, root)
				if err := os.Chmod(filepath.Join(dir, "identity.key"), 0o644); err != nil {
					t.Fatal(err)
				}
				return dir, nil
			},
			code: 2, want: []string{"%D/identity.key is readable by group and others (mode 0644)", "chmod 600 %D/identity.key"},
		},
		{
			name: "identity key is a directory",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				dir := filepath.Join(root, "node")
				if err := os.MkdirAll(filepath.Join(dir, "identity.key"), 0o700); err != nil {
					t.Fatal(err)
				}
				return dir, nil
			},
			code: 1, want: []string{"%D/identity.key is not a regular file"},
		},
		{
			name: "read-only data dir",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				dir := filepath.Join(root, "node")
				readOnlyDir(t, dir)
				return dir, nil
			},
			code: 1, want: []string{"identity: creating %D/identity.key"},
		},
		{
			name: "read-only data dir with an identity",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				dir := filepath.Join(root, "node")
				readOnlyDir(t, dir, func() {
					if _, stderr, code := testenv.RunCLI(t, "id", "--data-dir", dir); code != 0 {
						t.Fatalf("id: exit %d: %s", code, stderr)
					}
				})
				return dir, nil
			},
			code: 1, want: []string{"opening local storage at %D/store"},
		},
		{
			name: "data dir under a regular file",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				writeFile(t, filepath.Join(root, "file"), []byte("x"), 0o600)
				return filepath.Join(root, "file", "sub"), nil
			},
			code: 1, want: []string{"data dir %D: ", "not a directory"},
		},
		{
			name: "store path under a regular file",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				writeFile(t, filepath.Join(root, "file"), []byte("x"), 0o600)
				t.Setenv("STORE", filepath.Join(root, "file", "store"))
				return withKey(t, root), map[string]string{"storage.local.path": filepath.Join(root, "file", "store")}
			},
			code: 1, want: []string{"opening local storage at $STORE: ", "not a directory"},
		},
		{
			name: "redis unreachable, fresh data dir",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				a := ln.Addr().String()
				ln.Close() // nothing listens there now
				t.Setenv("REDIS", a)
				return filepath.Join(root, "node"), map[string]string{
					"storage.backend": "redis", "storage.redis.addrs": a, "storage.redis.retry_backoff": "1ms"}
			},
			code: 1, want: []string{"opening redis storage: backend unavailable: redis ping $REDIS failed", "connection refused"},
		},
		{
			name: "unknown key in the config file",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				f := filepath.Join(root, "bad.yaml")
				writeFile(t, f, []byte("node:\n  bogus: 1\n"), 0o600)
				t.Setenv("CONFIG", f)
				return filepath.Join(root, "node"), map[string]string{"config": f}
			},
			code: 2, want: []string{"invalid configuration: node.bogus (file $CONFIG line 2): unknown key"},
		},
		{
			name: "invalid value in the config file",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				f := filepath.Join(root, "bad.yaml")
				writeFile(t, f, []byte("p2p:\n  max_message_bytes: -5\n"), 0o600)
				t.Setenv("CONFIG", f)
				return withKey(t, root), map[string]string{"config": f}
			},
			code: 2, want: []string{`invalid configuration: p2p.max_message_bytes = "-5" (file $CONFIG line 2): must be between`},
		},
		{
			name: "invalid value in a flag",
			setup: func(t *testing.T, root string) (string, map[string]string) {
				return filepath.Join(root, "node"), map[string]string{"p2p.mdns": "maybe"}
			},
			code: 2, want: []string{`invalid configuration: p2p.mdns = "maybe" (flag --p2p.mdns): not a boolean`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dataDir, over := tc.setup(t, root)
			before := snapshot(t, root)
			stderr, code := startOnce(t, dataDir, over)
			checkFailure(t, stderr, code, tc.code, expand(tc.want, dataDir))
			if after := snapshot(t, root); after != before {
				t.Errorf("files changed by the failed start:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// TestStartSecondNodeOnSameDataDir starts a node, then a second one on the
// same data dir: the second must stop at the lock with one clear line,
// leaving the first's identity as it was and the first running.
func TestStartSecondNodeOnSameDataDir(t *testing.T) {
	first := testenv.StartNode(t, testenv.NodeOptions{})
	keyPath := filepath.Join(first.DataDir, "identity.key")
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !first.HasLog(`"msg":"created node identity"`) {
		t.Errorf("the first start of a fresh data dir did not log the new identity")
	}

	stderr, code := startOnce(t, first.DataDir, nil)
	checkFailure(t, stderr, code, 1, []string{
		fmt.Sprintf("data dir %s is in use by another node (lock held on %s)", first.DataDir, first.DataDir)})

	after, err := os.ReadFile(keyPath)
	if err != nil || string(after) != string(key) {
		t.Errorf("identity key changed: err %v", err)
	}
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("identity key mode: %v %v", st.Mode(), err)
	}
	resp, err := http.Get(first.MetricsBase() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("first node /readyz = %d after the second start, want 200", resp.StatusCode)
	}
	first.Stop()

	// The lock goes with the first node: a new start on the directory runs,
	// with the same identity and without creating another.
	again := testenv.StartNode(t, testenv.NodeOptions{DataDir: first.DataDir})
	if again.PeerID != first.PeerID {
		t.Errorf("peer ID %s after restart, want %s", again.PeerID, first.PeerID)
	}
	if again.HasLog(`"msg":"created node identity"`) {
		t.Errorf("restart logged a new identity")
	}
	again.Stop()
}

// startOnce runs `p2p-agent start` on free loopback ports with JSON logs;
// over replaces or adds flags.
func startOnce(t *testing.T, dataDir string, over map[string]string) (stderr string, code int) {
	t.Helper()
	flags := map[string]string{
		"data-dir":       dataDir,
		"log.format":     "json",
		"p2p.listen":     "/ip4/127.0.0.1/tcp/0",
		"p2p.mdns":       "false",
		"api.listen":     "127.0.0.1:0",
		"metrics.listen": "127.0.0.1:0",
	}
	for k, v := range over {
		flags[k] = v
	}
	args := []string{"start"}
	for k, v := range flags {
		args = append(args, "--"+k+"="+v)
	}
	_, stderr, code = testenv.RunCLI(t, args...)
	return stderr, code
}

// checkFailure asserts the exit code, that stderr holds exactly one line
// that is not a JSON log record, that it contains every want, and that
// nothing panicked or announced an identity the failure then removed.
func checkFailure(t *testing.T, stderr string, code, wantCode int, want []string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit code %d, want %d", code, wantCode)
	}
	var plain []string
	for _, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] != nil {
			if rec["msg"] == "created node identity" {
				t.Errorf("a failed start logged a new identity: %s", line)
			}
			continue
		}
		plain = append(plain, line)
	}
	if len(plain) != 1 || !strings.HasPrefix(plain[0], "p2p-agent: ") {
		t.Fatalf("want exactly one error line on stderr, got %d:\n%s", len(plain), stderr)
	}
	for _, w := range want {
		if !strings.Contains(plain[0], w) {
			t.Errorf("error line does not say %q:\n%s", w, plain[0])
		}
	}
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine") {
		t.Errorf("stderr shows a panic:\n%s", stderr)
	}
}

// expand replaces %D with the data dir and $VAR with the test's setenv values.
func expand(want []string, dataDir string) []string {
	out := make([]string, len(want))
	for i, w := range want {
		out[i] = os.ExpandEnv(strings.ReplaceAll(w, "%D", dataDir))
	}
	return out
}

// snapshot describes every entry under root: path, type and mode, and the
// contents of files.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "%s %s", rel, info.Mode())
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", data)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func writeFile(t *testing.T, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// readOnlyDir makes dir a directory nobody can write, after fill has put
// files in it. chmod does not stop root, so as root dir is a tmpfs mounted
// read-only (the test is skipped where mounting is not allowed).
func readOnlyDir(t *testing.T, dir string, fill ...func()) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		for _, f := range fill {
			f()
		}
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		return
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("running as root and cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	for _, f := range fill {
		f()
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remounting %s read-only: %v %s", dir, err, out)
	}
}
