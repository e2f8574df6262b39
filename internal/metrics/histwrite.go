package metrics

import (
	"math"
	"slices"
	"sync/atomic"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// keyCount is a populated native bucket.
type keyCount struct {
	key   int
	count uint64
}

// Write implements prometheus.Metric with the fields client_golang's
// Histogram sets: the count, the sum, the cumulative classic buckets (without
// +Inf unless it holds an exemplar), the creation time and, with native
// buckets, the schema, the zero bucket and the populated buckets as spans
// and deltas.
//
// It reads without a lock while observations go on, so it must not expose a
// torn histogram. Prometheus rejects a native histogram whose count differs
// from the total of its buckets (zero bucket included) unless its sum is NaN,
// and a rejected sample fails the whole scrape. So the count is not a counter
// of its own: with native buckets it is derived from the very native counts
// exposed (plus the NaN observations, which make the sum NaN), and it equals
// their total by construction. A value in the array has one counter for its
// native and its classic bucket, read once for both. The slow path's classic
// counters are read BEFORE its native ones while observeSlow increments the
// native bucket BEFORE the classic one: every classic increment seen belongs
// to an observation whose native increment is seen too, so each cumulative
// classic count is at most the count (the +Inf bucket, which the expositions
// derive from the count, stays the largest). Without native buckets the
// count is the total of the classic buckets.
func (h *Histogram) Write(out *dto.Metric) error {
	l := h.l
	classic := make([]uint64, len(h.classic))
	for i := range classic {
		classic[i] = atomic.LoadUint64(&h.classic[i])
	}
	his := &dto.Histogram{CreatedTimestamp: timestamppb.New(h.created)}
	var count uint64
	if l.native {
		nan := h.nan.Load()
		zero := h.zero.Load()
		pos, neg := h.nativeBuckets(classic)
		count = nan + zero
		for _, b := range pos {
			count += b.count
		}
		for _, b := range neg {
			count += b.count
		}
		schema := l.schema
		for l.max > 0 && len(pos)+len(neg) > int(l.max) && schema > nativeSchemaMin {
			pos, neg = halveResolution(pos), halveResolution(neg)
			schema--
		}
		his.Schema = proto.Int32(schema)
		his.ZeroThreshold = proto.Float64(l.zt)
		his.ZeroCount = proto.Uint64(zero)
		his.NegativeSpan, his.NegativeDelta = spansAndDeltas(neg)
		his.PositiveSpan, his.PositiveDelta = spansAndDeltas(pos)
		if l.zt == 0 && zero == 0 && len(pos) == 0 && len(neg) == 0 {
			// As client_golang: an empty span marks a native histogram that
			// has nothing else to tell it from a classic one.
			his.PositiveSpan = []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(0)}}
		}
	} else {
		for _, c := range classic {
			count += c
		}
	}
	his.SampleCount = proto.Uint64(count)
	his.SampleSum = proto.Float64(math.Float64frombits(h.sumBits.Load()))
	// The buckets and the values their fields point to are allocated
	// together, a few slices per Write instead of three objects a bucket.
	n := len(l.upper)
	buckets := make([]dto.Bucket, n)
	cums := make([]uint64, n)
	uppers := slices.Clone(l.upper)
	his.Bucket = make([]*dto.Bucket, n, n+1)
	var cum uint64
	for i := range n {
		cum += classic[i]
		cums[i] = cum
		b := &buckets[i]
		b.CumulativeCount, b.UpperBound, b.Exemplar = &cums[i], &uppers[i], h.exemplars[i].Load()
		his.Bucket[i] = b
	}
	if e := h.exemplars[len(l.upper)].Load(); e != nil {
		his.Bucket = append(his.Bucket, &dto.Bucket{
			CumulativeCount: proto.Uint64(count),
			UpperBound:      proto.Float64(math.Inf(+1)),
			Exemplar:        e,
		})
	}
	out.Histogram = his
	out.Label = h.labelPairs
	return nil
}

// nativeBuckets returns the populated native buckets, positive and
// negative, sorted by key, at the configured schema, and adds the values of
// the array to their classic buckets in classic.
func (h *Histogram) nativeBuckets(classic []uint64) (pos, neg []keyCount) {
	h.mu.Lock()
	var below, above []keyCount
	if len(h.pos) > 0 {
		above = make([]keyCount, 0, len(h.pos))
	}
	for k, c := range h.pos {
		if k < int(h.fast.keyLo) {
			below = append(below, keyCount{k, c})
		} else {
			above = append(above, keyCount{k, c})
		}
	}
	for k, c := range h.neg {
		neg = append(neg, keyCount{k, c})
	}
	skipArray := h.arrayEmptyLocked()
	h.mu.Unlock()
	byKey := func(a, b keyCount) int { return a.key - b.key }
	slices.SortFunc(below, byKey)
	slices.SortFunc(above, byKey)
	slices.SortFunc(neg, byKey)
	pos = below
	f := &h.fast
	for i, s := range f.slots {
		if skipArray {
			break
		}
		end := len(h.counts)
		if i+1 < len(f.slots) {
			end = int(f.slots[i+1].count)
		}
		var n uint64
		for j := int(s.count); j < end; j++ {
			c := atomic.LoadUint64(&h.counts[j])
			classic[int(s.classic)+j-int(s.count)] += c
			n += c
		}
		if n > 0 {
			pos = append(pos, keyCount{int(f.keyLo) + i, n})
		}
	}
	h.shownFromArray(len(pos) > len(below))
	return append(pos, above...), neg
}

// arrayEmptyLocked reports, with h.mu held, that no observation in the
// native array can have finished, so a scrape may leave the array out
// without scanning it: most series of an idle node are empty, and the scan
// is most of what they cost a scrape. Every observation in the array adds
// a positive value to the sum after its count, and a negative one enters
// neg under h.mu before it touches the sum; so with neg empty and the sum
// zero at this instant, the array holds only observations in progress,
// which the next scrape shows. Once a scrape has shown a count from the
// array (shownFromArray) the array is never left out again, so an
// observation caught in progress and shown cannot disappear later.
func (h *Histogram) arrayEmptyLocked() bool {
	return len(h.neg) == 0 && h.sumBits.Load() == 0 && !h.arrayShown.Load()
}

// shownFromArray records that a scrape exposed a count from the array.
func (h *Histogram) shownFromArray(shown bool) {
	if shown && !h.arrayShown.Load() {
		h.arrayShown.Store(true)
	}
}

// halveResolution returns the buckets at the schema one lower, in place.
// Prometheus defines it: bucket k of schema s-1 covers buckets 2k-1 and 2k of
// schema s, so bucket k goes to ceil(k/2).
func halveResolution(bs []keyCount) []keyCount {
	out := bs[:0]
	for _, b := range bs {
		k := (b.key + 1) >> 1 // ceil(k/2), negative keys included
		if n := len(out); n > 0 && out[n-1].key == k {
			out[n-1].count += b.count
		} else {
			out = append(out, keyCount{k, b.count})
		}
	}
	return out
}

// spansAndDeltas encodes populated buckets, sorted by key, the way
// client_golang does: spans of consecutive buckets, the first span's offset
// being the first key and every other's the number of empty buckets since
// the previous span; a gap of one or two empty buckets does not open a new
// span but is carried inside it as buckets of count 0. Each delta is the
// bucket's count minus the previous bucket's (the first's minus 0), across
// spans and carried empty buckets alike.
func spansAndDeltas(bs []keyCount) ([]*dto.BucketSpan, []int64) {
	if len(bs) == 0 {
		return nil, nil
	}
	// Every bucket but the first may open a span or carry up to two empty
	// ones: allocate for the common case at once.
	var (
		spans  = make([]*dto.BucketSpan, 0, 4)
		deltas = make([]int64, 0, 2*len(bs))
		length uint32
		prev   int64
	)
	next := 0 // the key after the last bucket encoded
	add := func(count int64) {
		deltas = append(deltas, count-prev)
		prev = count
		length++
	}
	for n, b := range bs {
		gap := b.key - next
		if n == 0 || gap > 2 {
			if n > 0 {
				spans[len(spans)-1].Length = proto.Uint32(length)
			}
			spans = append(spans, &dto.BucketSpan{Offset: proto.Int32(int32(gap))})
			length = 0
		} else {
			for range gap {
				add(0)
			}
		}
		add(int64(b.count))
		next = b.key + 1
	}
	spans[len(spans)-1].Length = proto.Uint32(length)
	return spans, deltas
}
