// Package p2ptest holds the helpers the tests of the p2p packages share:
// loopback listen addresses, a quiet logger, fresh identities, a timed
// connect and polling for a condition or for goroutines to drain. It
// imports only the standard library and libp2p's core types, so any test
// may use it (package message's own tests included).
package p2ptest

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Loopback returns the listen addresses of a test node: TCP and QUIC on
// 127.0.0.1, ports picked by the kernel. Each call returns a new slice.
func Loopback() []string {
	return []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
}

// Logger discards everything unless P2P_TEST_LOG is set, in which case it
// writes debug text to stderr.
func Logger() *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// NewKey returns a fresh Ed25519 identity, failing tb if none can be made.
func NewKey(tb testing.TB) crypto.PrivKey {
	tb.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return priv
}

// Connect has connect (a message service's Connect, say) dial ai within
// 10s, failing tb if it cannot.
func Connect(tb testing.TB, connect func(context.Context, peer.AddrInfo) error, ai peer.AddrInfo) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := connect(ctx, ai); err != nil {
		tb.Fatal(err)
	}
}

// Eventually polls cond every 10ms until it holds or d passes, then fails
// tb naming what it waited for.
func Eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitGoroutines waits up to 10s for the goroutine count to return to at
// most limit, then fails tb with every goroutine's stack.
func WaitGoroutines(tb testing.TB, limit int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= limit {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			tb.Fatalf("goroutine leak: %d goroutines, want <= %d\n%s", n, limit, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
