package main_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/node"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// mountTmpfs mounts a tmpfs of the given size on a new directory and
// unmounts it at cleanup: a real small filesystem, as an attacker filling
// the disk would meet it. It needs root; CI runs the tests as root.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (CI runs the tests as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// kvClient talks to one node's /api/v1/kv.
type kvClient struct {
	t    *testing.T
	base string
	http *http.Client
}

func (c *kvClient) do(method, key, consistency string, body []byte) (int, []byte, http.Header) {
	c.t.Helper()
	u := c.base + "/api/v1/kv/" + key
	if consistency != "" {
		u += "?consistency=" + consistency
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, key, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, key, err)
	}
	return resp.StatusCode, b, resp.Header
}

// fillValue is the value of key i: 64 KiB of pseudo-random bytes, distinct
// per key and incompressible, so Pebble's compression does not shrink what
// an attacker writes.
func fillValue(i int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 0x5eed))
	b := make([]byte, 64<<10)
	for j := 0; j < len(b); j += 8 {
		binary.LittleEndian.PutUint64(b[j:], r.Uint64())
	}
	return b
}

// fill PUTs 64 KiB values, alternating Strong and Eventual writes, until
// one is not 2xx; it returns the indexes acknowledged and the refusal.
func fill(c *kvClient, from int) (acked []int, code int, body []byte, hdr http.Header) {
	c.t.Helper()
	for i := from; i < from+2000; i++ {
		cons := "strong"
		if i%2 == 1 {
			cons = "eventual"
		}
		code, body, hdr = c.do(http.MethodPut, fmt.Sprintf("k%05d", i), cons, fillValue(i))
		if code/100 != 2 {
			return acked, code, body, hdr
		}
		acked = append(acked, i)
	}
	c.t.Fatalf("2000 PUTs of 64 KiB accepted on a small tmpfs")
	return nil, 0, nil, nil
}

func putErrors(t *testing.T, metricsURL string) float64 {
	t.Helper()
	f, _ := testenv.Scrape(t, &http.Client{Timeout: 5 * time.Second}, metricsURL)
	return f.Value("storage_operation_errors_total", testenv.L("operation", "put", "backend", "local"))
}

func statfsFree(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

func assert507(t *testing.T, code int, body []byte, hdr http.Header) {
	t.Helper()
	if code != http.StatusInsufficientStorage {
		t.Fatalf("refusal status %d (%s), want 507", code, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("refusal Content-Type %q", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, "insufficient storage") {
		t.Fatalf("refusal body %q: want JSON {\"error\": \"...insufficient storage...\"} (%v)", body, err)
	}
}

// stopWithin sends SIGTERM and returns the exit code and how long the node
// took; it fails the test past the drain timeout plus 5 seconds.
func stopWithin(t *testing.T, n *testenv.Node) (int, time.Duration) {
	t.Helper()
	bound := node.DrainTimeout + 5*time.Second
	start := time.Now()
	n.Signal(syscall.SIGTERM)
	code, err := n.Wait(bound)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("node did not exit within %s after SIGTERM: %v", bound, err)
	}
	return code, took
}

// checkAcked restarts the node on dataDir and checks that every key in
// want answers 200 with its value and every key in gone answers 404.
func checkAcked(t *testing.T, dataDir string, args []string, want, gone []int) *testenv.Node {
	t.Helper()
	n := testenv.StartNode(t, testenv.NodeOptions{DataDir: dataDir, Args: args})
	c := &kvClient{t: t, base: "http://" + n.APIAddr, http: &http.Client{Timeout: 10 * time.Second}}
	for _, i := range want {
		code, body, _ := c.do(http.MethodGet, fmt.Sprintf("k%05d", i), "", nil)
		if code != http.StatusOK || !bytes.Equal(body, fillValue(i)) {
			t.Fatalf("acknowledged key k%05d after restart: %d, %d bytes", i, code, len(body))
		}
	}
	for _, i := range gone {
		if code, _, _ := c.do(http.MethodGet, fmt.Sprintf("k%05d", i), "", nil); code != http.StatusNotFound {
			t.Fatalf("deleted key k%05d after restart: %d, want 404", i, code)
		}
	}
	return n
}

// TestE2EDiskFullReserve runs the built binary with its data dir on a
// 64 MiB tmpfs that also holds an 8 MiB filler file, and a reserve of
// 16 MiB (8 MiB of it a ballast file). PUTs through the API fill it until one is refused: the refusal is
// a 507 JSON error, counted in storage_operation_errors_total, logged once;
// reads go on. Deleting keys makes room again (the store compacts in the
// reserve), as does removing the filler. SIGTERM stops the node within the
// drain bound with exit 0, and a restart on the same dir answers every
// acknowledged key, Eventual writes included.
func TestE2EDiskFullReserve(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary")
	mnt := mountTmpfs(t, "64m")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{0xaa}, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(mnt, "data")
	args := []string{"--storage.local.min_free_bytes=16777216"}
	n := testenv.StartNode(t, testenv.NodeOptions{DataDir: dataDir, Args: args})
	c := &kvClient{t: t, base: "http://" + n.APIAddr, http: &http.Client{Timeout: 10 * time.Second}}
	errsBefore := putErrors(t, n.MetricsURL)

	acked, code, body, hdr := fill(c, 0)
	t.Logf("first fill: %d PUTs of 64 KiB acknowledged (%d KiB) before %d %s", len(acked), len(acked)*64, code, bytes.TrimSpace(body))
	assert507(t, code, body, hdr)
	if len(acked) < 10 {
		t.Fatalf("only %d PUTs before the refusal", len(acked))
	}
	// The reserve is 16 MiB, half of it held in a ballast file: the node
	// refused before Pebble ever met ENOSPC (which would free the ballast).
	free := statfsFree(t, mnt)
	t.Logf("at the refusal: %d bytes free besides the 8 MiB ballast", free)
	if fi, err := os.Stat(filepath.Join(dataDir, "store", "BALLAST")); err != nil || fi.Size() != 8<<20 || n.HasLog("ballast file removed") {
		t.Errorf("ballast at the refusal: %v, %v; want 8 MiB, never removed", fi, err)
	}
	// Four refusals in a row. Pebble's own work (a flush, a compaction
	// whose inputs are then deleted, an obsolete log file) can free space
	// meanwhile, megabytes at a time (seen: 5 MiB written and freed again
	// around the first refusal), so PUTs at the edge may be accepted again
	// for a while: count what happens rather than assume. Every accepted
	// PUT takes 64 KiB for good, and what Pebble can free is bounded by the
	// obsolete files it has, so 300 PUTs (18.75 MiB, more than the whole
	// space above the reserve) must end in refusals.
	refusals, accepted := 1, 0
	for tries, inARow := 0, 0; inARow < 4; tries++ {
		if tries == 300 {
			t.Fatalf("no 4 refusals in a row within 300 PUTs at the reserve (%d accepted)", accepted)
		}
		code, body, hdr = c.do(http.MethodPut, fmt.Sprintf("refused-%d", tries), "eventual", fillValue(0))
		if code/100 == 2 {
			accepted++
			inARow = 0
			continue
		}
		assert507(t, code, body, hdr)
		refusals++
		inARow++
	}
	t.Logf("at the reserve: %d more refusals, %d PUTs accepted again as Pebble freed space", refusals-1, accepted)
	if d := putErrors(t, n.MetricsURL) - errsBefore; d != float64(refusals) {
		t.Errorf("storage_operation_errors_total{operation=put,backend=local} rose by %v, want %d (the refusals)", d, refusals)
	}
	if code, got, _ := c.do(http.MethodGet, "k00000", "", nil); code != http.StatusOK || !bytes.Equal(got, fillValue(0)) {
		t.Fatalf("GET of an earlier key under the reserve: %d, %d bytes", code, len(got))
	}
	refusedLines := 0
	for _, l := range n.Logs() {
		if strings.Contains(l, "write refused") {
			refusedLines++
		}
		if strings.Contains(l, `"status":507`) {
			t.Errorf("507 logged per request: %s", l)
		}
	}
	if refusedLines != 1 {
		t.Errorf("%d 'write refused' log lines for %d refusals, want 1", refusedLines, refusals)
	}

	// Deleting keys makes room: the store flushes and compacts them away.
	var deleted []int
	for _, i := range acked[:len(acked)/2] {
		if code, body, _ := c.do(http.MethodDelete, fmt.Sprintf("k%05d", i), "strong", nil); code/100 != 2 {
			t.Fatalf("DELETE under the reserve: %d %s", code, body)
		}
		deleted = append(deleted, i)
	}
	start := time.Now()
	testenv.Eventually(t, 20*time.Second, func() error {
		if code, body, _ := c.do(http.MethodPut, "after-delete", "strong", fillValue(0)); code/100 != 2 {
			return fmt.Errorf("PUT after deleting %d keys: %d %s", len(deleted), code, body)
		}
		return nil
	})
	t.Logf("writes accepted again %s after deleting %d keys", time.Since(start).Round(time.Millisecond), len(deleted))
	more, code, body, hdr := fill(c, 10000)
	assert507(t, code, body, hdr)
	t.Logf("second fill: %d more PUTs acknowledged", len(more))
	if len(more) == 0 {
		t.Errorf("deleting %d keys of 64 KiB made room for no put", len(deleted))
	}

	// Removing the filler makes room too.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if code, body, _ := c.do(http.MethodPut, "after-filler", "eventual", fillValue(0)); code/100 != 2 {
			return fmt.Errorf("PUT after removing the filler: %d %s", code, body)
		}
		return nil
	})
	last, _, _, _ := fill(c, 20000)
	t.Logf("third fill: %d more PUTs acknowledged", len(last))

	exit, took := stopWithin(t, n)
	t.Logf("SIGTERM: exit %d after %s", exit, took.Round(time.Millisecond))
	if exit != 0 {
		t.Fatalf("exit %d after a clean stop, want 0\n%s", exit, strings.Join(n.Logs(), "\n"))
	}
	keep := append(append(acked[len(acked)/2:], more...), last...)
	n2 := checkAcked(t, dataDir, args, keep, deleted)
	n2.Stop()
}

// TestE2EDiskFullNoReserve disables the reserve, so Pebble itself meets
// ENOSPC on its write-ahead log: the API answers 507 instead of the process
// dying, the node keeps serving reads, later writes are refused the same
// way, SIGTERM stops it within the drain bound with exit 1 (the store did
// not close cleanly), and once there is room again every acknowledged key
// is back.
func TestE2EDiskFullNoReserve(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary")
	mnt := mountTmpfs(t, "24m")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{0xaa}, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(mnt, "data")
	args := []string{"--storage.local.min_free_bytes=0"}
	n := testenv.StartNode(t, testenv.NodeOptions{DataDir: dataDir, Args: args})
	c := &kvClient{t: t, base: "http://" + n.APIAddr, http: &http.Client{Timeout: 10 * time.Second}}
	errsBefore := putErrors(t, n.MetricsURL)

	acked, code, body, hdr := fill(c, 0)
	t.Logf("%d PUTs of 64 KiB acknowledged (%d KiB) before %d %s", len(acked), len(acked)*64, code, bytes.TrimSpace(body))
	assert507(t, code, body, hdr)
	code, body, hdr = c.do(http.MethodPut, "again", "strong", []byte("v"))
	assert507(t, code, body, hdr)
	if d := putErrors(t, n.MetricsURL) - errsBefore; d != 2 {
		t.Errorf("storage_operation_errors_total{operation=put,backend=local} rose by %v, want 2", d)
	}
	if code, got, _ := c.do(http.MethodGet, "k00000", "", nil); code != http.StatusOK || !bytes.Equal(got, fillValue(0)) {
		t.Fatalf("GET after ENOSPC: %d, %d bytes", code, len(got))
	}

	exit, took := stopWithin(t, n)
	t.Logf("SIGTERM: exit %d after %s", exit, took.Round(time.Millisecond))
	if exit != 1 {
		t.Errorf("exit %d, want 1 (the store did not close cleanly)", exit)
	}
	if !n.HasLog("shutdown failed") {
		t.Errorf("no 'shutdown failed' log line")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// Strong writes are synced before they are answered; an Eventual write
	// is answered from the log buffer, so the ones answered after the last
	// synced write can be lost when the log cannot be written (the exit
	// code says so). Every earlier one was synced along with a Strong write.
	lastStrong := -1
	for _, i := range acked {
		if i%2 == 0 {
			lastStrong = i
		}
	}
	var sure []int
	for _, i := range acked {
		if i <= lastStrong {
			sure = append(sure, i)
		}
	}
	t.Logf("%d acknowledged, %d Eventual ones after the last Strong write may be lost", len(acked), len(acked)-len(sure))
	n2 := checkAcked(t, dataDir, args, sure, nil)
	if code, body, _ := (&kvClient{t: t, base: "http://" + n2.APIAddr, http: http.DefaultClient}).do(http.MethodPut, "after-restart", "strong", []byte("v")); code/100 != 2 {
		t.Fatalf("PUT after restart with room: %d %s", code, body)
	}
	n2.Stop()
}

// TestE2EDiskFilledByAnotherProcess: while the node writes, another
// process takes every free byte of its filesystem. Puts get 507 (never a
// crash, even when Pebble's own flushes meet ENOSPC: the ballast is freed
// for them), reads go on, and once the other process's file is removed
// puts are accepted again; SIGTERM exits 0 and a restart answers every
// acknowledged key.
func TestE2EDiskFilledByAnotherProcess(t *testing.T) {
	testenv.SkipIfShort(t, "starts the binary")
	mnt := mountTmpfs(t, "64m")
	dataDir := filepath.Join(mnt, "data")
	args := []string{"--storage.local.min_free_bytes=16777216"}
	n := testenv.StartNode(t, testenv.NodeOptions{DataDir: dataDir, Args: args})
	c := &kvClient{t: t, base: "http://" + n.APIAddr, http: &http.Client{Timeout: 10 * time.Second}}
	var acked []int
	for i := 0; i < 100; i++ {
		if code, body, _ := c.do(http.MethodPut, fmt.Sprintf("k%05d", i), []string{"strong", "eventual"}[i%2], fillValue(i)); code/100 != 2 {
			t.Fatalf("PUT %d before the disk filled: %d %s", i, code, body)
		}
		acked = append(acked, i)
	}
	// Another process takes every free byte.
	filler := filepath.Join(mnt, "other-process")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	_ = f.Close()
	t.Logf("filler holds %d MiB; %d bytes left free", fileSize(t, filler)>>20, statfsFree(t, mnt))

	more, code, body, hdr := fill(c, 1000)
	t.Logf("%d more PUTs acknowledged after the disk filled, then %d", len(more), code)
	assert507(t, code, body, hdr)
	acked = append(acked, more...)
	if code, got, _ := c.do(http.MethodGet, "k00000", "", nil); code != http.StatusOK || !bytes.Equal(got, fillValue(0)) {
		t.Fatalf("GET on a full disk: %d, %d bytes", code, len(got))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if code, body, _ := c.do(http.MethodPut, "k02000", "strong", fillValue(2000)); code/100 != 2 {
			return fmt.Errorf("PUT after the filler went: %d %s", code, body)
		}
		return nil
	})
	acked = append(acked, 2000)
	exit, took := stopWithin(t, n)
	t.Logf("SIGTERM: exit %d after %s (ballast freed: %v)", exit, took.Round(time.Millisecond), n.HasLog("ballast file removed"))
	if exit != 0 {
		t.Fatalf("exit %d, want 0", exit)
	}
	checkAcked(t, dataDir, args, acked, nil).Stop()
}

func fileSize(t *testing.T, name string) int64 {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
