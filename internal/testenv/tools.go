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
