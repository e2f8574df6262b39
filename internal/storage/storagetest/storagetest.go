// Package storagetest is the conformance suite every storage backend must
// pass. Backends run it from their own tests:
//
//	storagetest.Run(t, func(t *testing.T) storage.Store { return openFresh(t) })
//
// The suite wraps each store in storage.Validate, so it checks the shared
// key and value rules end to end as well as the backend itself.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// SmallLimit is the value size limit used by most of the suite, small enough
// to keep the over-the-limit cases fast.
const SmallLimit = 64 << 10

// OpenFunc opens a fresh, empty store for one test. Stores returned for
// different calls must not see each other's keys (a new directory, a new
// key prefix). The suite closes the store; an OpenFunc may also register its
// own cleanup.
type OpenFunc func(t *testing.T) storage.Store

// levels are all consistency levels, in the order they are exercised.
var levels = []storage.Consistency{storage.Strong, storage.Eventual, storage.ReadYourWrites, storage.Causal}

// Run runs the conformance suite against stores returned by open.
func Run(t *testing.T, open OpenFunc) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open OpenFunc)
	}{
		{"RoundTripEveryLevel", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"GetMissing", testGetMissing},
		{"ListPrefixes", testListPrefixes},
		{"ListGlobCharacters", testListGlob},
		{"UnicodeKeysBinaryValues", testUnicodeBinary},
		{"KeyRules", testKeyRules},
		{"ValueLimit", testValueLimit},
		{"ValueLimitDefault8MiB", testValueLimitDefault},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Isolation", testIsolation},
		{"ReturnedValuesAreCopies", testCopies},
		{"ListPageLimits", testListPageLimits},
		{"ListPageCursors", testListPageCursors},
		{"ListPageManyKeys", testListPageMany},
		{"ListPageByteBudget", testListPageBytes},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// fresh opens a store guarded by the validation decorator with limit, and
// closes it when the test ends.
func fresh(t *testing.T, open OpenFunc, limit int) storage.Store {
	t.Helper()
	raw := open(t)
	s := storage.Validate(raw, limit)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, ctx context.Context, s storage.Store, key string, v []byte, c storage.Consistency) {
	t.Helper()
	if err := s.Put(ctx, key, v, c); err != nil {
		t.Fatalf("Put(%q, %d bytes, %v): %v", key, len(v), c, err)
	}
}

func mustGet(t *testing.T, ctx context.Context, s storage.Store, key string, c storage.Consistency, want []byte) {
	t.Helper()
	got, err := s.Get(ctx, key, c)
	if err != nil {
		t.Fatalf("Get(%q, %v): %v", key, c, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q, %v) = %s, want %s", key, c, short(got), short(want))
	}
	if got == nil {
		t.Fatalf("Get(%q, %v) returned a nil slice for an existing key", key, c)
	}
}

func mustMissing(t *testing.T, ctx context.Context, s storage.Store, key string, c storage.Consistency) {
	t.Helper()
	got, err := s.Get(ctx, key, c)
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get(%q, %v) = %s, %v; want an error wrapping ErrNotFound", key, c, short(got), err)
	}
}

// mustList asserts that List(prefix) returns exactly want, in this order.
func mustList(t *testing.T, ctx context.Context, s storage.Store, prefix string, c storage.Consistency, want []storage.KV) {
	t.Helper()
	got, err := s.List(ctx, prefix, c)
	if err != nil {
		t.Fatalf("List(%q, %v): %v", prefix, c, err)
	}
	if len(got) != len(want) {
		t.Fatalf("List(%q, %v) returned %d entries %v, want %d %v", prefix, c, len(got), keys(got), len(want), keys(want))
	}
	for i := range want {
		if got[i].Key != want[i].Key || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("List(%q, %v)[%d] = %q=%s, want %q=%s (all: %q)", prefix, c, i,
				got[i].Key, short(got[i].Value), want[i].Key, short(want[i].Value), keys(got))
		}
	}
}

func keys(kvs []storage.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}

func short(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	if len(b) > 32 {
		return fmt.Sprintf("%q...(%d bytes)", b[:32], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func testRoundTrip(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	for _, w := range levels {
		for _, r := range levels {
			key := fmt.Sprintf("rt/%v/%v", w, r)
			val := []byte("value written " + w.String() + " read " + r.String())
			mustPut(t, ctx, s, key, val, w)
			mustGet(t, ctx, s, key, r, val)
		}
	}
	var want []storage.KV
	for _, w := range levels {
		for _, r := range levels {
			key := fmt.Sprintf("rt/%v/%v", w, r)
			want = append(want, storage.KV{Key: key, Value: []byte("value written " + w.String() + " read " + r.String())})
		}
	}
	sort.Slice(want, func(i, j int) bool { return want[i].Key < want[j].Key })
	for _, c := range levels {
		mustList(t, ctx, s, "rt/", c, want)
	}
}

func testOverwrite(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	for i, c := range levels {
		mustPut(t, ctx, s, "k", []byte(fmt.Sprintf("v%d", i)), c)
		mustGet(t, ctx, s, "k", storage.Strong, []byte(fmt.Sprintf("v%d", i)))
	}
	// A shorter value replaces a longer one entirely.
	mustPut(t, ctx, s, "k", []byte("a much longer value than before"), storage.Strong)
	mustPut(t, ctx, s, "k", []byte("x"), storage.Strong)
	mustGet(t, ctx, s, "k", storage.Strong, []byte("x"))
	mustList(t, ctx, s, "", storage.Strong, []storage.KV{{Key: "k", Value: []byte("x")}})
}

func testDelete(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	for _, c := range levels {
		key := "del/" + c.String()
		mustPut(t, ctx, s, key, []byte("v"), storage.Strong)
		mustPut(t, ctx, s, key+"/keep", []byte("kept"), storage.Strong)
		if err := s.Delete(ctx, key, c); err != nil {
			t.Fatalf("Delete(%q, %v): %v", key, c, err)
		}
		mustMissing(t, ctx, s, key, storage.Strong)
		mustGet(t, ctx, s, key+"/keep", storage.Strong, []byte("kept"))
		// Deleting again, and deleting a key that never existed, succeed.
		if err := s.Delete(ctx, key, c); err != nil {
			t.Fatalf("second Delete(%q, %v): %v", key, c, err)
		}
		if err := s.Delete(ctx, "never/existed/"+c.String(), c); err != nil {
			t.Fatalf("Delete of a missing key at %v: %v", c, err)
		}
	}
	var want []storage.KV
	for _, c := range levels {
		want = append(want, storage.KV{Key: "del/" + c.String() + "/keep", Value: []byte("kept")})
	}
	sort.Slice(want, func(i, j int) bool { return want[i].Key < want[j].Key })
	mustList(t, ctx, s, "", storage.Strong, want)
	// A deleted key can be written again.
	mustPut(t, ctx, s, "del/strong", []byte("again"), storage.Strong)
	mustGet(t, ctx, s, "del/strong", storage.Strong, []byte("again"))
}

func testGetMissing(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	for _, c := range levels {
		mustMissing(t, ctx, s, "missing", c)
	}
	mustPut(t, ctx, s, "missing-not", []byte("v"), storage.Strong)
	// A key that is a prefix of an existing key is still missing.
	mustMissing(t, ctx, s, "missing", storage.Strong)
	mustMissing(t, ctx, s, "missing-not-", storage.Strong)
}
