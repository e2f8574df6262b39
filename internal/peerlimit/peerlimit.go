// Package peerlimit bounds how often each remote peer may make the node do
// a piece of work: one token bucket per peer, the set of buckets itself
// bounded (the least recently used are forgotten), so a stranger cannot
// make the node spend beyond the rate, and many strangers cannot make it
// keep state without bound.
package peerlimit

import (
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxPeers bounds the peers tracked when New is given 0.
const DefaultMaxPeers = 4096

// Limits holds one token bucket per peer. It is safe for concurrent use.
type Limits struct {
	rate     rate.Limit
	burst    int
	maxPeers int

	mu     sync.Mutex
	byPeer map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

// New returns limits of perSecond with bursts of burst for each peer,
// tracking at most maxPeers peers (0: DefaultMaxPeers).
func New(perSecond float64, burst, maxPeers int) *Limits {
	if maxPeers <= 0 {
		maxPeers = DefaultMaxPeers
	}
	return &Limits{rate: rate.Limit(perSecond), burst: burst, maxPeers: maxPeers, byPeer: map[string]*bucket{}}
}

// Allow reports whether peer may be served now, taking a token if so.
func (l *Limits) Allow(peer string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.byPeer[peer]
	if b == nil {
		if len(l.byPeer) >= l.maxPeers {
			l.forgetOldest()
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.byPeer[peer] = b
	}
	b.used = now
	return b.lim.AllowN(now, 1)
}

// forgetOldest drops the quarter of the buckets least recently used.
func (l *Limits) forgetOldest() {
	times := make([]time.Time, 0, len(l.byPeer))
	for _, b := range l.byPeer {
		times = append(times, b.used)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	cutoff := times[len(times)/4]
	for p, b := range l.byPeer {
		if !b.used.After(cutoff) {
			delete(l.byPeer, p)
		}
	}
}
