package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/config"
	"github.com/p2p-ai-agents/p2p-agent/internal/node"
)

// TestDataDirLock checks in one process that the data dir lock keeps a
// second node out while the first runs (ErrDataDirInUse, nothing created),
// and that Shutdown releases it so the directory can be used again.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	first, _ := startNode(t, map[string]string{"node.data_dir": dir})

	cfg, err := config.Load(config.LoadOptions{Flags: map[string]string{
		"node.data_dir":  dir,
		"p2p.listen":     "/ip4/127.0.0.1/tcp/0",
		"p2p.mdns":       "false",
		"api.listen":     "127.0.0.1:0",
		"metrics.listen": "127.0.0.1:0",
	}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(context.Background(), cfg, "test", nil)
	if !errors.Is(err, node.ErrDataDirInUse) {
		t.Fatalf("New on a locked data dir = %v, %v; want ErrDataDirInUse", n, err)
	}
	if want := "data dir " + dir + " is in use by another node (lock held on " + dir + ")"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	if err := first.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err = node.New(context.Background(), cfg, "test", nil)
	if err != nil {
		t.Fatalf("New after the first node shut down: %v", err)
	}
	if n.PeerID() != first.PeerID() {
		t.Errorf("peer ID %s, want %s", n.PeerID(), first.PeerID())
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestFailedNewRemovesWhatItCreated fails New after the identity and the
// store exist (a p2p listen address that cannot be bound) and checks that
// the data dir it created, parents included, is gone.
func TestFailedNewRemovesWhatItCreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "node")
	cfg, err := config.Load(config.LoadOptions{Flags: map[string]string{
		"node.data_dir":  dir,
		"p2p.listen":     "/ip4/192.0.2.1/tcp/0", // TEST-NET-1: not an address of this host
		"p2p.mdns":       "false",
		"api.listen":     "127.0.0.1:0",
		"metrics.listen": "127.0.0.1:0",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.New(context.Background(), cfg, "test", nil); err == nil {
		t.Fatal("New succeeded listening on 192.0.2.1")
	}
	if _, err := os.Lstat(filepath.Dir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s left behind by the failed New: %v", filepath.Dir(dir), err)
	}
}
