package task

import (
	"context"
	"errors"
	"runtime"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// CodeBusy is the failure code of a task refused because the executing node
// had no free slot nor room in its queue (or the requesting peer used its
// share). The requester tries another peer, else runs it locally.
const CodeBusy = "busy"

// CodeTooLarge is the failure code of a task whose output would exceed the
// limit of its destination (a p2p message, a stored record).
const CodeTooLarge = "too_large"

// DefaultMaxQueued is the queue bound when Options.MaxQueued is zero.
const DefaultMaxQueued = 64

// ErrBusy means the engine refused a task at once: no execution slot and no
// room in the queue. The API maps it to 503.
var ErrBusy = errors.New("node busy: too many tasks")

// DefaultMaxConcurrent returns the default bound of executing tasks,
// max(2, NumCPU).
func DefaultMaxConcurrent() int { return max(2, runtime.NumCPU()) }

// peerKey is the context key of the requesting peer of an Execute call.
type peerKey struct{}

// WithPeer returns ctx carrying the peer that requested the task, so that
// Execute charges it to that peer's share.
func WithPeer(ctx context.Context, p string) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

func peerOf(ctx context.Context) string {
	p, _ := ctx.Value(peerKey{}).(string)
	return p
}

// admission bounds the tasks executing at once (running), those waiting for
// a slot (queued), and the share of running+queued one requester may hold.
type admission struct {
	slots    chan struct{}
	maxQueue int
	share    int

	running, queued prometheus.Gauge

	mu      sync.Mutex
	waiting int
	byPeer  map[string]int
}

func newAdmission(maxRun, maxQueue int, running, queued prometheus.Gauge) *admission {
	return &admission{
		slots:    make(chan struct{}, maxRun),
		maxQueue: maxQueue,
		share:    max(1, (maxRun+maxQueue)/2),
		running:  running,
		queued:   queued,
		byPeer:   make(map[string]int),
	}
}

// full reports whether a new task would be refused now.
func (a *admission) full() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.slots) >= cap(a.slots) && a.waiting >= a.maxQueue
}

// acquire takes an execution slot for a task requested by who ("" for this
// node, which has no share limit). It refuses at once with ErrBusy when the
// queue is full or who holds its share; otherwise it waits for a slot until
// ctx ends. release must be called once the task has ended.
func (a *admission) acquire(ctx context.Context, who string) (release func(), err error) {
	a.mu.Lock()
	if who != "" && a.byPeer[who] >= a.share {
		a.mu.Unlock()
		return nil, ErrBusy
	}
	select {
	case a.slots <- struct{}{}:
	default:
		if a.waiting >= a.maxQueue {
			a.mu.Unlock()
			return nil, ErrBusy
		}
		a.waiting++
		a.byPeer[who]++
		a.queued.Inc()
		a.mu.Unlock()
		select {
		case a.slots <- struct{}{}:
		case <-ctx.Done():
			a.mu.Lock()
			a.waiting--
			a.dropPeer(who)
			a.queued.Dec()
			a.mu.Unlock()
			return nil, ctx.Err()
		}
		a.mu.Lock()
		a.waiting--
		a.queued.Dec()
		a.byPeer[who]-- // re-added below
	}
	a.byPeer[who]++
	a.running.Inc()
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			<-a.slots
			a.mu.Lock()
			a.dropPeer(who)
			a.running.Dec()
			a.mu.Unlock()
		})
	}, nil
}

func (a *admission) dropPeer(who string) {
	if a.byPeer[who]--; a.byPeer[who] <= 0 {
		delete(a.byPeer, who)
	}
}
