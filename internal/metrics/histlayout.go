package metrics

import (
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Range of the fixed array of native buckets. Values in (2^nativeMinExp,
// 2^nativeMaxExp], about 0.9 picoseconds to 194 days when the unit is the
// second, are counted in the array without a lock; anything else (smaller,
// larger, negative, infinite, NaN) takes a slow path under a mutex. At schema
// 3 (bucket factor 1.1) the array holds 513 native buckets, plus one counter
// per classic bound in the range (see fastPath): 531 counters (4.2 KiB) per
// child of storage_operation_duration_seconds; at the finest schema, 8,
// 16,385 buckets (128 KiB).
const (
	nativeMinExp = -40
	nativeMaxExp = 24
)

// Schemas that client_golang (and Prometheus) accept for exponential native
// histograms: schema s has 2^s buckets per power of two, bucket factor 2^(2^-s).
const (
	nativeSchemaMin = -4
	nativeSchemaMax = 8
)

// nativeBounds8 are the upper bounds, within [0.5, 1), of the 256 buckets of
// a power of two at schema 8: bucket i ends at 2^(i/256 - 1). Schema s < 8
// uses every 2^(8-s)-th of them. A value within a few ulp of a bound may land
// in the neighbouring bucket in another implementation (client_golang keeps a
// table whose values differ from these by up to a few ulp); the buckets are
// the same everywhere else.
var nativeBounds8 = func() (b [256]float64) {
	for i := range b {
		b[i] = math.Exp2(float64(i)/256 - 1)
	}
	return b
}()

// fracBounds returns the bucket upper bounds within [0.5, 1) of one power of
// two at schema s > 0 ({0.5} for s <= 0).
func fracBounds(s int32) []float64 {
	if s <= 0 {
		return []float64{0.5}
	}
	step := 1 << (nativeSchemaMax - s)
	b := make([]float64, 0, 1<<s)
	for i := 0; i < len(nativeBounds8); i += step {
		b = append(b, nativeBounds8[i])
	}
	return b
}

// pickSchema returns the schema for a native bucket factor, as client_golang
// does: the largest schema s whose factor 2^(2^-s) is at most factor, within
// [-4, 8] (a factor below 2^(2^-8), about 1.0027, still gets schema 8).
// factor must exceed 1.
func pickSchema(factor float64) int32 {
	floor := math.Floor(math.Log2(math.Log2(factor)))
	switch {
	case floor <= -nativeSchemaMax:
		return nativeSchemaMax
	case floor >= -nativeSchemaMin:
		return nativeSchemaMin
	default:
		return -int32(floor)
	}
}

// nativeKey returns the index of the native bucket of v > 0 (+Inf included)
// at schema s, with the boundary semantics of Prometheus and client_golang:
// bucket k covers (base^(k-1), base^k], base = 2^(2^-s), the bounds being
// those of fracBounds. +Inf gets the bucket after that of math.MaxFloat64, as
// in client_golang. This is the reference the fast path of Observe agrees
// with (TestNativeKeyFastPath); it is used off the hot path.
func nativeKey(v float64, s int32, bounds []float64) int {
	inf := math.IsInf(v, +1)
	if inf {
		v = math.MaxFloat64
	}
	frac, exp := math.Frexp(v)
	var key int
	if s > 0 {
		// The first bound >= frac: the upper bound is inclusive.
		i, _ := slices.BinarySearch(bounds, frac)
		key = i + (exp-1)*len(bounds)
	} else {
		key = exp
		if frac == 0.5 {
			key--
		}
		key = (key + 1<<-s - 1) >> -s
	}
	if inf {
		key++
	}
	return key
}

// histLayout is what the children of one HistogramVec share: options and
// the lookup tables of the fast path.
type histLayout struct {
	desc   *prometheus.Desc
	fqName string
	upper  []float64 // classic upper bounds, without +Inf
	native bool
	schema int32
	zt     float64 // zero threshold
	max    uint32  // NativeHistogramMaxBucketNumber; 0: no limit
	bounds []float64
	fast   fastPath
	counts int // of the native array of a child
}

// fastPath is what Observe reads, laid out so that an observation touches
// few cache lines (the first line of the Histogram, one entry of frac, one of
// slots, one counter): a message's observation comes after the kernel's
// network path has evicted them, and each miss costs more than the
// arithmetic.
//
// The native bucket comes from the bits of the float, without a search. A
// positive normal float is 1.m * 2^(e-1023) = 0.5*1.m * 2^(e-1022), so its
// bucket at schema t >= 0 is (e-1023)<<t + i, i the index of the first bound
// >= 0.5*1.m. All bounds lie in [0.5, 1) and share one exponent, so comparing
// them is comparing their 52-bit mantissas. The top t+1 bits of m select one
// of 2^(t+1) cells of [0.5, 1), each narrower than the narrowest bucket
// (0.5/2^(t+1) = 0.25/2^t against 0.5*(2^(2^-t)-1) >= 0.34/2^t), so a cell
// holds at most one bound: frac[c] is the first bound at or above the start
// of cell c, and one comparison of m against it gives i. A negative schema
// merges 2^-s buckets of schema 0 by a shift, as client_golang does.
//
// The classic bucket comes from the native one: slots[k-keyLo] knows the
// first classic bound that is not below the values of native bucket k.
// Unless the bucket straddles that bound, a value's classic bucket is that
// bound's, and its counter is the slot's first; a value above it (in the
// slot) counts in the next counter, and so on if more bounds fall in the
// slot. One counter thus stands for a native and a classic bucket at once.
type fastPath struct {
	zt     float64    // values <= zt take the slow path; +Inf without native buckets
	frac   []fracCell // by the top t+1 bits of the mantissa
	slots  []slotInfo // by native key - keyLo
	keyLo  int32      // native key of the first slot
	shift  uint8      // 52 - (t+1)
	t      uint8      // max(schema, 0)
	coarse uint8      // -schema for a negative schema, else 0
}

// fracCell is one cell of [0.5, 1) (see fastPath).
type fracCell struct {
	mant uint64 // mantissa of the first bound at or above the cell's start; above any for none
	i    int64  // index of that bound
}

// slotInfo is one native bucket of the array (see fastPath).
type slotInfo struct {
	bound   float64 // the first classic bound not below the slot's values, +Inf for none
	classic int32   // its index: the number of classic bounds below every value of the slot
	count   int32   // index of the slot's first counter
}

const mantMask = 1<<52 - 1

// key returns the native key of v, a positive normal float (any other
// float gives a key outside the array).
func (f *fastPath) key(v float64) int {
	bits := math.Float64bits(v)
	m := bits & mantMask
	c := f.frac[m>>f.shift]
	i := int(c.i)
	if m > c.mant {
		i++
	}
	key := (int(bits>>52)-1023)<<f.t + i
	if f.coarse != 0 {
		key = (key + 1<<f.coarse - 1) >> f.coarse
	}
	return key
}

func newHistLayout(desc *prometheus.Desc, opts prometheus.HistogramOpts) *histLayout {
	l := &histLayout{desc: desc, fqName: prometheus.BuildFQName(opts.Namespace, opts.Subsystem, opts.Name), upper: opts.Buckets}
	l.native = opts.NativeHistogramBucketFactor > 1
	if len(l.upper) == 0 && !l.native {
		l.upper = prometheus.DefBuckets
	}
	for i, b := range l.upper {
		if i < len(l.upper)-1 {
			if b >= l.upper[i+1] {
				panic(fmt.Errorf("histogram buckets must be in increasing order: %f >= %f", b, l.upper[i+1]))
			}
		} else if math.IsInf(b, +1) {
			l.upper = l.upper[:i] // the +Inf bucket is implicit
		}
	}
	l.upper = slices.Clone(l.upper)
	l.fast.zt = math.Inf(+1)
	if !l.native {
		return l
	}
	switch {
	case opts.NativeHistogramZeroThreshold > 0:
		l.zt = opts.NativeHistogramZeroThreshold
	case opts.NativeHistogramZeroThreshold == 0:
		l.zt = prometheus.DefNativeHistogramZeroThreshold
	} // negative: a threshold of zero
	l.schema = pickSchema(opts.NativeHistogramBucketFactor)
	l.max = opts.NativeHistogramMaxBucketNumber
	l.bounds = fracBounds(l.schema)

	f := &l.fast
	f.zt = l.zt
	t := uint(max(l.schema, 0))
	f.t = uint8(t)
	f.coarse = uint8(max(-l.schema, 0))
	f.shift = uint8(52 - (t + 1))
	mant := make([]uint64, len(l.bounds)+1)
	for i, b := range l.bounds {
		mant[i] = math.Float64bits(b) & mantMask
	}
	mant[len(l.bounds)] = math.MaxUint64
	f.frac = make([]fracCell, 1<<(t+1))
	j := 0
	for c := range f.frac {
		start := uint64(c) << f.shift
		for mant[j] < start {
			j++
		}
		if j+1 < len(l.bounds) && mant[j+1] < start+1<<f.shift {
			panic("metrics: two native bucket bounds in one cell") // cannot happen, see fastPath
		}
		f.frac[c] = fracCell{mant: mant[j], i: int64(j)}
	}
	keyLo := nativeKey(math.Ldexp(1, nativeMinExp), l.schema, l.bounds)
	keyHi := nativeKey(math.Ldexp(1, nativeMaxExp), l.schema, l.bounds)
	f.keyLo = int32(keyLo)
	// A classic bound in a native bucket before a slot's is below every
	// value of the slot (a bucket's values exceed the previous bucket's upper
	// bound); one in a later bucket is above every value of the slot.
	boundKeys := make([]int, len(l.upper))
	for i, b := range l.upper {
		boundKeys[i] = math.MinInt
		if b > 0 {
			boundKeys[i] = nativeKey(b, l.schema, l.bounds)
		}
	}
	f.slots = make([]slotInfo, keyHi-keyLo+1)
	k, counts := 0, 0
	for i := range f.slots {
		for k < len(boundKeys) && boundKeys[k] < keyLo+i {
			k++
		}
		bound := math.Inf(+1)
		if k < len(l.upper) {
			bound = l.upper[k]
		}
		f.slots[i] = slotInfo{bound: bound, classic: int32(k), count: int32(counts)}
		counts++ // and one per classic bound in the slot:
		for b := k; b < len(boundKeys) && boundKeys[b] == keyLo+i; b++ {
			counts++
		}
	}
	l.counts = counts
	return l
}

// boundsBelow returns the number of classic bounds from the k-th on that
// are below v, v being above the k-th.
func (l *histLayout) boundsBelow(v float64, k int) int {
	n := k + 1
	for n < len(l.upper) && v > l.upper[n] {
		n++
	}
	return n - k
}

// classicIndex returns the classic bucket of v: the first upper bound >= v,
// or len(upper) (the +Inf bucket) for a larger value or NaN.
func (l *histLayout) classicIndex(v float64) int {
	if math.IsNaN(v) {
		return len(l.upper)
	}
	i, _ := slices.BinarySearch(l.upper, v)
	return i
}
