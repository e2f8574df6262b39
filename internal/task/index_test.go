package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// corpus is ten short documents on distinct topics.
var corpus = []struct{ id, text string }{
	{"astronomy", "Astronomers observe distant galaxies and nebulae with large telescopes. The light from a supernova can outshine an entire galaxy. Planets orbit stars, and black holes bend light through gravity."},
	{"baking", "To bake sourdough bread, feed the starter, mix flour and water, and let the dough rise overnight. Knead gently, shape the loaf, and bake it in a hot oven until the crust is golden."},
	{"football", "The football match ended two to one after a late goal. The striker scored from a corner kick, the goalkeeper saved a penalty, and the referee showed a red card to the defender."},
	{"volcanoes", "Volcanoes erupt when magma rises through the crust. Lava flows, ash clouds and pyroclastic flows threaten nearby towns; geologists monitor seismic tremors and gas emissions to predict eruptions."},
	{"finance", "The central bank raised interest rates to curb inflation. Bond yields climbed, the stock market fell, and investors moved money into cash while mortgage costs increased."},
	{"gardening", "Plant tomatoes in spring after the last frost. Water the seedlings deeply, add compost to the soil, prune the suckers, and watch for aphids on the leaves of your vegetable garden."},
	{"networking", "A peer-to-peer network connects nodes directly without a central server. Each peer discovers others through a distributed hash table, opens encrypted streams and relays messages."},
	{"medicine", "The patient received a vaccine to build immunity against the virus. Doctors monitored blood pressure and heart rate, and prescribed antibiotics for the bacterial infection."},
	{"music", "The orchestra rehearsed the symphony: violins carried the melody, cellos held the harmony, and the conductor set the tempo for the final movement of the concerto."},
	{"cooking-pasta", "Boil salted water, cook the spaghetti until al dente, and toss it with garlic, olive oil, chili flakes and grated parmesan cheese for a quick Italian dinner."},
}

func addCorpus(t *testing.T, store storage.Store, collection string) {
	t.Helper()
	add := IndexAddExecutor{Store: store}
	for _, d := range corpus {
		out, err := add.Execute(testCtx(t), mustJSON(t, AddInput{Collection: collection, ID: d.id, Text: &d.text, Size: ptr(16), Overlap: ptr(4)}))
		if err != nil {
			t.Fatalf("index.add %s: %v", d.id, err)
		}
		var got AddOutput
		if err := json.Unmarshal(out, &got); err != nil || got.Collection != collection || got.ID != d.id || got.Chunks < 2 {
			t.Fatalf("index.add %s output %s (%v)", d.id, out, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func search(t *testing.T, store storage.Store, in SearchInput) SearchOutput {
	t.Helper()
	out, err := IndexSearchExecutor{Store: store}.Execute(testCtx(t), mustJSON(t, in))
	if err != nil {
		t.Fatalf("index.search %+v: %v", in, err)
	}
	var got SearchOutput
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestSearchRanksTheRightDocumentFirst(t *testing.T) {
	store := openStore(t)
	addCorpus(t, store, "docs")
	for _, tc := range []struct{ query, want string }{
		{"telescope images of a distant galaxy", "astronomy"},
		{"how long should bread dough rise", "baking"},
		{"who scored the goal in the match", "football"},
		{"lava and ash from an eruption", "volcanoes"},
		{"interest rates and inflation", "finance"},
		{"when to plant tomato seedlings", "gardening"},
		{"distributed hash table for peer discovery", "networking"},
		{"vaccine immunity against a virus", "medicine"},
		{"violins in the symphony orchestra", "music"},
		{"spaghetti with garlic and olive oil", "cooking-pasta"},
	} {
		got := search(t, store, SearchInput{Collection: "docs", Query: tc.query, K: ptr(3)})
		if len(got.Results) == 0 || got.Results[0].ID != tc.want {
			t.Errorf("query %q: top results %+v, want %s first", tc.query, got.Results, tc.want)
			continue
		}
		if len(got.Results) > 3 {
			t.Errorf("query %q: %d results for k=3", tc.query, len(got.Results))
		}
		for i, r := range got.Results {
			if r.Score <= 0 || r.Score > 1.000001 || (i > 0 && r.Score > got.Results[i-1].Score) {
				t.Errorf("query %q: result %d score %v out of order or range", tc.query, i, r.Score)
			}
			if !strings.Contains(docText(r.ID), r.Text) {
				t.Errorf("query %q: result %s/%d text %q is not from its document", tc.query, r.ID, r.Chunk, r.Text)
			}
		}
	}
}

func docText(id string) string {
	for _, d := range corpus {
		if d.id == id {
			return d.text
		}
	}
	return ""
}

func TestIndexAddStoresAndReplaces(t *testing.T) {
	store := openStore(t)
	ctx := testCtx(t)
	add := IndexAddExecutor{Store: store}
	text, _ := genText(30)
	if _, err := add.Execute(ctx, mustJSON(t, AddInput{Collection: "c", ID: "doc", Text: &text, Size: ptr(10), Overlap: ptr(0)})); err != nil {
		t.Fatal(err)
	}
	// A neighbouring id whose name extends "doc" must be untouched by re-adds.
	other := "x y z"
	if _, err := add.Execute(ctx, mustJSON(t, AddInput{Collection: "c", ID: "doc2", Text: &other})); err != nil {
		t.Fatal(err)
	}
	kvs, err := store.List(ctx, "index/c/", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"index/c/doc/000000", "index/c/doc/000001", "index/c/doc/000002", "index/c/doc2/000000"}
	if got := keysOf(kvs); !slices.Equal(got, want) {
		t.Fatalf("keys %q, want %q", got, want)
	}
	dim, vec, chunkText, ok := decodeChunk(kvs[1].Value)
	if !ok || dim != DefaultDim || len(vec) != 4*DefaultDim || strings.Join(strings.Fields(string(chunkText)), " ") != strings.Join(strings.Fields(text)[10:20], " ") {
		t.Fatalf("chunk 1: dim %d, %d vector bytes, text %q", dim, len(vec), chunkText)
	}
	if s := dotBytes(Embed(string(chunkText), DefaultDim), vec); s < 0.999999 || s > 1.000001 {
		t.Fatalf("stored vector is not the chunk's embedding: cosine %v", s)
	}
	// Re-adding with fewer chunks replaces and removes the stale ones.
	short := "only a few words here"
	out, err := add.Execute(ctx, mustJSON(t, AddInput{Collection: "c", ID: "doc", Text: &short}))
	if err != nil || string(out) != `{"collection":"c","id":"doc","chunks":1}` {
		t.Fatalf("re-add: %s, %v", out, err)
	}
	kvs, err = store.List(ctx, "index/c/", storage.Strong)
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(kvs); !slices.Equal(got, []string{"index/c/doc/000000", "index/c/doc2/000000"}) {
		t.Fatalf("after re-add keys %q", got)
	}
	if _, _, txt, _ := decodeChunk(kvs[0].Value); string(txt) != short {
		t.Fatalf("after re-add chunk text %q", txt)
	}
	// An empty text removes the document.
	empty := ""
	if out, err := add.Execute(ctx, mustJSON(t, AddInput{Collection: "c", ID: "doc", Text: &empty})); err != nil || !strings.Contains(string(out), `"chunks":0`) {
		t.Fatalf("empty re-add: %s, %v", out, err)
	}
	kvs, _ = store.List(ctx, "index/c/", storage.Strong)
	if got := keysOf(kvs); !slices.Equal(got, []string{"index/c/doc2/000000"}) {
		t.Fatalf("after empty re-add keys %q", got)
	}
}

func keysOf(kvs []storage.KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Key
	}
	return out
}

func TestSearchCollectionsAreSeparate(t *testing.T) {
	store := openStore(t)
	ctx := testCtx(t)
	add := IndexAddExecutor{Store: store}
	for _, c := range []struct{ coll, id, text string }{
		{"a", "one", "red apples and green pears"},
		{"ab", "two", "red apples and yellow bananas"},
	} {
		if _, err := add.Execute(ctx, mustJSON(t, AddInput{Collection: c.coll, ID: c.id, Text: &c.text})); err != nil {
			t.Fatal(err)
		}
	}
	got := search(t, store, SearchInput{Collection: "a", Query: "red apples"})
	if len(got.Results) != 1 || got.Results[0].ID != "one" || got.Results[0].Chunk != 0 || got.Results[0].Text != "red apples and green pears" || got.Collection != "a" {
		t.Fatalf("search a: %+v", got)
	}
	if got := search(t, store, SearchInput{Collection: "empty", Query: "red"}); got.Results == nil || len(got.Results) != 0 {
		t.Fatalf("search of an empty collection: %+v", got)
	}
}

func TestIndexBadInput(t *testing.T) {
	store := openStore(t)
	ctx := testCtx(t)
	long := strings.Repeat("x", MaxCollectionBytes+1)
	for _, in := range []string{
		`{"collection":"","id":"a","text":"t"}`,
		`{"collection":"a/b","id":"a","text":"t"}`,
		`{"collection":"` + long + `","id":"a","text":"t"}`,
		`{"collection":"c","id":"","text":"t"}`,
		`{"collection":"c","id":"x/y","text":"t"}`,
		`{"collection":"c","id":"tab\there","text":"t"}`,
		`{"collection":"c","id":"` + strings.Repeat("y", MaxDocIDBytes+1) + `","text":"t"}`,
		`{"collection":"c","id":"a"}`,
		`{"collection":"c","id":"a","text":"t","size":2,"overlap":2}`,
	} {
		if _, err := (IndexAddExecutor{Store: store}).Execute(ctx, []byte(in)); !errors.Is(err, ErrBadInput) {
			t.Errorf("index.add(%.80s): err = %v, want ErrBadInput", in, err)
		}
	}
	for _, in := range []string{
		`{"collection":"c","query":""}`,
		`{"collection":"c","query":"   "}`,
		`{"collection":"","query":"q"}`,
		`{"collection":"c/d","query":"q"}`,
		`{"collection":"c","query":"q","k":0}`,
		`{"collection":"c","query":"q","k":101}`,
		`{"collection":"c","query":"q","top":3}`,
	} {
		if _, err := (IndexSearchExecutor{Store: store}).Execute(ctx, []byte(in)); !errors.Is(err, ErrBadInput) {
			t.Errorf("index.search(%s): err = %v, want ErrBadInput", in, err)
		}
	}
}

func TestSearchDefaultAndMaxK(t *testing.T) {
	store := openStore(t)
	ctx := testCtx(t)
	for i := range 120 {
		text := "shared topic words" // identical documents: identical scores
		if err := store.Put(ctx, chunkKey("many", fmt.Sprintf("d%03d", i), 0), encodeChunk(Embed(text, DefaultDim), text), storage.Eventual); err != nil {
			t.Fatal(err)
		}
	}
	if got := search(t, store, SearchInput{Collection: "many", Query: "shared topic"}); len(got.Results) != DefaultK {
		t.Fatalf("default k: %d results", len(got.Results))
	}
	got := search(t, store, SearchInput{Collection: "many", Query: "shared topic", K: ptr(MaxK)})
	if len(got.Results) != MaxK {
		t.Fatalf("k=100: %d results", len(got.Results))
	}
	// All 120 score the same; ties keep the earliest keys, in key order.
	for i, r := range got.Results {
		if r.ID != fmt.Sprintf("d%03d", i) {
			t.Fatalf("tie order: result %d is %s", i, r.ID)
		}
	}
}

func TestTopKMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		n, k := rng.IntN(300), 1+rng.IntN(20)
		all := make([]hit, n)
		var top topK
		for i := range all {
			all[i] = hit{score: float32(rng.IntN(50)) / 50, seq: i} // many ties
			top.offer(k, all[i])
		}
		slices.SortFunc(all, func(a, b hit) int {
			if b.worse(a) {
				return -1
			}
			if a.worse(b) {
				return 1
			}
			return 0
		})
		want := all[:min(k, n)]
		if got := top.sorted(); !slices.Equal(got, want) {
			t.Fatalf("trial %d (n=%d k=%d): top-k %v, want %v", trial, n, k, got, want)
		}
	}
}

func TestSearchStopsOnCancel(t *testing.T) {
	store := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (IndexSearchExecutor{Store: store}).Execute(ctx, []byte(`{"collection":"c","query":"q"}`)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
