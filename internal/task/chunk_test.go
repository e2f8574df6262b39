package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// genText builds n words w0..w(n-1) separated by varied whitespace and
// returns the text with each word's byte span.
func genText(n int) (string, []span) {
	seps := []string{" ", "  ", "\n", "\t", " \r\n "}
	var b strings.Builder
	spans := make([]span, n)
	for i := range n {
		if i > 0 {
			b.WriteString(seps[i%len(seps)])
		}
		w := fmt.Sprintf("w%d", i)
		spans[i] = span{b.Len(), b.Len() + len(w)}
		b.WriteString(w)
	}
	return b.String(), spans
}

func TestChunkWindowsExact(t *testing.T) {
	for _, tc := range []struct{ n, size, overlap, want int }{
		{n: 1000, size: 256, overlap: 32, want: 5}, // starts 0,224,448,672; 672+256 < 1000 -> 896
		{n: 10, size: 4, overlap: 1, want: 3},      // [0,4) [3,7) [6,10)
		{n: 256, size: 256, overlap: 32, want: 1},
		{n: 257, size: 256, overlap: 32, want: 2},
		{n: 5, size: 10, overlap: 2, want: 1},
		{n: 100, size: 10, overlap: 0, want: 10},
		{n: 7, size: 1, overlap: 0, want: 7},
		{n: 50, size: 8, overlap: 7, want: 43},
	} {
		t.Run(fmt.Sprintf("n%d_size%d_overlap%d", tc.n, tc.size, tc.overlap), func(t *testing.T) {
			text, spans := genText(tc.n)
			chunks, err := ChunkText(text, tc.size, tc.overlap)
			if err != nil {
				t.Fatal(err)
			}
			if len(chunks) != tc.want {
				t.Fatalf("%d chunks, want %d", len(chunks), tc.want)
			}
			stride := tc.size - tc.overlap
			for j, c := range chunks {
				first := j * stride
				last := min(first+tc.size, tc.n) // exclusive
				want := Chunk{Index: j, Start: spans[first].start, End: spans[last-1].end, Tokens: last - first}
				want.Text = text[want.Start:want.End]
				if c != want {
					t.Fatalf("chunk %d = %+v, want %+v", j, c, want)
				}
				if got := strings.Fields(c.Text); len(got) != c.Tokens || got[0] != fmt.Sprintf("w%d", first) || got[len(got)-1] != fmt.Sprintf("w%d", last-1) {
					t.Fatalf("chunk %d words %q..., want w%d..w%d", j, got[0], first, last-1)
				}
				if j > 0 {
					// The overlap is exact: the previous chunk's last words open this one.
					prev := strings.Fields(chunks[j-1].Text)
					if tail, head := prev[len(prev)-tc.overlap:], strings.Fields(c.Text)[:tc.overlap]; strings.Join(tail, " ") != strings.Join(head, " ") {
						t.Fatalf("chunk %d overlap %q, previous ends %q", j, head, tail)
					}
				}
			}
			if chunks[len(chunks)-1].End != len(text) {
				t.Fatalf("last chunk ends at %d, text is %d bytes", chunks[len(chunks)-1].End, len(text))
			}
		})
	}
}

// words returns "a0 a1 ... a(n-1)" with the given tokens replaced.
func words(n int, replace map[int]string) string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = fmt.Sprintf("a%d", i)
		if r, ok := replace[i]; ok {
			ws[i] = r
		}
	}
	return strings.Join(ws, " ")
}

func TestChunkSentenceBoundary(t *testing.T) {
	// size 10, overlap 2: a sentence end may shorten a window to 8 tokens
	// (the last 20%), never less.
	for _, tc := range []struct {
		name   string
		text   string
		ranges [][2]int // token ranges [first, last) of the chunks
	}{
		{"period at token 7 cuts at 8", words(30, map[int]string{7: "a7."}),
			[][2]int{{0, 8}, {6, 16}, {14, 24}, {22, 30}}},
		{"latest boundary wins", words(20, map[int]string{3: "a3.", 8: `a8?"`, 7: "a7!"}),
			[][2]int{{0, 9}, {7, 17}, {15, 20}}},
		{"boundary before the last 20% is ignored", words(20, map[int]string{6: "a6."}),
			[][2]int{{0, 10}, {8, 18}, {16, 20}}},
		{"closing bracket after the period", words(20, map[int]string{8: "a8.)"}),
			[][2]int{{0, 9}, {7, 17}, {15, 20}}},
		{"not a sentence end", words(20, map[int]string{8: "a8,", 9: "3.5x"}),
			[][2]int{{0, 10}, {8, 18}, {16, 20}}},
		{"the last window is not cut", words(12, map[int]string{10: "a10."}),
			[][2]int{{0, 10}, {8, 12}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunks, err := ChunkText(tc.text, 10, 2)
			if err != nil {
				t.Fatal(err)
			}
			toks := strings.Fields(tc.text)
			if len(chunks) != len(tc.ranges) {
				t.Fatalf("%d chunks %v, want %d", len(chunks), texts(chunks), len(tc.ranges))
			}
			for j, r := range tc.ranges {
				want := strings.Join(toks[r[0]:r[1]], " ")
				if c := chunks[j]; c.Text != want || c.Tokens != r[1]-r[0] || tc.text[c.Start:c.End] != c.Text {
					t.Fatalf("chunk %d = %q (%d tokens, [%d:%d]), want %q", j, c.Text, c.Tokens, c.Start, c.End, want)
				}
			}
		})
	}
}

func texts(cs []Chunk) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Text
	}
	return out
}

func TestChunkSentenceBoundaryDefaults(t *testing.T) {
	// Prose of 2000 words in sentences of 7 to 19 words: with the defaults
	// every window but the last ends at a sentence (some boundary always
	// falls in its last 51 tokens) and keeps 205 to 256 tokens.
	var b strings.Builder
	for i, s := 0, 0; i < 2000; s++ {
		n := 7 + s%13
		for j := 0; j < n && i < 2000; j, i = j+1, i+1 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "word%d", i)
			if j == n-1 {
				b.WriteString([]string{".", "!", "?"}[s%3])
			}
		}
	}
	text := b.String()
	chunks, err := ChunkText(text, DefaultChunkSize, DefaultChunkOverlap)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range chunks[:len(chunks)-1] {
		if !endsSentence(c.Text) || c.Tokens < 205 || c.Tokens > 256 {
			t.Fatalf("chunk %d: %d tokens ending %q", i, c.Tokens, c.Text[len(c.Text)-10:])
		}
		next := strings.Fields(chunks[i+1].Text)[:DefaultChunkOverlap]
		prev := strings.Fields(c.Text)
		if strings.Join(prev[len(prev)-DefaultChunkOverlap:], " ") != strings.Join(next, " ") {
			t.Fatalf("chunk %d: overlap with the next chunk is not %d tokens", i, DefaultChunkOverlap)
		}
	}
	if last := chunks[len(chunks)-1]; last.End != len(text) {
		t.Fatalf("last chunk ends at %d of %d", last.End, len(text))
	}
}

func TestChunkUnicode(t *testing.T) {
	// Multi-byte words and separators (NBSP, ideographic space, em space).
	vocab := []string{"héllo", "日本語", "😀emoji", "Ωμέγα", "naïve", "Ж", "𝔘𝔫𝔦", "ﬁne", "e\u0301", "中文。"}
	seps := []string{" ", "\u00a0", "\u3000", "\u2003", "\n"}
	var b strings.Builder
	for i := range 997 {
		if i > 0 {
			b.WriteString(seps[i%len(seps)])
		}
		b.WriteString(vocab[i%len(vocab)])
	}
	text := b.String()
	toks := strings.Fields(text)
	if len(toks) != 997 {
		t.Fatalf("self-check: %d tokens", len(toks))
	}
	for _, sz := range [][2]int{{7, 3}, {10, 2}, {256, 32}, {1, 0}} {
		chunks, err := ChunkText(text, sz[0], sz[1])
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range chunks {
			if !utf8.ValidString(c.Text) {
				t.Fatalf("size %d: chunk %d is not valid UTF-8", sz[0], i)
			}
			if text[c.Start:c.End] != c.Text || !utf8.RuneStart(text[c.Start]) || (c.End < len(text) && !utf8.RuneStart(text[c.End])) {
				t.Fatalf("size %d: chunk %d [%d:%d] does not slice on rune boundaries", sz[0], i, c.Start, c.End)
			}
			if got := strings.Fields(c.Text); len(got) != c.Tokens || got[0] != toks[i*(sz[0]-sz[1])] {
				t.Fatalf("size %d: chunk %d starts %q with %d tokens", sz[0], i, got[0], c.Tokens)
			}
		}
	}
	// A text of one multi-byte word.
	chunks, err := ChunkText("\u3000日本語\u00a0", 4, 1)
	if err != nil || len(chunks) != 1 || chunks[0].Text != "日本語" || chunks[0].Start != 3 || chunks[0].End != 12 {
		t.Fatalf("chunks = %+v, %v", chunks, err)
	}
}

func TestChunkEmpty(t *testing.T) {
	for _, text := range []string{"", " ", " \n\t\u00a0\u3000 "} {
		chunks, err := ChunkText(text, 10, 2)
		if err != nil || len(chunks) != 0 {
			t.Fatalf("ChunkText(%q) = %v, %v; want zero chunks", text, chunks, err)
		}
		out, err := ChunkExecutor{}.Execute(context.Background(), mustJSON(t, map[string]string{"text": text}))
		if err != nil || string(out) != `{"chunks":[]}` {
			t.Fatalf("text.chunk(%q) = %s, %v", text, out, err)
		}
	}
}

func TestChunkExecutor(t *testing.T) {
	out, err := ChunkExecutor{}.Execute(context.Background(), []byte(`{"text":"one two three four five","size":2,"overlap":1}`))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"chunks":[` +
		`{"index":0,"text":"one two","start":0,"end":7,"tokens":2},` +
		`{"index":1,"text":"two three","start":4,"end":13,"tokens":2},` +
		`{"index":2,"text":"three four","start":8,"end":18,"tokens":2},` +
		`{"index":3,"text":"four five","start":14,"end":23,"tokens":2}]}`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
	// size alone: overlap defaults to min(32, size/8) = 2.
	text, _ := genText(30)
	out, err = ChunkExecutor{}.Execute(context.Background(), mustJSON(t, map[string]any{"text": text, "size": 16}))
	if err != nil {
		t.Fatal(err)
	}
	var got ChunkOutput
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Chunks) != 2 || got.Chunks[1].Tokens != 16 || !strings.HasPrefix(got.Chunks[1].Text, "w14") {
		t.Fatalf("size 16 default overlap: %+v", got.Chunks)
	}
}

func TestChunkBadInput(t *testing.T) {
	for _, in := range []string{
		`{"text":"a b","size":4,"overlap":4}`,
		`{"text":"a b","size":4,"overlap":5}`,
		`{"text":"a b","size":0}`,
		`{"text":"a b","size":-1}`,
		`{"text":"a b","overlap":-1}`,
		`{"text":"a b","size":65537}`,
		`{"text":"a b","size":8}` + "x",
		`{"text":5}`,
		`{"txt":"a b"}`,
		`{}`,
		`[]`,
		`"a b"`,
		``,
	} {
		if _, err := (ChunkExecutor{}).Execute(context.Background(), []byte(in)); !errors.Is(err, ErrBadInput) {
			t.Errorf("text.chunk(%s): err = %v, want ErrBadInput", in, err)
		}
	}
}
