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
