package task

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"unicode"
	"unicode/utf8"
)

// Embedding parameters.
const (
	// DefaultDim is the embedding dimension used by text.embed when none is
	// given, and by index.add for every stored chunk.
	DefaultDim = 384
	// MaxDim bounds the dim of text.embed.
	MaxDim = 8192
	// MaxEmbedTexts bounds the number of texts in one text.embed task.
	MaxEmbedTexts = 4096
	// bigramWeight is the weight of a word bigram relative to a unigram (1).
	bigramWeight = 0.5
)

// FNV-1a 64-bit parameters.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// stopWords are frequent English function words left out of the features:
// they occur in every text and would make unrelated texts look alike.
var stopWords = func() map[uint64]struct{} {
	words := []string{
		"a", "an", "the", "and", "or", "but", "not", "no", "nor", "of", "to", "in", "on", "at",
		"for", "with", "by", "from", "into", "about", "as", "than", "then", "so", "if",
		"is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
		"has", "have", "had", "can", "could", "will", "would", "shall", "should", "may", "might", "must",
		"it", "its", "this", "that", "these", "those", "there", "here",
		"i", "me", "my", "we", "our", "you", "your", "he", "him", "his", "she", "her",
		"they", "them", "their", "what", "which", "who", "whom", "how", "when", "where", "why",
	}
	m := make(map[uint64]struct{}, len(words))
	for _, w := range words {
		h := uint64(fnvOffset)
		for i := 0; i < len(w); i++ {
			h = (h ^ uint64(w[i])) * fnvPrime
		}
		m[h] = struct{}{}
	}
	return m
}()

// Embed returns the dim-dimensional embedding of text. See EmbedInto.
func Embed(text string, dim int) []float32 {
	v := make([]float32, dim)
	EmbedInto(v, text)
	return v
}

// EmbedInto writes the embedding of text into v (dimension len(v)).
//
// This is feature hashing, not a neural model: the text is lower-cased and
// split into words (maximal runs of letters and digits); English stop words
// are dropped; every remaining word (weight 1) and every pair of consecutive
// remaining words (weight 0.5) is hashed with FNV-1a 64, the hash modulo
// len(v) picks the component and its top bit the sign (+ or -), and the
// vector is scaled to unit L2 norm. The same text always gives the same
// vector on every platform, so vectors from different nodes are comparable.
// Texts without words give the zero vector. Similarity reflects shared
// words and word pairs, not meaning: synonyms do not match.
func EmbedInto(v []float32, text string) {
	clear(v)
	dim := uint64(len(v))
	if dim == 0 {
		return
	}
	add := func(h uint64, w float32) {
		if h>>63 != 0 {
			w = -w
		}
		v[h%dim] += w
	}
	var (
		uni, bi  uint64 = fnvOffset, 0
		prev     uint64 // FNV state after the previous word and a space
		havePrev bool
		inWord   bool
		buf      [utf8.UTFMax]byte
	)
	emit := func() {
		inWord = false
		if _, stop := stopWords[uni]; !stop {
			add(uni, 1)
			if havePrev {
				add(bi, bigramWeight)
			}
			prev, havePrev = (uni^' ')*fnvPrime, true
		}
		uni = fnvOffset
	}
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			default:
				if inWord {
					emit()
				}
				continue
			}
			if !inWord {
				inWord, bi = true, prev
			}
			uni = (uni ^ uint64(c)) * fnvPrime
			bi = (bi ^ uint64(c)) * fnvPrime
			continue
		}
		r, w := utf8.DecodeRuneInString(text[i:])
		i += w
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			if inWord {
				emit()
			}
			continue
		}
		if !inWord {
			inWord, bi = true, prev
		}
		n := utf8.EncodeRune(buf[:], unicode.ToLower(r))
		for _, b := range buf[:n] {
			uni = (uni ^ uint64(b)) * fnvPrime
			bi = (bi ^ uint64(b)) * fnvPrime
		}
	}
	if inWord {
		emit()
	}
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	if sum == 0 {
		return
	}
	inv := 1 / math.Sqrt(sum)
	for i, x := range v {
		v[i] = float32(float64(x) * inv)
	}
}

// Dot returns the dot product of a and b over their common length; for unit
// vectors it is their cosine similarity.
func Dot(a, b []float32) float32 {
	n := min(len(a), len(b))
	a, b = a[:n], b[:n]
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// EmbedExecutor is the text.embed executor.
type EmbedExecutor struct{}

// EmbedInput is the input of text.embed: exactly one of Text and Texts.
type EmbedInput struct {
	Text  *string  `json:"text,omitempty"`
	Texts []string `json:"texts,omitempty"`
	Dim   *int     `json:"dim,omitempty"`
}

// EmbedOutput is the output of text.embed: one vector per input text, in order.
type EmbedOutput struct {
	Dim     int         `json:"dim"`
	Vectors [][]float32 `json:"vectors"`
}

// checkDim checks an embedding dimension against its range.
func checkDim(dim int) error {
	if dim < 1 || dim > MaxDim {
		return fmt.Errorf("%w: dim %d out of range 1..%d", ErrBadInput, dim, MaxDim)
	}
	return nil
}

// Type returns "text.embed".
func (EmbedExecutor) Type() string { return TypeEmbed }

// Execute embeds the input text or texts.
func (EmbedExecutor) Execute(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	var in EmbedInput
	if err := decodeInput(input, &in); err != nil {
		return nil, err
	}
	dim := DefaultDim
	if in.Dim != nil {
		dim = *in.Dim
	}
	if err := checkDim(dim); err != nil {
		return nil, err
	}
	texts := in.Texts
	switch {
	case in.Text != nil && in.Texts != nil:
		return nil, fmt.Errorf("%w: give text or texts, not both", ErrBadInput)
	case in.Text != nil:
		texts = []string{*in.Text}
	case in.Texts == nil:
		return nil, fmt.Errorf("%w: text or texts is required", ErrBadInput)
	case len(in.Texts) > MaxEmbedTexts:
		return nil, fmt.Errorf("%w: %d texts exceeds %d", ErrBadInput, len(in.Texts), MaxEmbedTexts)
	}
	out := EmbedOutput{Dim: dim, Vectors: make([][]float32, len(texts))}
	flat := make([]float32, dim*len(texts))
	for i, t := range texts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out.Vectors[i] = flat[i*dim : (i+1)*dim : (i+1)*dim]
		EmbedInto(out.Vectors[i], t)
	}
	return json.Marshal(out)
}
