package task

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Chunking defaults and bounds, in tokens (whitespace-separated words).
const (
	DefaultChunkSize    = 256
	DefaultChunkOverlap = 32
	MaxChunkSize        = 1 << 16
)

// Chunk is one window of a text. Start and End are byte offsets into the
// (JSON-decoded, UTF-8) input: input[Start:End] == Text.
type Chunk struct {
	Index  int    `json:"index"`
	Text   string `json:"text"`
	Start  int    `json:"start"`
	End    int    `json:"end"`
	Tokens int    `json:"tokens"`
}

// span is the byte range of one token.
type span struct{ start, end int }

// asciiSpace marks the ASCII bytes unicode.IsSpace accepts.
var asciiSpace = [utf8.RuneSelf]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// tokenize appends the byte spans of the whitespace-separated words of s.
// Boundaries fall on rune boundaries, so slicing never splits a UTF-8 sequence.
func tokenize(s string, spans []span) []span {
	start := -1
	for i := 0; i < len(s); {
		c, w, space := s[i], 1, false
		if c < utf8.RuneSelf {
			space = asciiSpace[c]
		} else {
			var r rune
			r, w = utf8.DecodeRuneInString(s[i:])
			space = unicode.IsSpace(r)
		}
		if space {
			if start >= 0 {
				spans = append(spans, span{start, i})
				start = -1
			}
		} else if start < 0 {
			start = i
		}
		i += w
	}
	if start >= 0 {
		spans = append(spans, span{start, len(s)})
	}
	return spans
}

// endsSentence reports whether a token closes a sentence: its last character,
// ignoring closing quotes and brackets, is '.', '!' or '?'. The token is
// followed by whitespace by construction.
func endsSentence(tok string) bool {
	tok = strings.TrimRightFunc(tok, func(r rune) bool {
		switch r {
		case '"', '\'', ')', ']', '}', '»', '’', '”':
			return true
		}
		return false
	})
	if tok == "" {
		return false
	}
	switch tok[len(tok)-1] {
	case '.', '!', '?':
		return true
	}
	return false
}

// ChunkText splits text into windows of size tokens, each overlapping the
// previous by overlap tokens. A window that is not the last ends early at a
// sentence boundary when one falls within its last 20%. Requires
// 1 <= size <= MaxChunkSize and 0 <= overlap < size. An empty or all-space
// text has zero chunks.
func ChunkText(text string, size, overlap int) ([]Chunk, error) {
	if err := checkWindow(size, overlap); err != nil {
		return nil, err
	}
	toks := tokenize(text, make([]span, 0, len(text)/6+1))
	n := len(toks)
	chunks := make([]Chunk, 0, estimateChunks(n, size, overlap))
	// A sentence cut keeps at least minLen tokens and more than overlap, so
	// every window advances the start.
	minLen := max(size-size/5, overlap+1)
	for i := 0; i < n; {
		end := min(i+size, n)
		if end < n {
			for l := size; l >= minLen; l-- {
				t := toks[i+l-1]
				if endsSentence(text[t.start:t.end]) {
					end = i + l
					break
				}
			}
		}
		s, e := toks[i].start, toks[end-1].end
		chunks = append(chunks, Chunk{Index: len(chunks), Text: text[s:e], Start: s, End: e, Tokens: end - i})
		if end == n {
			break
		}
		i = end - overlap
	}
	return chunks, nil
}

func estimateChunks(n, size, overlap int) int {
	if n == 0 {
		return 0
	}
	if n <= size {
		return 1
	}
	return 1 + (n-size+size-overlap-1)/(size-overlap)
}

// checkWindow checks a window's size and overlap against their ranges.
func checkWindow(size, overlap int) error {
	if size < 1 || size > MaxChunkSize {
		return fmt.Errorf("%w: size %d out of range 1..%d", ErrBadInput, size, MaxChunkSize)
	}
	if overlap < 0 || overlap >= size {
		return fmt.Errorf("%w: overlap %d must be >= 0 and < size %d", ErrBadInput, overlap, size)
	}
	return nil
}

// window checks that the text of a text.chunk or index.add request is
// given and applies the defaults of the optional window parameters they
// share: size 256; overlap 32, or size/8 when that is smaller, so that a
// small size given alone is valid.
func window(text *string, sizeIn, overlapIn *int) (size, overlap int, err error) {
	if text == nil {
		return 0, 0, fmt.Errorf("%w: text is required", ErrBadInput)
	}
	size = DefaultChunkSize
	if sizeIn != nil {
		size = *sizeIn
	}
	overlap = min(DefaultChunkOverlap, size/8)
	if overlapIn != nil {
		overlap = *overlapIn
	}
	return size, overlap, nil
}

// chunkRequest cuts the required text of a text.chunk or index.add request
// into the windows its size and overlap (defaulted by window) ask for.
func chunkRequest(text *string, sizeIn, overlapIn *int) ([]Chunk, error) {
	size, overlap, err := window(text, sizeIn, overlapIn)
	if err != nil {
		return nil, err
	}
	return ChunkText(*text, size, overlap)
}

// ChunkExecutor is the text.chunk executor.
type ChunkExecutor struct{}

// ChunkInput is the input of text.chunk.
type ChunkInput struct {
	Text    *string `json:"text"`
	Size    *int    `json:"size,omitempty"`
	Overlap *int    `json:"overlap,omitempty"`
}

// ChunkOutput is the output of text.chunk.
type ChunkOutput struct {
	Chunks []Chunk `json:"chunks"`
}

// Type returns "text.chunk".
func (ChunkExecutor) Type() string { return TypeChunk }

// Execute splits the input text into token windows.
func (ChunkExecutor) Execute(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	var in ChunkInput
	if err := decodeInput(input, &in); err != nil {
		return nil, err
	}
	chunks, err := chunkRequest(in.Text, in.Size, in.Overlap)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return json.Marshal(ChunkOutput{Chunks: chunks})
}
