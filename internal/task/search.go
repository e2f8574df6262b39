package task

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// DefaultMaxConcurrentSearches is the default of task.max_concurrent_searches.
const DefaultMaxConcurrentSearches = 2

// SearchLimiter bounds how many index.search scans run at once on a node;
// further searches wait for a slot (or for their context to end). With the
// page-at-a-time scan this bounds the memory of every search together.
type SearchLimiter struct{ slots chan struct{} }

// NewSearchLimiter returns a limiter of n concurrent scans (n <= 0 means
// DefaultMaxConcurrentSearches).
func NewSearchLimiter(n int) *SearchLimiter {
	if n <= 0 {
		n = DefaultMaxConcurrentSearches
	}
	return &SearchLimiter{slots: make(chan struct{}, n)}
}

// acquire takes a slot, waiting until one is free or ctx ends. A nil
// limiter never waits.
func (l *SearchLimiter) acquire(ctx context.Context) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	default:
	}
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// IndexSearchExecutor is the index.search executor over its node's Store.
type IndexSearchExecutor struct {
	Store storage.Store
	// Limiter bounds concurrent scans; nil means unbounded (the node
	// always sets one, from task.max_concurrent_searches).
	Limiter *SearchLimiter
}

// SearchInput is the input of index.search.
type SearchInput struct {
	Collection string `json:"collection"`
	Query      string `json:"query"`
	K          *int   `json:"k,omitempty"`
}

// parse validates the input and returns k with its default applied.
func (in *SearchInput) parse(input json.RawMessage) (int, error) {
	if err := decodeInput(input, in); err != nil {
		return 0, err
	}
	if err := validName("collection", in.Collection, MaxCollectionBytes); err != nil {
		return 0, err
	}
	if strings.TrimSpace(in.Query) == "" {
		return 0, fmt.Errorf("%w: query is required", ErrBadInput)
	}
	k := DefaultK
	if in.K != nil {
		k = *in.K
	}
	if k < 1 || k > MaxK {
		return 0, fmt.Errorf("%w: k %d out of range 1..%d", ErrBadInput, k, MaxK)
	}
	return k, nil
}

// SearchResult is one hit: chunk number Chunk of document ID, its cosine
// similarity to the query and its text. Peer is set when results of several
// nodes were merged: the node that holds the chunk.
type SearchResult struct {
	ID    string  `json:"id"`
	Chunk int     `json:"chunk"`
	Score float32 `json:"score"`
	Text  string  `json:"text"`
	Peer  string  `json:"peer,omitempty"`
}

// SearchOutput is the output of index.search, results by descending score.
// Peers and Failed are set by a fan-out search across the mesh.
type SearchOutput struct {
	Collection string         `json:"collection"`
	Results    []SearchResult `json:"results"`
	// Peers are the nodes whose results were merged.
	Peers []string `json:"peers,omitempty"`
	// Failed are the nodes that were asked but did not answer.
	Failed []PeerError `json:"failed,omitempty"`
}

// PeerError is a node that failed during a fan-out search, and why.
type PeerError struct {
	Peer  string `json:"peer"`
	Error string `json:"error"`
}

// Type returns "index.search".
func (IndexSearchExecutor) Type() string { return TypeSearch }

// Execute returns the k chunks of the collection most similar to the query
// (cosine > 0). It is a brute-force scan, O(n·dim) time for n chunks, that
// reads the collection one page of SearchPageSize chunks at a time and keeps
// only a min-heap of the k best hits (with copies of their keys and texts),
// so its memory is one page plus k hits whatever the collection's size.
func (x IndexSearchExecutor) Execute(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	var in SearchInput
	k, err := in.parse(input)
	if err != nil {
		return nil, err
	}
	release, err := x.Limiter.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	prefix := collectionPrefix(in.Collection)
	queries := map[int][]float32{DefaultDim: Embed(in.Query, DefaultDim)}
	top := make(topK, 0, k)
	seq := 0
	err = storage.Each(ctx, x.Store, prefix, storage.ReadYourWrites, SearchPageSize, func(kv storage.KV) error {
		seq++
		dim, vec, text, ok := decodeChunk(kv.Value)
		if !ok {
			return nil
		}
		q, ok := queries[dim]
		if !ok {
			q = Embed(in.Query, dim)
			queries[dim] = q
		}
		h := hit{score: dotBytes(q, vec), seq: seq}
		if h.score > 0 && top.admits(k, h) {
			h.key, h.text = kv.Key, string(text)
			top.offer(k, h)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index.search: list %s: %w", prefix, err)
	}
	out := SearchOutput{Collection: in.Collection, Results: make([]SearchResult, 0, len(top))}
	for _, h := range top.sorted() {
		rest := h.key[len(prefix):]
		slash := strings.LastIndexByte(rest, '/')
		if slash < 0 {
			continue
		}
		n, err := strconv.Atoi(rest[slash+1:])
		if err != nil {
			continue
		}
		out.Results = append(out.Results, SearchResult{ID: rest[:slash], Chunk: n, Score: h.score, Text: h.text})
	}
	return json.Marshal(out)
}

// hit is a scored candidate: seq is its position in key order (ties go to
// the earlier key); key and text are set once it is admitted.
type hit struct {
	score float32
	seq   int
	key   string
	text  string
}

// worse orders hits for eviction: lower score first, then later key.
func (a hit) worse(b hit) bool {
	return a.score < b.score || (a.score == b.score && a.seq > b.seq)
}

// topK is a min-heap of at most k hits, worst at the root.
type topK []hit

// admits reports whether offer would keep h.
func (t topK) admits(k int, h hit) bool {
	return len(t) < k || t[0].worse(h)
}

// offer adds h if the heap has room or h beats the worst kept hit.
func (t *topK) offer(k int, h hit) {
	s := *t
	if len(s) < k {
		s = append(s, h)
		for i := len(s) - 1; i > 0; {
			p := (i - 1) / 2
			if !s[i].worse(s[p]) {
				break
			}
			s[i], s[p] = s[p], s[i]
			i = p
		}
		*t = s
		return
	}
	if !s[0].worse(h) {
		return
	}
	s[0] = h
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].worse(s[m]) {
			m = l
		}
		if r < len(s) && s[r].worse(s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
}

// sorted returns the kept hits best first.
func (t topK) sorted() []hit {
	out := slices.Clone(t)
	slices.SortFunc(out, func(a, b hit) int {
		switch {
		case b.worse(a):
			return -1
		case a.worse(b):
			return 1
		}
		return 0
	})
	return out
}

// CheckInput validates an index.search input before it is fanned out.
func (IndexSearchExecutor) CheckInput(input json.RawMessage) error {
	var in SearchInput
	_, err := in.parse(input)
	return err
}

// Merge combines the index.search results of several nodes into one top-k:
// hits by descending score (then id, chunk, peer), each tagged with the
// node that holds it, the same chunk from nodes sharing a store kept once.
// Nodes that failed (or answered undecodably) are listed in Failed; the
// task fails, with the last failure's code, only when no node answered.
func (IndexSearchExecutor) Merge(_ context.Context, input json.RawMessage, parts []Part) (json.RawMessage, string, error) {
	var in SearchInput
	k, err := in.parse(input)
	if err != nil {
		return nil, CodeBadInput, err
	}
	var (
		out      = SearchOutput{Collection: in.Collection, Results: []SearchResult{}}
		seen     = make(map[[3]string]bool)
		lastCode string
	)
	for _, a := range parts {
		var part SearchOutput
		if a.Err == nil {
			if err := json.Unmarshal(a.Result, &part); err != nil {
				a.Code, a.Err = CodeError, fmt.Errorf("undecodable result: %w", err)
			}
		}
		if a.Err != nil {
			out.Failed = append(out.Failed, PeerError{Peer: a.Peer.String(), Error: oneline.Flatten(a.Err.Error())})
			lastCode = a.Code
			continue
		}
		out.Peers = append(out.Peers, a.Peer.String())
		for _, r := range part.Results {
			key := [3]string{r.ID, fmt.Sprint(r.Chunk), r.Text}
			if seen[key] {
				continue // the same chunk from nodes sharing a store
			}
			seen[key] = true
			r.Peer = a.Peer.String()
			out.Results = append(out.Results, r)
		}
	}
	if len(out.Peers) == 0 {
		msgs := make([]string, len(out.Failed))
		for i, f := range out.Failed {
			msgs[i] = "peer " + f.Peer + ": " + f.Error
		}
		return nil, lastCode, errors.New(strings.Join(msgs, "; "))
	}
	slices.SortStableFunc(out.Results, func(a, b SearchResult) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Chunk, b.Chunk), cmp.Compare(a.Peer, b.Peer))
	})
	if len(out.Results) > k {
		out.Results = out.Results[:k]
	}
	res, err := json.Marshal(out)
	if err != nil {
		return nil, CodeError, err
	}
	return res, "", nil
}

var _ Merger = IndexSearchExecutor{}
