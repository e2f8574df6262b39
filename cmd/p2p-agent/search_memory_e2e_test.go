package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// peakRSS reads VmHWM (the peak resident set since the last reset) of pid.
func peakRSS(t *testing.T, pid int) int64 { return procStatusBytes(t, pid, "VmHWM:") }

// runTask submits a local task through the control API and polls it to a
// final state.
func runTask(t *testing.T, api string, typ string, input any) task.Record {
	t.Helper()
	in, _ := json.Marshal(input)
	body, _ := json.Marshal(map[string]any{"type": typ, "input": json.RawMessage(in)})
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Post("http://"+api+"/api/v1/tasks", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var rec task.Record
	err = json.NewDecoder(resp.Body).Decode(&rec)
	resp.Body.Close()
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("submit %s: %d %v", typ, resp.StatusCode, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !rec.State.Final() {
		if time.Now().After(deadline) {
			t.Fatalf("task %s not final after 2 min: %+v", rec.ID, rec)
		}
		time.Sleep(20 * time.Millisecond)
		resp, err := c.Get("http://" + api + "/api/v1/tasks/" + rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&rec)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

// TestSearchMemoryBounded indexes 100,000 chunks into one collection of the
// built binary, then runs 8 index.search tasks at once over it. The node's
// own peak RSS (VmHWM, reset before the searches) must rise by at most
// 64 MiB above its resident set before them: search reads the collection a
// page at a time and at most task.max_concurrent_searches scans run at
// once, whatever the number of requests.
func TestSearchMemoryBounded(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t, "indexes 100k chunks in the binary")
	n := testenv.StartNode(t, testenv.NodeOptions{})
	pid := n.PID()

	// 512 KiB documents of random words (task inputs are bounded by the
	// message size): about 1,700 chunks of 256 tokens
	// with the default overlap each.
	rng := rand.New(rand.NewPCG(1, 2))
	words := make([]string, 20000)
	for i := range words {
		words[i] = "w" + strconv.Itoa(i)
	}
	total := 0
	for doc := 0; total < 100_000; doc++ {
		var b strings.Builder
		for b.Len() < 512<<10 {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(' ')
		}
		text := b.String()
		rec := runTask(t, n.APIAddr, task.TypeAdd, task.AddInput{Collection: "big", ID: fmt.Sprintf("doc%03d", doc), Text: &text})
		if rec.State != task.StateSucceeded {
			t.Fatalf("index.add doc%03d: %+v", doc, rec)
		}
		var out task.AddOutput
		if err := json.Unmarshal(rec.Result, &out); err != nil {
			t.Fatal(err)
		}
		total += out.Chunks
	}

	// Settle: one search warms the caches and the heap to their working
	// size; then measure from the resident set that is left.
	k := 10
	runTask(t, n.APIAddr, task.TypeSearch, task.SearchInput{Collection: "big", Query: "w1 w2 w3", K: &k})
	time.Sleep(2 * time.Second)
	base := rssBytes(t, pid)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS of the node (%v)", err)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 8 {
		wg.Go(func() {
			q := fmt.Sprintf("w%d w%d w%d", i, i*7, i*13)
			rec := runTask(t, n.APIAddr, task.TypeSearch, task.SearchInput{Collection: "big", Query: q, K: &k})
			if rec.State != task.StateSucceeded {
				t.Errorf("search %d: %+v", i, rec)
				return
			}
			var out task.SearchOutput
			if err := json.Unmarshal(rec.Result, &out); err != nil || len(out.Results) != k {
				t.Errorf("search %d: %d results, %v; want %d", i, len(out.Results), err, k)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	peak := peakRSS(t, pid)
	t.Logf("%d chunks; RSS before searches %d MiB, peak during 8 concurrent searches %d MiB (+%d MiB); 8 searches took %v",
		total, base>>20, peak>>20, (peak-base)>>20, elapsed.Round(time.Millisecond))
	if peak-base > 64<<20 {
		t.Fatalf("8 concurrent searches over %d chunks raised peak RSS by %d MiB, want at most 64 MiB", total, (peak-base)>>20)
	}
}
