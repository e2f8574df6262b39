// Package storage defines the key-value store contract of the node: one
// interface, four consistency levels, validation shared by every backend, the
// sentinel errors callers branch on, and the instrumenting decorator that
// measures every operation of any backend.
package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. Backends wrap them with %w; callers test with errors.Is.
var (
	// ErrNotFound means the key does not exist. It is not a failure of the store.
	ErrNotFound = errors.New("not found")
	// ErrInvalidKey means the key is empty, longer than MaxKeyBytes, not UTF-8 or contains NUL.
	ErrInvalidKey = errors.New("invalid key")
	// ErrValueTooLarge means the value exceeds the configured maximum size.
	ErrValueTooLarge = errors.New("value too large")
	// ErrUnavailable means the backend could not be reached after retries.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("store closed")
	// ErrInsufficientStorage marks a write the disk cannot hold (507).
	ErrInsufficientStorage = errors.New("insufficient storage")
	// ErrInvalidConsistency means a consistency level name was not recognised.
	ErrInvalidConsistency = errors.New("invalid consistency level")
	// ErrInvalidPage means a ListPage limit is not in 1..MaxPageLimit.
	ErrInvalidPage = errors.New("invalid page")
)

// MaxKeyBytes is the longest key accepted by every backend.
const MaxKeyBytes = 1024

// DefaultMaxValueBytes is the default value size limit (8 MiB).
const DefaultMaxValueBytes = 8 << 20

// Consistency is the guarantee a caller asks of one operation.
type Consistency uint8

// Consistency levels. The zero value is Strong, the safe default.
const (
	Strong Consistency = iota
	Eventual
	ReadYourWrites
	Causal
)

var consistencyNames = [...]string{"strong", "eventual", "read-your-writes", "causal"}

// String returns the level's name as used by the CLI and the control API.
func (c Consistency) String() string {
	if int(c) < len(consistencyNames) {
		return consistencyNames[c]
	}
	return fmt.Sprintf("consistency(%d)", c)
}

// Durable reports whether writes at this level must be synced to stable
// storage before they are acknowledged.
func (c Consistency) Durable() bool { return c != Eventual }

// ParseConsistency parses a level name ("strong", "eventual",
// "read-your-writes", "causal"; underscores and case are tolerated). The
// empty string means Strong.
func ParseConsistency(s string) (Consistency, error) {
	n := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-")
	if n == "" {
		return Strong, nil
	}
	for i, name := range consistencyNames {
		if n == name {
			return Consistency(i), nil
		}
	}
	return Strong, fmt.Errorf("%w: %q (want strong, eventual, read-your-writes or causal)", ErrInvalidConsistency, s)
}

// MaxPageLimit is the largest limit ListPage accepts.
const MaxPageLimit = 10000

// MaxPageBytes bounds the value bytes of one ListPage answer: a backend
// stops a page early (with a next cursor) once its values reach this
// size, so a page holds at most MaxPageBytes plus one value whatever the
// limit. Callers must follow next, never infer the end from a short page.
const MaxPageBytes = 16 << 20

// KV is one key and its value, as returned by List and ListPage.
type KV struct {
	Key   string
	Value []byte
}

// Store is the key-value contract every backend implements. Implementations
// must be safe for concurrent use. Get returns ErrNotFound for a missing key;
// Delete of a missing key succeeds. List returns every key with the given
// prefix in ascending byte order, all at once: production code that a peer
// or an API client can reach uses ListPage (or Each) instead, which holds
// one bounded page at a time.
//
// ListPage returns at most limit entries whose key has prefix and is
// strictly greater than after ("" means from the start), in ascending byte
// order, and next: the key to pass as after for the following page, or ""
// when there are no more. A page may be shorter than limit (its values
// reached MaxPageBytes) while next is not "". limit must be in
// 1..MaxPageLimit (else an error wrapping ErrInvalidPage); after is "" or a
// valid key (else ErrInvalidKey), and need not exist or have prefix.
type Store interface {
	Get(ctx context.Context, key string, c Consistency) ([]byte, error)
	Put(ctx context.Context, key string, value []byte, c Consistency) error
	Delete(ctx context.Context, key string, c Consistency) error
	List(ctx context.Context, prefix string, c Consistency) ([]KV, error)
	ListPage(ctx context.Context, prefix, after string, limit int, c Consistency) (kvs []KV, next string, err error)
	Close() error
}

// Operation names one of the four store operations; it indexes label children.
type Operation uint8

// The four operations, in the order used by metric label arrays.
const (
	OpGet Operation = iota
	OpPut
	OpDelete
	OpList
	NumOperations
)

var operationNames = [...]string{"get", "put", "delete", "list"}

// String returns the operation's metric label value.
func (o Operation) String() string {
	if o < NumOperations {
		return operationNames[o]
	}
	return "unknown"
}

// OperationNames lists the closed set of operation label values.
func OperationNames() []string { return operationNames[:] }

// ValidateKey checks a key against the rules shared by every backend.
func ValidateKey(key string) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes exceeds %d", ErrInvalidKey, len(key), MaxKeyBytes)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: contains NUL", ErrInvalidKey)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidKey)
	}
	return nil
}

// ValidatePage checks the arguments of ListPage: a valid prefix, an after
// cursor that is empty or a valid key, and a limit in 1..MaxPageLimit.
func ValidatePage(prefix, after string, limit int) error {
	if err := ValidatePrefix(prefix); err != nil {
		return err
	}
	if after != "" {
		if err := ValidateKey(after); err != nil {
			return fmt.Errorf("after: %w", err)
		}
	}
	if limit < 1 || limit > MaxPageLimit {
		return fmt.Errorf("%w: limit %d out of range 1..%d", ErrInvalidPage, limit, MaxPageLimit)
	}
	return nil
}

// ValidatePrefix checks a List prefix: it may be empty, otherwise it follows the key rules.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(prefix)
}
