package task

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// Index limits.
const (
	// MaxCollectionBytes bounds a collection name.
	MaxCollectionBytes = 128
	// MaxDocIDBytes bounds a document id.
	MaxDocIDBytes = 256
	// MaxDocChunks bounds the chunks of one document (keys carry six digits).
	MaxDocChunks = 999_999
	// DefaultK is the number of search results when k is not given.
	DefaultK = 5
	// MaxK bounds k.
	MaxK = 100
)

// indexValueVersion is the first byte of every stored chunk value.
const indexValueVersion = 1

// IndexPrefix is the key prefix of all index data: chunks are stored under
// index/<collection>/<id>/<chunk index, six digits>.
const IndexPrefix = "index/"

func collectionPrefix(collection string) string { return IndexPrefix + collection + "/" }

func docPrefix(collection, id string) string { return collectionPrefix(collection) + id + "/" }

func chunkKey(collection, id string, i int) string {
	return fmt.Sprintf("%s%06d", docPrefix(collection, id), i)
}

// validName checks a collection name or document id: 1 to max bytes of
// UTF-8 without '/' or control characters (so it is one key segment).
func validName(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is required", ErrBadInput, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s is %d bytes, more than %d", ErrBadInput, what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadInput, what)
	case strings.ContainsRune(s, '/'):
		return fmt.Errorf("%w: %s must not contain '/'", ErrBadInput, what)
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: %s must not contain control characters", ErrBadInput, what)
	}
	return nil
}

// encodeChunk lays out a stored chunk: version byte, dim (uint16 LE), dim
// float32 LE components, then the chunk text.
func encodeChunk(vec []float32, text string) []byte {
	b := make([]byte, 3+4*len(vec)+len(text))
	b[0] = indexValueVersion
	binary.LittleEndian.PutUint16(b[1:], uint16(len(vec)))
	for i, x := range vec {
		binary.LittleEndian.PutUint32(b[3+4*i:], math.Float32bits(x))
	}
	copy(b[3+4*len(vec):], text)
	return b
}

// decodeChunk returns the dim, raw vector bytes and text of a stored chunk.
func decodeChunk(b []byte) (dim int, vec []byte, text []byte, ok bool) {
	if len(b) < 3 || b[0] != indexValueVersion {
		return 0, nil, nil, false
	}
	dim = int(binary.LittleEndian.Uint16(b[1:]))
	if len(b) < 3+4*dim {
		return 0, nil, nil, false
	}
	return dim, b[3 : 3+4*dim], b[3+4*dim:], true
}

// dotBytes is the dot product of q and a vector stored as float32 LE bytes
// (len(vec) == 4*len(q)).
func dotBytes(q []float32, vec []byte) float32 {
	vec = vec[:4*len(q)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(q); i += 4 {
		b := vec[4*i : 4*i+16]
		s0 += q[i] * math.Float32frombits(binary.LittleEndian.Uint32(b[0:]))
		s1 += q[i+1] * math.Float32frombits(binary.LittleEndian.Uint32(b[4:]))
		s2 += q[i+2] * math.Float32frombits(binary.LittleEndian.Uint32(b[8:]))
		s3 += q[i+3] * math.Float32frombits(binary.LittleEndian.Uint32(b[12:]))
	}
	for ; i < len(q); i++ {
		s0 += q[i] * math.Float32frombits(binary.LittleEndian.Uint32(vec[4*i:]))
	}
	return s0 + s1 + s2 + s3
}

// IndexAddExecutor is the index.add executor: it chunks, embeds and stores a
// document in its node's Store.
type IndexAddExecutor struct {
	Store storage.Store
}

// AddInput is the input of index.add.
type AddInput struct {
	Collection string  `json:"collection"`
	ID         string  `json:"id"`
	Text       *string `json:"text"`
	Size       *int    `json:"size,omitempty"`
	Overlap    *int    `json:"overlap,omitempty"`
}

// AddOutput is the output of index.add: how many chunks the document has now.
type AddOutput struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Chunks     int    `json:"chunks"`
}

// Type returns "index.add".
func (IndexAddExecutor) Type() string { return TypeAdd }

// Execute stores the document's chunks, replacing any it had before. Chunks
// are written at Eventual consistency and the last write at Strong: on the
// local store that one sync makes every earlier write durable too.
func (x IndexAddExecutor) Execute(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	var in AddInput
	if err := decodeInput(input, &in); err != nil {
		return nil, err
	}
	if err := validName("collection", in.Collection, MaxCollectionBytes); err != nil {
		return nil, err
	}
	if err := validName("id", in.ID, MaxDocIDBytes); err != nil {
		return nil, err
	}
	chunks, err := chunkRequest(in.Text, in.Size, in.Overlap)
	if err != nil {
		return nil, err
	}
	if len(chunks) > MaxDocChunks {
		return nil, fmt.Errorf("%w: %d chunks exceeds %d", ErrBadInput, len(chunks), MaxDocChunks)
	}
	// Stale chunks are those the new version does not overwrite; only
	// their keys are kept, one page of old chunks read at a time.
	var stale []string
	dp := docPrefix(in.Collection, in.ID)
	err = storage.Each(ctx, x.Store, dp, storage.ReadYourWrites, SearchPageSize, func(kv storage.KV) error {
		suffix := kv.Key[len(dp):]
		if n, err := strconv.Atoi(suffix); err != nil || n >= len(chunks) || len(suffix) != 6 {
			stale = append(stale, kv.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index.add: list old chunks: %w", err)
	}
	ops := len(chunks) + len(stale)
	level := func(op int) storage.Consistency {
		if op == ops-1 {
			return storage.Strong
		}
		return storage.Eventual
	}
	vec := make([]float32, DefaultDim)
	for i, c := range chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		EmbedInto(vec, c.Text)
		key := chunkKey(in.Collection, in.ID, i)
		if err := x.Store.Put(ctx, key, encodeChunk(vec, c.Text), level(i)); err != nil {
			return nil, fmt.Errorf("index.add: put %s: %w", key, err)
		}
	}
	for j, key := range stale {
		if err := x.Store.Delete(ctx, key, level(len(chunks)+j)); err != nil {
			return nil, fmt.Errorf("index.add: delete stale %s: %w", key, err)
		}
	}
	return json.Marshal(AddOutput{Collection: in.Collection, ID: in.ID, Chunks: len(chunks)})
}

// SearchPageSize is the number of stored chunks index.search (and
// index.add, for the chunks it replaces) reads per page: about 400 KiB of
// 384-dimension chunks, so one search holds one page plus its top k.
const SearchPageSize = 256
