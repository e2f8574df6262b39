package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

func testListPrefixes(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	mustList(t, ctx, s, "", storage.Strong, nil)
	all := []string{
		"a", "a/", "a/b", "a/b/c", "a/b/c/d", "a/bc", "a/c", "ab", "b", "b/a",
		"a\x7f", "a\u00e9", "a/\U0001F600", "z", "~",
	}
	expect := putKeys(t, ctx, s, all)
	for _, prefix := range []string{"", "a", "a/", "a/b", "a/b/", "a/b/c", "a/b/c/d", "a/b/c/d/", "ab", "b", "c", "z", "~", "a\u00e9", "a/\U0001F600", "\u00ff"} {
		for _, c := range levels {
			mustList(t, ctx, s, prefix, c, expect(prefix))
		}
	}
	// Exact byte order, spelled out once so that a sort bug in expect
	// cannot hide one in the store.
	got, err := s.List(ctx, "a/", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	wantOrder := []string{"a/", "a/b", "a/b/c", "a/b/c/d", "a/bc", "a/c", "a/\U0001F600"}
	if fmt.Sprint(keys(got)) != fmt.Sprint(wantOrder) {
		t.Fatalf("List(\"a/\") order = %q, want %q", keys(got), wantOrder)
	}
	// An invalid prefix is rejected like an invalid key.
	if _, err := s.List(ctx, "a\x00", storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("List with a NUL in the prefix: err = %v, want ErrInvalidKey", err)
	}
}

func testListGlob(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	// Keys that a glob pattern built from the prefix without escaping
	// would wrongly match ("a*[b]?" as a pattern matches "aXbY").
	all := []string{
		"a*[b]?", "a*[b]?/1", "a*[b]?x", "aXbY", "a*bX", "a*[b]", "a*[c]?",
		`a\*`, `a\\*`, `a\x`, "[", "[]", "*", "**", "?", "?x", "^a", "a-z", "{a}",
	}
	for i, k := range all {
		mustPut(t, ctx, s, k, []byte{byte(i)}, storage.Strong)
	}
	expect := func(prefix string) []storage.KV {
		var out []storage.KV
		for i, k := range all {
			if strings.HasPrefix(k, prefix) {
				out = append(out, storage.KV{Key: k, Value: []byte{byte(i)}})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
		return out
	}
	for _, prefix := range []string{"a*[b]?", "a*[b]", "a*", "a*[", "a", `a\`, `a\\`, "[", "[]", "*", "?", "^", "{"} {
		mustList(t, ctx, s, prefix, storage.Strong, expect(prefix))
		mustList(t, ctx, s, prefix, storage.Eventual, expect(prefix))
	}
	if n := len(expect("a*[b]?")); n != 3 {
		t.Fatalf("self-check: %d keys under a*[b]?, want 3", n)
	}
}

func testUnicodeBinary(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	kv := []storage.KV{
		{Key: "日本語/キー", Value: all},
		{Key: "emoji/\U0001F916\U0001F4AC", Value: []byte{0, 0, 0}},
		{Key: "empty", Value: []byte{}},
		{Key: "ελληνικά", Value: []byte("\xff\xfe\x00\x01")},
		{Key: "tab\tnew\nline\r", Value: []byte("\x00")},
		{Key: "\u0001", Value: []byte("low control byte")},
		{Key: "\U0010FFFF", Value: []byte("highest code point")},
		{Key: "space key ", Value: []byte(" ")},
	}
	for _, c := range levels {
		for _, e := range kv {
			mustPut(t, ctx, s, e.Key, e.Value, c)
		}
		for _, e := range kv {
			mustGet(t, ctx, s, e.Key, c, e.Value)
		}
	}
	want := append([]storage.KV(nil), kv...)
	sort.Slice(want, func(i, j int) bool { return want[i].Key < want[j].Key })
	mustList(t, ctx, s, "", storage.Strong, want)
	// Empty and nil values both read back as an empty, non-nil slice.
	mustPut(t, ctx, s, "nil", nil, storage.Strong)
	mustGet(t, ctx, s, "nil", storage.Strong, []byte{})
	// The value stored is the value at the time of Put, not an alias.
	buf := []byte("before")
	mustPut(t, ctx, s, "alias", buf, storage.Eventual)
	copy(buf, "AFTER!")
	mustGet(t, ctx, s, "alias", storage.Strong, []byte("before"))
}

func testKeyRules(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	max := strings.Repeat("k", storage.MaxKeyBytes)
	mustPut(t, ctx, s, max, []byte("max"), storage.Strong)
	mustGet(t, ctx, s, max, storage.Strong, []byte("max"))
	// 1024 bytes made of multi-byte runes is just as valid.
	runes := strings.Repeat("é", storage.MaxKeyBytes/2)
	mustPut(t, ctx, s, runes, []byte("runes"), storage.Strong)
	mustGet(t, ctx, s, runes, storage.Strong, []byte("runes"))

	bad := map[string]string{
		"empty":          "",
		"1025 bytes":     max + "k",
		"NUL":            "a\x00b",
		"leading NUL":    "\x00",
		"invalid UTF-8":  "a\xffb",
		"truncated rune": "\xe2\x82",
		"surrogate":      "\xed\xa0\x80",
	}
	for name, key := range bad {
		if err := s.Put(ctx, key, []byte("v"), storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%s): err = %v, want ErrInvalidKey", name, err)
		}
		if _, err := s.Get(ctx, key, storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Get(%s): err = %v, want ErrInvalidKey", name, err)
		}
		if err := s.Delete(ctx, key, storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%s): err = %v, want ErrInvalidKey", name, err)
		}
	}
	// Rejected keys never reached the backend.
	want := []storage.KV{{Key: runes, Value: []byte("runes")}, {Key: max, Value: []byte("max")}}
	sort.Slice(want, func(i, j int) bool { return want[i].Key < want[j].Key })
	mustList(t, ctx, s, "", storage.Strong, want)
}

func testValueLimit(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	at := bytes.Repeat([]byte{0xab}, SmallLimit)
	for _, c := range levels {
		mustPut(t, ctx, s, "at-limit", at, c)
		mustGet(t, ctx, s, "at-limit", c, at)
		err := s.Put(ctx, "over-limit", append(at, 0), c)
		if !errors.Is(err, storage.ErrValueTooLarge) {
			t.Fatalf("Put of %d bytes at %v: err = %v, want ErrValueTooLarge", SmallLimit+1, c, err)
		}
		mustMissing(t, ctx, s, "over-limit", storage.Strong)
	}
	// A rejected overwrite leaves the old value in place.
	if err := s.Put(ctx, "at-limit", make([]byte, SmallLimit+1), storage.Strong); !errors.Is(err, storage.ErrValueTooLarge) {
		t.Fatalf("oversized overwrite: err = %v, want ErrValueTooLarge", err)
	}
	mustGet(t, ctx, s, "at-limit", storage.Strong, at)
}

func testValueLimitDefault(t *testing.T, open OpenFunc) {
	s := fresh(t, open, 0) // 0 selects storage.DefaultMaxValueBytes.
	ctx := ctxFor(t)
	at := make([]byte, storage.DefaultMaxValueBytes)
	for i := range at {
		at[i] = byte(i * 7)
	}
	mustPut(t, ctx, s, "big", at, storage.Strong)
	mustGet(t, ctx, s, "big", storage.Strong, at)
	if err := s.Put(ctx, "bigger", make([]byte, storage.DefaultMaxValueBytes+1), storage.Strong); !errors.Is(err, storage.ErrValueTooLarge) {
		t.Fatalf("Put of 8 MiB + 1: err = %v, want ErrValueTooLarge", err)
	}
	mustMissing(t, ctx, s, "bigger", storage.Strong)
}

func testConcurrentWriters(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	const writers, perWriter = 16, 64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				key := fmt.Sprintf("cw/%02d/%03d", w, i)
				c := levels[(w+i)%len(levels)]
				// Write a placeholder, then the final value, and
				// delete every fifth key, so the final state depends
				// on each writer's operations being applied in order.
				if err := s.Put(ctx, key, []byte("placeholder"), c); err != nil {
					errs <- fmt.Errorf("writer %d put %s: %w", w, key, err)
					return
				}
				if err := s.Put(ctx, key, []byte(fmt.Sprintf("w%d-i%d", w, i)), c); err != nil {
					errs <- fmt.Errorf("writer %d put %s: %w", w, key, err)
					return
				}
				if i%5 == 0 {
					if err := s.Delete(ctx, key, c); err != nil {
						errs <- fmt.Errorf("writer %d delete %s: %w", w, key, err)
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var want []storage.KV
	for w := 0; w < writers; w++ {
		for i := 0; i < perWriter; i++ {
			if i%5 != 0 {
				want = append(want, storage.KV{Key: fmt.Sprintf("cw/%02d/%03d", w, i), Value: []byte(fmt.Sprintf("w%d-i%d", w, i))})
			}
		}
	}
	mustList(t, ctx, s, "cw/", storage.Strong, want)
	mustList(t, ctx, s, "", storage.Strong, want)
	mustList(t, ctx, s, "cw/07/", storage.Strong, want[7*51:8*51])
}

func testIsolation(t *testing.T, open OpenFunc) {
	a := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	mustPut(t, ctx, a, "shared-name", []byte("from a"), storage.Strong)
	mustPut(t, ctx, a, "only-a", []byte("a"), storage.Strong)
	b := fresh(t, open, SmallLimit)
	mustList(t, ctx, b, "", storage.Strong, nil)
	mustMissing(t, ctx, b, "only-a", storage.Strong)
	mustMissing(t, ctx, b, "shared-name", storage.Strong)
	mustPut(t, ctx, b, "shared-name", []byte("from b"), storage.Strong)
	if err := b.Delete(ctx, "only-a", storage.Strong); err != nil {
		t.Fatal(err)
	}
	mustList(t, ctx, a, "", storage.Strong, []storage.KV{{Key: "only-a", Value: []byte("a")}, {Key: "shared-name", Value: []byte("from a")}})
	mustList(t, ctx, b, "", storage.Strong, []storage.KV{{Key: "shared-name", Value: []byte("from b")}})
}

func testCopies(t *testing.T, open OpenFunc) {
	s := fresh(t, open, SmallLimit)
	ctx := ctxFor(t)
	mustPut(t, ctx, s, "c", []byte("original"), storage.Strong)
	v, err := s.Get(ctx, "c", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	copy(v, "MUTATED!")
	mustGet(t, ctx, s, "c", storage.Strong, []byte("original"))
	kvs, err := s.List(ctx, "", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	copy(kvs[0].Value, "MUTATED!")
	mustList(t, ctx, s, "", storage.Strong, []storage.KV{{Key: "c", Value: []byte("original")}})
}

func testClose(t *testing.T, open OpenFunc) {
	s := storage.Validate(open(t), SmallLimit)
	ctx := ctxFor(t)
	mustPut(t, ctx, s, "k", []byte("v"), storage.Strong)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get(ctx, "k", storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Get after Close: err = %v, want ErrClosed", err)
	}
	if err := s.Put(ctx, "k", []byte("v"), storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Put after Close: err = %v, want ErrClosed", err)
	}
	if err := s.Delete(ctx, "k", storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Delete after Close: err = %v, want ErrClosed", err)
	}
	if _, err := s.List(ctx, "", storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("List after Close: err = %v, want ErrClosed", err)
	}
	if _, _, err := s.ListPage(ctx, "", "", 10, storage.Strong); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("ListPage after Close: err = %v, want ErrClosed", err)
	}
}
