package task

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"math"
	"slices"
	"testing"
)

// reference builds the expected embedding from a list of features with the
// standard library's FNV-1a, independently of EmbedInto's incremental hashing.
func reference(dim int, unigrams []string, bigrams []string) []float32 {
	v := make([]float64, dim)
	add := func(s string, w float64) {
		h := fnv.New64a()
		h.Write([]byte(s))
		x := h.Sum64()
		if x>>63 != 0 {
			w = -w
		}
		v[x%uint64(dim)] += w
	}
	for _, u := range unigrams {
		add(u, 1)
	}
	for _, b := range bigrams {
		add(b, 0.5)
	}
	var sum float64
	for _, x := range v {
		sum += x * x
	}
	out := make([]float32, dim)
	for i, x := range v {
		out[i] = float32(x / math.Sqrt(sum))
	}
	return out
}

func TestEmbedMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		text    string
		dim     int
		uni, bi []string
	}{
		{"cat", 384, []string{"cat"}, nil},
		{"Cat Dog", 384, []string{"cat", "dog"}, []string{"cat dog"}},
		// Stop words are dropped before pairing; punctuation separates words.
		{"The bank of England, (rates)!", 384, []string{"bank", "england", "rates"}, []string{"bank england", "england rates"}},
		{"Éclair CAFÉ au-lait 42", 64, []string{"éclair", "café", "au", "lait", "42"}, []string{"éclair café", "café au", "au lait", "lait 42"}},
		{"日本語 テキスト", 128, []string{"日本語", "テキスト"}, []string{"日本語 テキスト"}},
	} {
		got := Embed(tc.text, tc.dim)
		want := reference(tc.dim, tc.uni, tc.bi)
		if !slices.Equal(got, want) {
			t.Errorf("Embed(%q) differs from the reference features %q + %q", tc.text, tc.uni, tc.bi)
		}
	}
}

func TestEmbedDeterministicAndNormalised(t *testing.T) {
	texts := []string{
		"Peer-to-peer networks route messages without a central server.",
		"Ünïcödé текст 日本語 with emoji 😀 and numbers 3.14159",
		"a", // a stop word and nothing else: zero vector
		"word",
		corpus[3].text,
	}
	for _, text := range texts {
		for _, dim := range []int{1, 16, 384, 1000} {
			a, b := Embed(text, dim), Embed(text, dim)
			if !slices.Equal(a, b) {
				t.Fatalf("Embed(%q, %d) is not deterministic", text, dim)
			}
			var sum float64
			for _, x := range a {
				sum += float64(x) * float64(x)
			}
			norm := math.Sqrt(sum)
			if text == "a" {
				if norm != 0 {
					t.Fatalf("Embed(%q) norm %v, want the zero vector", text, norm)
				}
				continue
			}
			if math.Abs(norm-1) > 1e-6 {
				t.Fatalf("Embed(%q, %d) norm = %.9f, want 1 within 1e-6", text, dim, norm)
			}
		}
	}
	// Case and punctuation do not matter.
	if !slices.Equal(Embed("Hello, World!", 384), Embed("hello world", 384)) {
		t.Fatal("case or punctuation changed the embedding")
	}
	// Empty input is the zero vector.
	if v := Embed("  ", 8); !slices.Equal(v, make([]float32, 8)) {
		t.Fatalf("Embed of blanks = %v", v)
	}
}

func TestEmbedSimilarity(t *testing.T) {
	a := Embed("The cat sat on the warm mat by the fire.", DefaultDim)
	similar := Embed("A cat is sitting on a warm mat near the fire.", DefaultDim)
	unrelated := Embed("Quarterly revenue growth exceeded analyst expectations in Europe.", DefaultDim)
	sim, unrel := Dot(a, similar), Dot(a, unrelated)
	t.Logf("cosine similar %.4f, unrelated %.4f", sim, unrel)
	if sim < 0.5 || math.Abs(float64(unrel)) > 0.1 || sim <= unrel {
		t.Fatalf("cosine(similar) = %.4f, cosine(unrelated) = %.4f; want similar >= 0.5 and |unrelated| <= 0.1", sim, unrel)
	}
	if self := Dot(a, a); math.Abs(float64(self)-1) > 1e-6 {
		t.Fatalf("cosine with itself = %v", self)
	}
}

func TestEmbedExecutor(t *testing.T) {
	ctx := context.Background()
	out, err := EmbedExecutor{}.Execute(ctx, []byte(`{"texts":["alpha beta","gamma"],"dim":16}`))
	if err != nil {
		t.Fatal(err)
	}
	var got EmbedOutput
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Dim != 16 || len(got.Vectors) != 2 || !slices.Equal(got.Vectors[0], Embed("alpha beta", 16)) || !slices.Equal(got.Vectors[1], Embed("gamma", 16)) {
		t.Fatalf("output %s", out)
	}
	again, err := EmbedExecutor{}.Execute(ctx, []byte(`{"texts":["alpha beta","gamma"],"dim":16}`))
	if err != nil || string(again) != string(out) {
		t.Fatalf("second run differs: %s vs %s (%v)", again, out, err)
	}
	out, err = EmbedExecutor{}.Execute(ctx, []byte(`{"text":"alpha beta"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Dim != DefaultDim || len(got.Vectors) != 1 || !slices.Equal(got.Vectors[0], Embed("alpha beta", DefaultDim)) {
		t.Fatalf("default dim output: dim %d, %d vectors", got.Dim, len(got.Vectors))
	}
	for _, in := range []string{
		`{"text":"a","texts":["b"]}`,
		`{}`,
		`{"text":"a","dim":0}`,
		`{"text":"a","dim":8193}`,
		`{"texts":[1]}`,
		`{"text":"a","extra":1}`,
		`"a"`,
	} {
		if _, err := (EmbedExecutor{}).Execute(ctx, []byte(in)); !errors.Is(err, ErrBadInput) {
			t.Errorf("text.embed(%s): err = %v, want ErrBadInput", in, err)
		}
	}
}
