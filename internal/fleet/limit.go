package fleet

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// Per-peer bound on the info requests this node answers. A well-behaved
// peer asks every 10 s, once more on connect and once for each network view
// it builds; a peer asking faster than AnswerRate (after a burst of
// AnswerBurst) gets its stream reset instead of an answer, counted as busy.
const (
	AnswerRate  = 2 // per second
	AnswerBurst = 10
	// maxLimiters bounds the peers tracked; beyond, the oldest are forgotten.
	maxLimiters = 4096
)

// askLimits holds one token bucket per asking peer.
type askLimits struct {
	mu     sync.Mutex
	byPeer map[peer.ID]*askLimit
}

type askLimit struct {
	lim  *rate.Limiter
	used time.Time
}

// allow reports whether p may be answered now.
func (l *askLimits) allow(p peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byPeer == nil {
		l.byPeer = map[peer.ID]*askLimit{}
	}
	a := l.byPeer[p]
	if a == nil {
		if len(l.byPeer) >= maxLimiters {
			l.forgetOldest()
		}
		a = &askLimit{lim: rate.NewLimiter(AnswerRate, AnswerBurst)}
		l.byPeer[p] = a
	}
	a.used = now
	return a.lim.AllowN(now, 1)
}

// forgetOldest drops the quarter of the limiters least recently used.
func (l *askLimits) forgetOldest() {
	var cutoff time.Time
	times := make([]time.Time, 0, len(l.byPeer))
	for _, a := range l.byPeer {
		times = append(times, a.used)
	}
	// the 25th percentile of last use
	for i := 0; i < len(times)/4; i++ {
		m := i
		for j := i + 1; j < len(times); j++ {
			if times[j].Before(times[m]) {
				m = j
			}
		}
		times[i], times[m] = times[m], times[i]
		cutoff = times[i]
	}
	for p, a := range l.byPeer {
		if !a.used.After(cutoff) {
			delete(l.byPeer, p)
		}
	}
}
