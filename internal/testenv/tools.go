package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// ToolPath returns the path of an external tool the tests run (redis-server,
// redis-cli, prometheus, promtool), or ends the test: with t.Fatal under CI
// (env CI set), where a missing tool is a broken machine, else with t.Skip.
// `make test` installs them (scripts/test-deps.sh).
func ToolPath(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found in PATH (run scripts/test-deps.sh, or apt-get install redis-server redis-tools prometheus): %v", name, err)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// SkipIfShort skips a test that starts real services or processes when the
// suite runs with -short, for a quick local loop. Under CI (env CI set) such
// a test must run: -short there is a mistake and fails the test instead.
func SkipIfShort(t testing.TB, what string) {
	t.Helper()
	if !testing.Short() {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("-short under CI would skip a test that %s", what)
	}
	t.Skip("-short: this test " + what)
}
