package storage

import (
	"context"
	"fmt"
)

// validated enforces the key and value rules in front of any backend, so
// that every backend rejects the same inputs with the same errors.
type validated struct {
	next          Store
	maxValueBytes int
}

// Validate returns s guarded by the shared key and value rules: keys of 1 to
// MaxKeyBytes bytes of UTF-8 without NUL, values up to maxValueBytes (<= 0
// means DefaultMaxValueBytes). Invalid input never reaches the backend.
func Validate(s Store, maxValueBytes int) Store {
	if maxValueBytes <= 0 {
		maxValueBytes = DefaultMaxValueBytes
	}
	return &validated{next: s, maxValueBytes: maxValueBytes}
}

func (v *validated) Get(ctx context.Context, key string, c Consistency) ([]byte, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	return v.next.Get(ctx, key, c)
}

func (v *validated) Put(ctx context.Context, key string, value []byte, c Consistency) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if len(value) > v.maxValueBytes {
		return fmt.Errorf("%w: %d bytes exceeds %d", ErrValueTooLarge, len(value), v.maxValueBytes)
	}
	return v.next.Put(ctx, key, value, c)
}

func (v *validated) Delete(ctx context.Context, key string, c Consistency) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	return v.next.Delete(ctx, key, c)
}

func (v *validated) List(ctx context.Context, prefix string, c Consistency) ([]KV, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	return v.next.List(ctx, prefix, c)
}

func (v *validated) ListPage(ctx context.Context, prefix, after string, limit int, c Consistency) ([]KV, string, error) {
	if err := ValidatePage(prefix, after, limit); err != nil {
		return nil, "", err
	}
	return v.next.ListPage(ctx, prefix, after, limit, c)
}

func (v *validated) Close() error { return v.next.Close() }
