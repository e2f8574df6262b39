package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// walk reads every page of prefix from after with limit and checks the
// page contract on the way: at most limit entries, keys with the prefix,
// strictly ascending and above the cursor. It returns the concatenated
// entries and the number of pages read.
func walk(t *testing.T, ctx context.Context, s storage.Store, prefix, after string, limit int, c storage.Consistency) ([]storage.KV, int) {
	t.Helper()
	var all []storage.KV
	pages := 0
	for {
		kvs, next, err := s.ListPage(ctx, prefix, after, limit, c)
		if err != nil {
			t.Fatalf("ListPage(%q, after %q, limit %d, %v): %v", prefix, after, limit, c, err)
		}
		pages++
		if len(kvs) > limit {
			t.Fatalf("ListPage(%q, after %q, limit %d) returned %d entries", prefix, after, limit, len(kvs))
		}
		prev := after
		for _, kv := range kvs {
			if !strings.HasPrefix(kv.Key, prefix) || kv.Key <= prev {
				t.Fatalf("ListPage(%q, after %q, limit %d): key %q out of order or outside the prefix (previous %q)", prefix, after, limit, kv.Key, prev)
			}
			prev = kv.Key
		}
		all = append(all, kvs...)
		if next == "" {
			return all, pages
		}
		if len(kvs) > 0 && next != kvs[len(kvs)-1].Key {
			t.Fatalf("ListPage(%q, after %q, limit %d): next = %q, want the last key %q", prefix, after, limit, next, kvs[len(kvs)-1].Key)
		}
		if next <= after || pages > 100000 {
			t.Fatalf("ListPage(%q, after %q, limit %d): next %q does not advance", prefix, after, limit, next)
		}
		after = next
	}
}

func sameKVs(t *testing.T, what string, got, want []storage.KV) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries %q, want %d %q", what, len(got), keys(got), len(want), keys(want))
	}
	for i := range want {
		if got[i].Key != want[i].Key || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("%s: [%d] = %q=%s, want %q=%s", what, i, got[i].Key, short(got[i].Value), want[i].Key, short(want[i].Value))
		}
	}
}

// pageKeys are the keys of the paging cases: prefixes that are keys
// themselves, neighbours just outside a prefix, glob characters, multi-byte
// runes and the highest code point.
var pageKeys = []string{
	"p", "p/", "p/a", "p/a/1", "p/a/2", "p/a/10", "p/b", "p/b/1", "p/c*", "p/c[1]", "p/c?",
	"p0", "p\x7f", "p\u00e9", "p/\U0001F600", "o", "o/1", "q", "q/1", "\u00ff", "\U0010FFFF",
}

// putKeys stores each of keys, the i-th with the value "v<i>:<key>" at the
// i-th consistency level in turn, and returns what listing a prefix of
// them must give: their entries with that prefix, by key.
func putKeys(t *testing.T, ctx context.Context, s storage.Store, keys []string) func(prefix string) []storage.KV {
	t.Helper()
	for i, k := range keys {
		mustPut(t, ctx, s, k, []byte(fmt.Sprintf("v%d:%s", i, k)), levels[i%len(levels)])
	}
	return func(prefix string) []storage.KV {
		var out []storage.KV
		for i, k := range keys {
			if strings.HasPrefix(k, prefix) {
				out = append(out, storage.KV{Key: k, Value: []byte(fmt.Sprintf("v%d:%s", i, k))})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
		return out
	}
}

// testListPageLimits: for every prefix and limits 1, 2, exact and bigger,
// the pages cover every key exactly once, in order, in exactly
// ceil(n/limit) pages (one empty page for no key), and agree with List and
// Each.
func testListPageLimits(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	expect := putKeys(t, ctx, s, pageKeys)
	for _, prefix := range []string{"", "p", "p/", "p/a", "p/a/", "p/c", "p/c[", "o/", "q", "none/", "\u00ff", "\U0010FFFF"} {
		want := expect(prefix)
		n := len(want)
		for _, limit := range []int{1, 2, 3, max(n, 1), n + 1, n + 50, storage.MaxPageLimit} {
			c := levels[limit%len(levels)]
			got, pages := walk(t, ctx, s, prefix, "", limit, c)
			what := fmt.Sprintf("pages of %q by %d", prefix, limit)
			sameKVs(t, what, got, want)
			wantPages := max(1, (n+limit-1)/limit)
			if pages != wantPages {
				t.Fatalf("%s: %d pages, want %d", what, pages, wantPages)
			}
		}
		var each []storage.KV
		if err := storage.Each(ctx, s, prefix, storage.Strong, 2, func(kv storage.KV) error {
			each = append(each, kv)
			return nil
		}); err != nil {
			t.Fatalf("Each(%q): %v", prefix, err)
		}
		sameKVs(t, fmt.Sprintf("Each(%q)", prefix), each, want)
		mustList(t, ctx, s, prefix, storage.Strong, want)
	}
	// Each stops at fn's first error and returns it as is.
	stop := errors.New("stop")
	seen := 0
	err := storage.Each(ctx, s, "p/", storage.Strong, 2, func(storage.KV) error {
		seen++
		if seen == 3 {
			return stop
		}
		return nil
	})
	if err != stop || seen != 3 {
		t.Fatalf("Each with fn failing at the third entry: err = %v after %d entries", err, seen)
	}
}

// testListPageCursors: the cursor need not be a key nor have the prefix;
// an existing key is excluded; a cursor past the end gives an empty last
// page.
func testListPageCursors(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	expect := putKeys(t, ctx, s, pageKeys)
	after := func(prefix, after string) []storage.KV {
		var out []storage.KV
		for _, kv := range expect(prefix) {
			if kv.Key > after {
				out = append(out, kv)
			}
		}
		return out
	}
	cases := []struct{ prefix, after string }{
		{"p/", "p/a"},         // an existing key is excluded
		{"p/", "p/a/"},        // a missing key between two keys
		{"p/", "p/"},          // the prefix itself, which is a key
		{"p", "p"},            // the prefix itself as cursor with a shorter prefix
		{"p/", "o"},           // below the prefix: from its start
		{"p/", "a"},           // far below
		{"p/", "p0"},          // above every key of the prefix
		{"p/", "q"},           // far above
		{"", "\U0010FFFF"},    // the highest key: nothing after it
		{"", "\U0010FFFF/zz"}, // beyond every key
		{"p/c", "p/c*"},       // glob characters in the cursor
		{"", "p\u00e9"},       // multi-byte cursor
		{"p/a/", "p/a/10"},    // "p/a/10" sorts before "p/a/2"
	}
	for _, tc := range cases {
		want := after(tc.prefix, tc.after)
		for _, limit := range []int{1, 2, 100} {
			got, _ := walk(t, ctx, s, tc.prefix, tc.after, limit, storage.Strong)
			sameKVs(t, fmt.Sprintf("pages of %q after %q by %d", tc.prefix, tc.after, limit), got, want)
		}
	}
	// A cursor past the end answers one empty page and no next.
	kvs, next, err := s.ListPage(ctx, "", "\U0010FFFF", 5, storage.Strong)
	if err != nil || len(kvs) != 0 || next != "" {
		t.Fatalf("page after the last key = %q, next %q, %v; want none", keys(kvs), next, err)
	}
	// An exactly full last page has no next.
	kvs, next, err = s.ListPage(ctx, "o", "", 2, storage.Strong)
	if err != nil || fmt.Sprint(keys(kvs)) != "[o o/1]" || next != "" {
		t.Fatalf("exactly full page = %q, next %q, %v; want [o o/1] and no next", keys(kvs), next, err)
	}
	// A page that is not the last names its last key.
	kvs, next, err = s.ListPage(ctx, "p/a", "", 2, storage.Strong)
	if err != nil || fmt.Sprint(keys(kvs)) != "[p/a p/a/1]" || next != "p/a/1" {
		t.Fatalf("first page of p/a = %q, next %q, %v; want [p/a p/a/1] next p/a/1", keys(kvs), next, err)
	}
	// Invalid arguments are refused.
	for _, limit := range []int{0, -1, storage.MaxPageLimit + 1} {
		if _, _, err := s.ListPage(ctx, "", "", limit, storage.Strong); !errors.Is(err, storage.ErrInvalidPage) {
			t.Fatalf("limit %d: err = %v, want ErrInvalidPage", limit, err)
		}
	}
	if _, _, err := s.ListPage(ctx, "", "a\x00", 1, storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("cursor with NUL: err = %v, want ErrInvalidKey", err)
	}
	// Returned values are copies.
	kvs, _, err = s.ListPage(ctx, "o", "", 2, storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	copy(kvs[0].Value, "MUTATED!")
	mustGet(t, ctx, s, "o", storage.Strong, []byte(fmt.Sprintf("v%d:o", 15)))
}

// testListPageMany: more keys than one SCAN batch or one pipeline, read
// with page sizes that do and do not divide the count.
func testListPageMany(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	const n = 2500
	want := make([]storage.KV, n)
	for i := range want {
		want[i] = storage.KV{Key: fmt.Sprintf("m/%05d", i), Value: []byte(fmt.Sprint(i))}
		mustPut(t, ctx, s, want[i].Key, want[i].Value, storage.Eventual)
	}
	mustPut(t, ctx, s, "m", []byte("outside"), storage.Strong)
	mustPut(t, ctx, s, "n/0", []byte("outside"), storage.Strong)
	for _, limit := range []int{1000, 999, 2500, storage.MaxPageLimit} {
		got, pages := walk(t, ctx, s, "m/", "", limit, storage.Eventual)
		sameKVs(t, fmt.Sprintf("pages by %d", limit), got, want)
		if wantPages := (n + limit - 1) / limit; pages != wantPages {
			t.Fatalf("pages by %d: %d, want %d", limit, pages, wantPages)
		}
	}
}

// testListPageBytes: a page stops early once its values reach
// storage.MaxPageBytes, and the walk still sees every entry once.
func testListPageBytes(t *testing.T, open OpenFunc) {
	s := fresh(t, open, 0)
	ctx := ctxFor(t)
	const size = 6 << 20
	var want []storage.KV
	for i := range 4 {
		v := bytes.Repeat([]byte{byte('a' + i)}, size)
		want = append(want, storage.KV{Key: fmt.Sprintf("big/%d", i), Value: v})
		mustPut(t, ctx, s, want[i].Key, v, storage.Eventual)
	}
	kvs, next, err := s.ListPage(ctx, "big/", "", 100, storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, kv := range kvs {
		total += len(kv.Value)
	}
	if len(kvs) != 3 || next != "big/2" || total > storage.MaxPageBytes+storage.DefaultMaxValueBytes {
		t.Fatalf("first page of 4 x 6 MiB: %q (%d bytes), next %q; want 3 entries and next big/2", keys(kvs), total, next)
	}
	got, pages := walk(t, ctx, s, "big/", "", 100, storage.Strong)
	sameKVs(t, "pages of big values", got, want)
	if pages != 2 {
		t.Fatalf("pages of 4 x 6 MiB: %d, want 2", pages)
	}
}
