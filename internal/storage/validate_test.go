package storage_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// countingStore counts the calls that reach it.
type countingStore struct {
	noopStore
	calls int
}

func (c *countingStore) Get(ctx context.Context, k string, l storage.Consistency) ([]byte, error) {
	c.calls++
	return c.noopStore.Get(ctx, k, l)
}
func (c *countingStore) Put(ctx context.Context, k string, v []byte, l storage.Consistency) error {
	c.calls++
	return nil
}
func (c *countingStore) Delete(ctx context.Context, k string, l storage.Consistency) error {
	c.calls++
	return nil
}
func (c *countingStore) List(ctx context.Context, p string, l storage.Consistency) ([]storage.KV, error) {
	c.calls++
	return nil, nil
}
func (c *countingStore) ListPage(context.Context, string, string, int, storage.Consistency) ([]storage.KV, string, error) {
	c.calls++
	return nil, "", nil
}

func TestValidateStopsBadInputBeforeTheBackend(t *testing.T) {
	inner := &countingStore{}
	s := storage.Validate(inner, 10)
	ctx := context.Background()
	badKeys := []string{"", strings.Repeat("x", storage.MaxKeyBytes+1), "a\x00", "\xff"}
	for _, k := range badKeys {
		if err := s.Put(ctx, k, nil, storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q): %v", k, err)
		}
		if _, err := s.Get(ctx, k, storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Get(%q): %v", k, err)
		}
		if err := s.Delete(ctx, k, storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v", k, err)
		}
	}
	for _, p := range badKeys[1:] {
		if _, err := s.List(ctx, p, storage.Strong); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("List(%q): %v", p, err)
		}
	}
	if err := s.Put(ctx, "k", make([]byte, 11), storage.Strong); !errors.Is(err, storage.ErrValueTooLarge) {
		t.Errorf("11-byte value with a 10-byte limit: %v", err)
	}
	if inner.calls != 0 {
		t.Fatalf("%d invalid calls reached the backend", inner.calls)
	}
	// Valid input goes through: the limit is inclusive, the empty prefix
	// and the longest key are fine.
	if err := s.Put(ctx, "k", make([]byte, 10), storage.Strong); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, strings.Repeat("x", storage.MaxKeyBytes), nil, storage.Strong); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(ctx, "", storage.Strong); err != nil {
		t.Fatal(err)
	}
	if inner.calls != 3 {
		t.Fatalf("%d calls reached the backend, want 3", inner.calls)
	}
	// A limit <= 0 means the 8 MiB default.
	d := storage.Validate(&countingStore{}, 0)
	if err := d.Put(ctx, "k", make([]byte, storage.DefaultMaxValueBytes), storage.Strong); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "k", make([]byte, storage.DefaultMaxValueBytes+1), storage.Strong); !errors.Is(err, storage.ErrValueTooLarge) {
		t.Fatal(err)
	}
}

// TestValidateListPage: a bad prefix or cursor is ErrInvalidKey, a limit
// outside 1..MaxPageLimit is ErrInvalidPage, and none reaches the backend.
func TestValidateListPage(t *testing.T) {
	inner := &countingStore{}
	s := storage.Validate(inner, 10)
	ctx := context.Background()
	bad := []struct {
		name          string
		prefix, after string
		limit         int
		want          error
	}{
		{"NUL prefix", "a\x00", "", 1, storage.ErrInvalidKey},
		{"NUL after", "a", "a\x00", 1, storage.ErrInvalidKey},
		{"long after", "", strings.Repeat("x", storage.MaxKeyBytes+1), 1, storage.ErrInvalidKey},
		{"non-UTF-8 after", "", "\xff", 1, storage.ErrInvalidKey},
		{"zero limit", "", "", 0, storage.ErrInvalidPage},
		{"negative limit", "", "", -1, storage.ErrInvalidPage},
		{"limit over max", "", "", storage.MaxPageLimit + 1, storage.ErrInvalidPage},
	}
	for _, tc := range bad {
		if _, _, err := s.ListPage(ctx, tc.prefix, tc.after, tc.limit, storage.Strong); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if inner.calls != 0 {
		t.Fatalf("%d invalid pages reached the backend", inner.calls)
	}
	for _, limit := range []int{1, storage.MaxPageLimit} {
		if _, _, err := s.ListPage(ctx, "", "any/key", limit, storage.Strong); err != nil {
			t.Fatalf("limit %d: %v", limit, err)
		}
	}
	if inner.calls != 2 {
		t.Fatalf("%d calls reached the backend, want 2", inner.calls)
	}
}
