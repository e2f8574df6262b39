package task

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// prose returns about n bytes of English-like text: words drawn from a
// 5000-word vocabulary with a Zipf distribution, in sentences of 8 to 20
// words. The same seed gives the same text.
func prose(n int, seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 7))
	syll := []string{"ka", "lo", "mi", "ter", "an", "sun", "re", "vo", "pla", "dis", "con", "ber", "ish", "ta", "nu", "gor"}
	vocab := make([]string, 5000)
	for i := range vocab {
		var w strings.Builder
		for j, x := 0, i; j < 1+i%3 || x > 0; j, x = j+1, x/len(syll) {
			w.WriteString(syll[x%len(syll)])
		}
		vocab[i] = w.String()
	}
	zipf := rand.NewZipf(rng, 1.1, 1, uint64(len(vocab)-1))
	var b strings.Builder
	b.Grow(n + 64)
	for b.Len() < n {
		words := 8 + rng.IntN(13)
		for j := range words {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(vocab[zipf.Uint64()])
			if j == words-1 {
				b.WriteByte(".!?"[rng.IntN(3)])
			}
		}
	}
	return b.String()
}

func BenchmarkChunk1MB(b *testing.B) {
	text := prose(1<<20, 1)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ChunkText(text, DefaultChunkSize, DefaultChunkOverlap); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkExecutor1MB includes decoding the JSON input and encoding
// the JSON output, as a task does.
func BenchmarkChunkExecutor1MB(b *testing.B) {
	input := mustJSON(b, map[string]string{"text": prose(1<<20, 1)})
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := (ChunkExecutor{}).Execute(context.Background(), input); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEmbed1KB(b *testing.B) {
	texts := make([]string, 64)
	for i := range texts {
		texts[i] = prose(1024, uint64(i))[:1024]
	}
	v := make([]float32, DefaultDim)
	b.SetBytes(1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		EmbedInto(v, texts[i%len(texts)])
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "embeddings/s")
}

// populate stores n chunks of about 300 bytes each in collection "bench",
// 10 chunks per document, as index.add would lay them out.
func populate(b *testing.B, store storage.Store, n int) {
	b.Helper()
	ctx := context.Background()
	src := prose(n*300+4096, 99)
	vec := make([]float32, DefaultDim)
	for i, off := 0, 0; i < n; i++ {
		end := off + 300
		for end < len(src) && src[end] != ' ' {
			end++
		}
		text := src[off:end]
		off = end + 1
		if off+600 > len(src) {
			off = 0
		}
		EmbedInto(vec, text)
		if err := store.Put(ctx, chunkKey("bench", fmt.Sprintf("doc%06d", i/10), i%10), encodeChunk(vec, text), storage.Eventual); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSearch(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			store := openStore(b) // a real local Pebble store
			populate(b, store, n)
			x := IndexSearchExecutor{Store: store}
			queries := make([][]byte, 16)
			words := strings.Fields(prose(4096, 5))
			for i := range queries {
				queries[i] = mustJSON(b, SearchInput{Collection: "bench", Query: strings.Join(words[i*5:i*5+5], " "), K: ptr(10)})
			}
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := x.Execute(ctx, queries[i%len(queries)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkSearchList is the List part of BenchmarkSearch alone: reading
// every chunk of the collection out of the store.
func BenchmarkSearchList(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			store := openStore(b)
			populate(b, store, n)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := store.List(ctx, collectionPrefix("bench"), storage.ReadYourWrites); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScore is the scoring part of BenchmarkSearch alone: one dot
// product per chunk against vectors already in memory, per chunk.
func BenchmarkScore(b *testing.B) {
	q := Embed("some query words", DefaultDim)
	vec := encodeChunk(Embed(prose(300, 3), DefaultDim), "")[3:]
	b.ReportAllocs()
	var sink float32
	for b.Loop() {
		sink += dotBytes(q, vec)
	}
	_ = sink
}

func BenchmarkIndexAdd10KB(b *testing.B) {
	store := openStore(b)
	text := prose(10<<10, 4)
	input := mustJSON(b, AddInput{Collection: "bench", ID: "doc", Text: &text})
	x := IndexAddExecutor{Store: store}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.Execute(context.Background(), input); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSearchWholeList is the search as it was before paging, kept as
// the baseline of BenchmarkSearch: one List of the whole collection, then
// one dot product per chunk into the same top-k heap.
func BenchmarkSearchWholeList(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			store := openStore(b)
			populate(b, store, n)
			words := strings.Fields(prose(4096, 5))
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				query := strings.Join(words[(i%16)*5:(i%16)*5+5], " ")
				kvs, err := store.List(ctx, collectionPrefix("bench"), storage.ReadYourWrites)
				if err != nil {
					b.Fatal(err)
				}
				q := Embed(query, DefaultDim)
				top := make(topK, 0, 10)
				for j, kv := range kvs {
					if _, vec, _, ok := decodeChunk(kv.Value); ok {
						if s := dotBytes(q, vec); s > 0 {
							top.offer(10, hit{score: s, seq: j})
						}
					}
				}
				i++
			}
		})
	}
}
