package node_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/api"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// TestAPIListIsPaged walks a prefix through the control API in pages: every
// key is seen once, in order, each page is one counted list operation, and a
// bad limit is a 400 that stores and lists nothing.
func TestAPIListIsPaged(t *testing.T) {
	n, _ := startNode(t, nil)
	ctx := context.Background()
	c := client(n)
	const keys, limit = 23, 5
	for i := range keys {
		if err := c.Put(ctx, fmt.Sprintf("p/%03d", i), []byte("v"), "eventual"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Put(ctx, "q/other", []byte("v"), ""); err != nil {
		t.Fatal(err)
	}
	before, _ := testenv.Scrape(t, nil, n.MetricsURL())
	var seen []string
	after, pages := "", 0
	for {
		p, err := c.ListPage(ctx, "p/", after, limit, "")
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if p.Count != len(p.Items) || p.Count > limit {
			t.Fatalf("page %d: count %d, %d items, limit %d", pages, p.Count, len(p.Items), limit)
		}
		for _, it := range p.Items {
			seen = append(seen, it.Key)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if len(seen) != keys {
		t.Fatalf("saw %d keys, want %d: %v", len(seen), keys, seen)
	}
	for i, k := range seen {
		if want := fmt.Sprintf("p/%03d", i); k != want {
			t.Fatalf("key %d = %q, want %q", i, k, want)
		}
	}
	if want := (keys + limit - 1) / limit; pages != want {
		t.Fatalf("%d pages, want %d", pages, want)
	}
	// the client's List follows the same pages
	total := 0
	if err := c.List(ctx, "p/", "", func(p api.KVList) error { total += p.Count; return nil }); err != nil || total != keys {
		t.Fatalf("List saw %d keys, %v; want %d", total, err, keys)
	}
	for _, bad := range []int{10001, 1 << 20} {
		_, err := c.ListPage(ctx, "p/", "", bad, "")
		if ae, ok := err.(*api.Error); !ok || ae.StatusCode != 400 {
			t.Fatalf("limit %d: %v, want 400", bad, err)
		}
	}
	afterScrape, _ := testenv.Scrape(t, nil, n.MetricsURL())
	l := testenv.L("operation", "list", "backend", "local")
	got := afterScrape.Value("storage_operations_total", l) - before.Value("storage_operations_total", l)
	// pages of the walk, then the default-sized page of List
	if want := float64(pages + 1); got != want {
		t.Fatalf("list operations delta = %v, want %v", got, want)
	}
}
