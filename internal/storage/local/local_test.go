package local_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/local"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage/storagetest"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

func openTemp(t testing.TB) *local.Store {
	t.Helper()
	s, err := local.Open(filepath.Join(t.TempDir(), "store"), local.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store { return openTemp(t) })
}

func TestPrefixUpperBound(t *testing.T) {
	tests := []struct {
		in, want []byte
	}{
		{nil, nil},
		{[]byte{}, nil},
		{[]byte("a"), []byte("b")},
		{[]byte("ab"), []byte("ac")},
		{[]byte{'a', 0xff}, []byte("b")},
		{[]byte{'a', 0xfe, 0xff, 0xff}, []byte{'a', 0xff}},
		{[]byte{0xff, 0xff}, nil},
		{[]byte{0x00}, []byte{0x01}},
	}
	for _, tc := range tests {
		in := append([]byte(nil), tc.in...)
		got := local.PrefixUpperBound(in)
		if !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("PrefixUpperBound(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !bytes.Equal(in, tc.in) {
			t.Errorf("PrefixUpperBound modified its input: %q -> %q", tc.in, in)
		}
	}
}

// TestListHighBytes covers prefixes whose upper bound needs a carry, which
// only valid UTF-8 with high continuation bytes can reach through the
// validating decorator.
func TestListHighBytes(t *testing.T) {
	s := storage.Validate(openTemp(t), 0)
	ctx := context.Background()
	keys := []string{"\U0010FFFF", "\U0010FFFFa", "\U0010FFFF\U0010FFFF", "\U0010FFFE", "\U00100000"}
	for _, k := range keys {
		if err := s.Put(ctx, k, []byte(k), storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.List(ctx, "\U0010FFFF", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"\U0010FFFF", "\U0010FFFFa", "\U0010FFFF\U0010FFFF"}
	if len(got) != len(want) {
		t.Fatalf("List returned %d keys, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Key != want[i] || string(got[i].Value) != want[i] {
			t.Fatalf("List[%d] = %q, want %q", i, got[i].Key, want[i])
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if err := s.Put(ctx, fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i)), storage.Consistency(i%4)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "k050", storage.Strong); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kvs, err := s.List(ctx, "k", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 99 {
		t.Fatalf("after reopen: %d keys, want 99", len(kvs))
	}
	if _, err := s.Get(ctx, "k050", storage.Strong); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleted key after reopen: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := local.Open("", local.Options{}); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
	// A regular file where the directory should be.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.Open(f, local.Options{}); err == nil {
		t.Fatal("Open on a regular file succeeded")
	}
	// The same directory cannot be opened twice (Pebble's lock file).
	dir := filepath.Join(t.TempDir(), "store")
	s, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := local.Open(dir, local.Options{}); err == nil {
		s2.Close()
		t.Fatal("second Open of a locked store succeeded")
	}
}

// TestCloseWaitsForInFlight races Close against goroutines doing every
// operation: each operation either succeeds or returns ErrClosed, none
// panics, and every operation after Close returns ErrClosed.
func TestCloseWaitsForInFlight(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				key := fmt.Sprintf("g%d/%d", g, i)
				var err error
				switch i % 4 {
				case 0:
					err = s.Put(ctx, key, []byte("v"), storage.Consistency(g%4))
				case 1:
					_, err = s.Get(ctx, key, storage.Strong)
					if errors.Is(err, storage.ErrNotFound) {
						err = nil
					}
				case 2:
					err = s.Delete(ctx, key, storage.Eventual)
				case 3:
					_, err = s.List(ctx, fmt.Sprintf("g%d/", g), storage.Strong)
				}
				if errors.Is(err, storage.ErrClosed) {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d op %d: %w", g, i, err)
					return
				}
			}
		}(g)
	}
	// Let the workers make progress, as observed through the store.
	deadline := time.Now().Add(10 * time.Second)
	for {
		kvs, err := s.List(ctx, "g0/", storage.Strong)
		if err != nil {
			t.Fatal(err)
		}
		if len(kvs) >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("workers made no progress")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := s.Put(ctx, "after", []byte("v"), storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
	if _, err := s.Get(ctx, "g0/0", storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	s := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, "k", []byte("v"), storage.Strong); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled ctx: %v", err)
	}
	if _, err := s.Get(ctx, "k", storage.Strong); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with cancelled ctx: %v", err)
	}
	if _, err := s.List(ctx, "", storage.Strong); !errors.Is(err, context.Canceled) {
		t.Fatalf("List with cancelled ctx: %v", err)
	}
	if _, err := s.Get(context.Background(), "k", storage.Strong); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("cancelled Put was applied: %v", err)
	}
}

const (
	crashEnvDir = "P2P_AGENT_CRASH_CHILD_DIR"
	crashAcked  = 200
)

// crashValue is the value the child writes under key i; the parent checks it.
func crashValue(i int) []byte {
	return []byte(fmt.Sprintf("value-%06d-%s", i, strings.Repeat("x", i%97)))
}

// TestCrashChild is the child half of TestCrashSafety: it does nothing
// unless started by it. It writes Strong values forever and prints each
// key once Put has returned.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("child of TestCrashSafety only")
	}
	s, err := local.Open(dir, local.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	w := bufio.NewWriter(os.Stdout)
	ctx := context.Background()
	for i := 0; ; i++ {
		key := fmt.Sprintf("crash/%06d", i)
		if err := s.Put(ctx, key, crashValue(i), storage.Strong); err != nil {
			fmt.Fprintln(os.Stderr, "child put:", err)
			os.Exit(4)
		}
		// Acknowledge only after the synced Put returned.
		fmt.Fprintln(w, key)
		if err := w.Flush(); err != nil {
			os.Exit(5)
		}
	}
}

// TestCrashSafety kills a writer process with SIGKILL mid-stream and checks
// that every Strong write it acknowledged survived.
func TestCrashSafety(t *testing.T) {
	testenv.SkipIfShort(t, "spawns a child process")
	dir := filepath.Join(t.TempDir(), "store")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "crash/") {
			continue
		}
		acked = append(acked, line)
		if len(acked) == crashAcked {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill child: %v", err)
			}
			break
		}
	}
	// Keys printed between the last read and the kill were acknowledged
	// too: read whatever the pipe still holds.
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "crash/") {
			acked = append(acked, line)
		}
	}
	werr := cmd.Wait()
	if len(acked) < crashAcked {
		t.Fatalf("child acknowledged only %d keys (wait: %v); stderr:\n%s", len(acked), werr, stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v; stderr:\n%s", werr, stderr.String())
	}

	s, err := local.Open(dir, local.Options{})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer s.Close()
	for i, key := range acked {
		want := crashValue(i)
		if key != fmt.Sprintf("crash/%06d", i) {
			t.Fatalf("acknowledgement %d is %q", i, key)
		}
		got, err := s.Get(context.Background(), key, storage.Strong)
		if err != nil {
			t.Fatalf("acknowledged key %s lost after SIGKILL: %v", key, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("acknowledged key %s = %q, want %q", key, got, want)
		}
	}
	t.Logf("%d acknowledged Strong writes all present after SIGKILL", len(acked))
}
