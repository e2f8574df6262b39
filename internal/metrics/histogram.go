package metrics

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// This file holds the node's own histogram: the duration histograms are
// observed on every storage operation, message and task, and client_golang's
// Histogram with native buckets costs 49 ns an observation on this machine
// (its sparse buckets live in a sync.Map), against 29 ns with classic buckets
// only. Ours keeps every counter in fixed arrays updated with atomics and
// exposes exactly what client_golang exposes for the same options (the
// equivalence is tested observation by observation in histogram_test.go).

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
// a power of two at schema 8: bucket i ends at nativeBounds8[i]. Schema s < 8
// uses every 2^(8-s)-th of them. These are the values of client_golang's
// nativeHistogramBounds table (github.com/prometheus/client_golang, Apache
// License 2.0), reproduced as data: they are up to 4 ulp below the correctly
// rounded 2^(i/256-1), and a value that falls exactly on a bound lands in the
// same bucket as in client_golang only if the bound is the same float.
var nativeBounds8 = [256]float64{
	0.5, 0.5013556375251013, 0.5027149505564014, 0.5040779490592088,
	0.5054446430258502, 0.5068150424757447, 0.5081891574554764, 0.509566998038869,
	0.5109485743270583, 0.5123338964485679, 0.5137229745593818, 0.5151158188430205,
	0.5165124395106142, 0.5179128468009786, 0.5193170509806894, 0.520725062344158,
	0.5221368912137069, 0.5235525479396449, 0.5249720429003435, 0.526395386502313,
	0.5278225891802786, 0.5292536613972564, 0.5306886136446309, 0.5321274564422321,
	0.5335702003384117, 0.5350168559101208, 0.5364674337629877, 0.5379219445313954,
	0.5393803988785598, 0.5408428074966075, 0.5423091811066545, 0.5437795304588847,
	0.5452538663326288, 0.5467321995364429, 0.5482145409081883, 0.549700901315111,
	0.5511912916539204, 0.5526857228508706, 0.5541842058618393, 0.5556867516724088,
	0.5571933712979462, 0.5587040757836845, 0.5602188762048033, 0.5617377836665098,
	0.5632608093041209, 0.564787964283144, 0.5663192597993595, 0.5678547070789026,
	0.5693943173783458, 0.5709381019847808, 0.572486072215902, 0.5740382394200894,
	0.5755946149764913, 0.5771552102951081, 0.5787200368168754, 0.5802891060137493,
	0.5818624293887887, 0.5834400184762408, 0.585021884841625, 0.5866080400818185,
	0.5881984958251406, 0.5897932637314379, 0.5913923554921704, 0.5929957828304968,
	0.5946035575013605, 0.5962156912915756, 0.5978321960199137, 0.5994530835371903,
	0.6010783657263515, 0.6027080545025619, 0.6043421618132907, 0.6059806996384005,
	0.6076236799902344, 0.6092711149137041, 0.6109230164863786, 0.6125793968185725,
	0.6142402680534349, 0.6159056423670379, 0.6175755319684665, 0.6192499490999082,
	0.620928906036742, 0.622612415087629, 0.6243004885946023, 0.6259931389331581,
	0.6276903785123455, 0.6293922197748583, 0.6310986751971253, 0.6328097572894031,
	0.6345254785958666, 0.6362458516947014, 0.637970889198196, 0.6397006037528346,
	0.6414350080393891, 0.6431741147730128, 0.6449179367033329, 0.6466664866145447,
	0.6484197773255048, 0.6501778216898253, 0.6519406325959679, 0.6537082229673385,
	0.6554806057623822, 0.6572577939746774, 0.659039800633032, 0.6608266388015788,
	0.6626183215798706, 0.6644148621029772, 0.6662162735415805, 0.6680225691020727,
	0.6698337620266515, 0.6716498655934177, 0.6734708931164728, 0.6752968579460171,
	0.6771277734684463, 0.6789636531064505, 0.6808045103191123, 0.6826503586020058,
	0.6845012114872953, 0.6863570825438342, 0.688217985377265, 0.690083933630119,
	0.6919549409819159, 0.6938310211492645, 0.6957121878859629, 0.6975984549830999,
	0.6994898362691555, 0.7013863456101023, 0.7032879969095076, 0.7051948041086352,
	0.7071067811865475, 0.7090239421602076, 0.7109463010845827, 0.7128738720527471,
	0.7148066691959849, 0.7167447066838943, 0.718687998724491, 0.7206365595643126,
	0.7225904034885232, 0.7245495448210174, 0.7265139979245261, 0.7284837772007218,
	0.7304588970903234, 0.7324393720732029, 0.7344252166684908, 0.7364164454346837,
	0.7384130729697496, 0.7404151139112358, 0.7424225829363761, 0.7444354947621984,
	0.7464538641456323, 0.7484777058836176, 0.7505070348132126, 0.7525418658117031,
	0.7545822137967112, 0.7566280937263048, 0.7586795205991071, 0.7607365094544071,
	0.762799075372269, 0.7648672334736434, 0.7669409989204777, 0.7690203869158282,
	0.7711054127039704, 0.7731960915705107, 0.7752924388424999, 0.7773944698885442,
	0.7795022001189185, 0.7816156449856788, 0.7837348199827764, 0.7858597406461707,
	0.7879904225539431, 0.7901268813264122, 0.7922691326262467, 0.7944171921585818,
	0.7965710756711334, 0.7987307989543135, 0.8008963778413465, 0.8030678282083853,
	0.805245165974627, 0.8074284071024302, 0.8096175675974316, 0.8118126635086642,
	0.8140137109286738, 0.8162207259936375, 0.8184337248834821, 0.820652723822003,
	0.8228777390769823, 0.8251087869603088, 0.8273458838280969, 0.8295890460808079,
	0.8318382901633681, 0.8340936325652911, 0.8363550898207981, 0.8386226785089391,
	0.8408964152537144, 0.8431763167241966, 0.8454623996346523, 0.8477546807446661,
	0.8500531768592616, 0.8523579048290255, 0.8546688815502312, 0.8569861239649629,
	0.8593096490612387, 0.8616394738731368, 0.8639756154809185, 0.8663180910111553,
	0.8686669176368529, 0.871022112577578, 0.8733836930995842, 0.8757516765159389,
	0.8781260801866495, 0.8805069215187917, 0.8828942179666361, 0.8852879870317771,
	0.8876882462632604, 0.890095013257712, 0.8925083056594671, 0.8949281411607002,
	0.8973545375015533, 0.8997875124702672, 0.9022270839033115, 0.9046732696855155,
	0.9071260877501991, 0.909585556079304, 0.9120516927035263, 0.9145245157024483,
	0.9170040432046711, 0.9194902933879467, 0.9219832844793128, 0.9244830347552253,
	0.9269895625416926, 0.92950288621441, 0.9320230241988943, 0.9345499949706191,
	0.9370838170551498, 0.93962450902828, 0.9421720895161669, 0.9447265771954693,
	0.9472879907934827, 0.9498563490882775, 0.9524316709088368, 0.9550139751351947,
	0.9576032806985735, 0.9601996065815236, 0.9628029718180622, 0.9654133954938133,
	0.9680308967461471, 0.9706554947643201, 0.9732872087896164, 0.9759260581154889,
	0.9785720620876999, 0.9812252401044634, 0.9838856116165875, 0.9865531961276168,
	0.9892280131939752, 0.9919100824251095, 0.9945994234836328, 0.9972960560854698,
}

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

// Histogram is one child of a HistogramVec: a classic histogram with, when
// its options ask for it, a native histogram beside it. It implements
// prometheus.Metric, prometheus.Observer and prometheus.ExemplarObserver, and
// prometheus.Collector, so that one made by NewHistogram can be registered
// alone.
type Histogram struct {
	fast fastPath // a copy of the layout's, saving a pointer hop in Observe

	// counts count the values in (2^nativeMinExp, 2^nativeMaxExp] by native
	// bucket at the configured schema and, within it, by classic bucket (see
	// fastPath): one counter an observation gives both buckets. classic
	// counts the other observations by classic bucket, the last being +Inf
	// (and NaN): with native buckets, those of the slow path.
	counts  []uint64
	sumBits atomic.Uint64
	l       *histLayout
	classic []uint64
	zero    atomic.Uint64 // native zero bucket: |v| <= zero threshold
	nan     atomic.Uint64 // NaN observations: in the count, in no native bucket

	mu       sync.Mutex     // guards pos and neg
	pos, neg map[int]uint64 // native buckets outside the array, by key of |v|

	exemplars  []atomic.Pointer[dto.Exemplar] // by classic bucket, +Inf last
	labelPairs []*dto.LabelPair
	created    time.Time
}

func newHistogramChild(l *histLayout, labelValues []string) *Histogram {
	h := &Histogram{
		fast:       l.fast,
		l:          l,
		classic:    make([]uint64, len(l.upper)+1),
		exemplars:  make([]atomic.Pointer[dto.Exemplar], len(l.upper)+1),
		labelPairs: prometheus.MakeLabelPairs(l.desc, labelValues),
		created:    time.Now(),
	}
	if l.native {
		h.counts = make([]uint64, l.counts)
	}
	return h
}

// Observe records v. It never allocates, and it takes no lock unless v is
// outside the native array (see nativeMinExp) and above the zero threshold
// or negative: a value in the array costs two atomic operations (its
// counter, which stands for its native and its classic bucket at once, and
// the sum as a compare-and-swap loop) and no search.
func (h *Histogram) Observe(v float64) {
	f := &h.fast
	if v > f.zt { // false for NaN, zero and negative values
		if slot := f.key(v) - int(f.keyLo); uint(slot) < uint(len(f.slots)) {
			s := &f.slots[slot]
			n := int(s.count)
			if v > s.bound {
				n += h.l.boundsBelow(v, int(s.classic))
			}
			atomic.AddUint64(&h.counts[n], 1)
			h.addSum(v)
			return
		}
	}
	h.observeSlow(v)
}

// observeSlow records what the array does not hold: values without native
// buckets, in the zero bucket, outside the array's range, negative, infinite
// or NaN. For a scrape running concurrently (see Write), the native bucket
// (or the zero bucket, or the NaN count) is incremented BEFORE the classic
// bucket.
func (h *Histogram) observeSlow(v float64) {
	l := h.l
	switch {
	case !l.native:
	case math.IsNaN(v):
		// The sum first: a scrape that sees this NaN counted sees a NaN sum,
		// which Prometheus requires of a count above the buckets' total.
		h.addSum(v)
		h.nan.Add(1)
		atomic.AddUint64(&h.classic[len(l.upper)], 1)
		return
	case v >= -l.zt && v <= l.zt:
		h.zero.Add(1)
	default:
		key := nativeKey(math.Abs(v), l.schema, l.bounds)
		h.mu.Lock()
		m := &h.pos
		if v < 0 {
			m = &h.neg
		}
		if *m == nil {
			*m = make(map[int]uint64)
		}
		(*m)[key]++
		h.mu.Unlock()
	}
	atomic.AddUint64(&h.classic[l.classicIndex(v)], 1)
	h.addSum(v)
}

// addSum adds v to the sum, a float64 kept as its bits: a compare-and-swap
// loop, exact as a float addition (concurrent observations are added in the
// order their swaps succeed).
func (h *Histogram) addSum(v float64) {
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// ObserveWithExemplar records v and keeps the exemplar (v, its labels, the
// current time) on the classic bucket of v, replacing the previous one, as
// client_golang does. Labels that client_golang would reject (an invalid or
// reserved name, a value that is not UTF-8, more than
// prometheus.ExemplarMaxRunes runes in names and values together) record v
// without an exemplar, where client_golang panics. nil labels record v alone.
// Unlike client_golang, no separate list of native-histogram exemplars is
// kept: Prometheus reads a native histogram's exemplars from its classic
// buckets when that list is empty.
func (h *Histogram) ObserveWithExemplar(v float64, labels prometheus.Labels) {
	h.Observe(v)
	if labels == nil {
		return
	}
	if e := newExemplar(v, time.Now(), labels); e != nil {
		h.exemplars[h.l.classicIndex(v)].Store(e)
	}
}

// newExemplar returns the exemplar, its labels sorted by name, or nil if
// the labels are invalid.
func newExemplar(v float64, ts time.Time, labels prometheus.Labels) *dto.Exemplar {
	names := make([]string, 0, len(labels))
	runes := 0
	for name, value := range labels {
		if !model.UTF8Validation.IsValidLabelName(name) || strings.HasPrefix(name, model.ReservedLabelPrefix) || !utf8.ValidString(value) {
			return nil
		}
		runes += utf8.RuneCountInString(name) + utf8.RuneCountInString(value)
		names = append(names, name)
	}
	if runes > prometheus.ExemplarMaxRunes {
		return nil
	}
	slices.Sort(names)
	e := &dto.Exemplar{Value: proto.Float64(v), Timestamp: timestamppb.New(ts)}
	for _, name := range names {
		e.Label = append(e.Label, &dto.LabelPair{Name: proto.String(name), Value: proto.String(labels[name])})
	}
	return e
}

// Desc implements prometheus.Metric.
func (h *Histogram) Desc() *prometheus.Desc { return h.l.desc }

// Describe implements prometheus.Collector.
func (h *Histogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.l.desc }

// Collect implements prometheus.Collector.
func (h *Histogram) Collect(ch chan<- prometheus.Metric) { ch <- h }

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
	his.Bucket = make([]*dto.Bucket, len(l.upper))
	var cum uint64
	for i, upper := range l.upper {
		cum += classic[i]
		his.Bucket[i] = &dto.Bucket{
			CumulativeCount: proto.Uint64(cum),
			UpperBound:      proto.Float64(upper),
			Exemplar:        h.exemplars[i].Load(),
		}
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
	h.mu.Unlock()
	byKey := func(a, b keyCount) int { return a.key - b.key }
	slices.SortFunc(below, byKey)
	slices.SortFunc(above, byKey)
	slices.SortFunc(neg, byKey)
	pos = below
	f := &h.fast
	for i, s := range f.slots {
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
	return append(pos, above...), neg
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
	var (
		spans  []*dto.BucketSpan
		deltas []int64
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

// HistogramVec is the node's replacement for prometheus.HistogramVec: the
// same options, label handling and exposition, with a cheaper Observe (see
// Histogram). Children are created by WithLabelValues and never deleted.
type HistogramVec struct {
	l          *histLayout
	labelNames []string

	mu       sync.Mutex
	byValues map[string]*Histogram
	children []*Histogram // in creation order, which Collect keeps
}

// NewHistogramVec returns a histogram family with the given variable labels.
// Of opts it honours:
//
//   - Namespace, Subsystem, Name, Help, Unit and ConstLabels, as in
//     client_golang (a label named "le" panics).
//   - Buckets, the classic upper bounds, strictly increasing (else it
//     panics), a trailing +Inf dropped. Nil or empty means
//     prometheus.DefBuckets when there are no native buckets, and no classic
//     buckets (only +Inf) when there are, as in client_golang.
//   - NativeHistogramBucketFactor: above 1 adds native buckets, at the schema
//     client_golang picks (the largest s in [-4, 8] whose factor 2^(2^-s) is
//     at most the one asked for).
//   - NativeHistogramZeroThreshold: the zero bucket holds |v| <= threshold;
//     0 means prometheus.DefNativeHistogramZeroThreshold (2^-128), a negative
//     value a threshold of 0.
//   - NativeHistogramMaxBucketNumber: enforced when exposing, not when
//     observing: while more buckets (positive and negative) are populated
//     than this, the exposed schema is lowered by one, merging each pair of
//     buckets into the one that covers both. The counts stay at full
//     resolution inside, so nothing is lost, and the exposed resolution
//     rises again never (counts only grow). 0 means no limit. client_golang
//     halves the resolution of its stored buckets at observation time instead,
//     which for the same observations yields the same exposition when each
//     observation adds at most one bucket.
//
// Ignored: NativeHistogramMinResetDuration (we never reset a histogram, which
// client_golang does when the bucket limit is hit after that duration),
// NativeHistogramMaxZeroThreshold (the zero bucket is never widened),
// NativeHistogramMaxExemplars and NativeHistogramExemplarTTL (no separate
// native exemplars, see ObserveWithExemplar).
func NewHistogramVec(opts prometheus.HistogramOpts, labelNames []string) *HistogramVec {
	return &HistogramVec{
		l:          newHistLayout(histDesc(opts, labelNames), opts),
		labelNames: slices.Clone(labelNames),
		byValues:   make(map[string]*Histogram),
	}
}

// NewHistogram returns a histogram without variable labels, which can be
// registered on its own (see NewHistogramVec for the options).
func NewHistogram(opts prometheus.HistogramOpts) *Histogram {
	return newHistogramChild(newHistLayout(histDesc(opts, nil), opts), nil)
}

func histDesc(opts prometheus.HistogramOpts, labelNames []string) *prometheus.Desc {
	for _, n := range labelNames {
		if n == model.BucketLabel {
			panic(fmt.Errorf("%q is not allowed as label name in histograms", n))
		}
	}
	if _, ok := opts.ConstLabels[model.BucketLabel]; ok {
		panic(fmt.Errorf("%q is not allowed as label name in histograms", model.BucketLabel))
	}
	return prometheus.V2.NewDesc(
		prometheus.BuildFQName(opts.Namespace, opts.Subsystem, opts.Name),
		opts.Help,
		prometheus.UnconstrainedLabels(labelNames),
		opts.ConstLabels,
		prometheus.WithUnit(opts.Unit),
	)
}

// WithLabelValues returns the child for the label values, in the order of
// the label names, creating it on first use. It panics on a wrong number of
// values or a value that is not UTF-8, as client_golang does. It takes a
// mutex: resolve children once, not on every observation.
func (v *HistogramVec) WithLabelValues(lvs ...string) *Histogram {
	if len(lvs) != len(v.labelNames) {
		panic(fmt.Errorf("inconsistent label cardinality: %q has %d variable labels named %q but %d values %q were provided",
			v.l.fqName, len(v.labelNames), v.labelNames, len(lvs), lvs))
	}
	for _, val := range lvs {
		if !utf8.ValidString(val) {
			panic(fmt.Errorf("label value %q is not valid UTF-8", val))
		}
	}
	key := strings.Join(lvs, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	if h, ok := v.byValues[key]; ok {
		return h
	}
	h := newHistogramChild(v.l, lvs)
	v.byValues[key] = h
	v.children = append(v.children, h)
	return h
}

// Describe implements prometheus.Collector.
func (v *HistogramVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.l.desc }

// Collect implements prometheus.Collector: the children in the order of
// their creation.
func (v *HistogramVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	children := slices.Clone(v.children)
	v.mu.Unlock()
	for _, h := range children {
		ch <- h
	}
}
