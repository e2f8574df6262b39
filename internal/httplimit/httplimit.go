// Package httplimit makes slow and greedy HTTP clients cheap for the node's
// listeners: a cap on open connections, a floor rate and a total time limit
// for request bodies, a byte budget for bodies held in memory at once, and a
// shutdown that gives requests a short grace before closing what lingers.
package httplimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Defaults shared by the node's listeners.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultBodyTimeout       = 60 * time.Second
	DefaultMinBodyRate       = 4096 // bytes per second
	DefaultBodyGrace         = 2 * time.Second
	DefaultShutdownGrace     = 2 * time.Second
)

// ErrBodyTooSlow is the error a handler's body read returns once the body
// fell under the floor rate or overran the total limit.
var ErrBodyTooSlow = errors.New("request body too slow")

// LimitListener returns ln accepting at most maxConns open connections at
// once; a connection accepted beyond that is closed at once (the client sees a
// reset or EOF) so that excess clients cost no goroutine. maxConns <= 0
// returns ln unchanged.
func LimitListener(ln net.Listener, maxConns int) net.Listener {
	return LimitConns(ln, ConnLimits{Max: maxConns})
}

// Reasons a connection is closed at accept, as passed to ConnLimits.Refused:
// the configuration keys of the limits.
const (
	RefusedMax       = "max_connections"
	RefusedPerClient = "max_connections_per_client"
)

// ConnLimits bounds the open connections of a listener.
type ConnLimits struct {
	// Max is the number of open connections at once; <= 0 sets no limit
	// (and no per-client cap).
	Max int
	// PerClient is the share of Max one client may hold, so that one host
	// cannot take every connection and lock out the others (a scraper, a
	// probe). A client is a source IPv4 address, or the /64 of a source
	// IPv6 address, the block one host usually holds. <= 0, or at least
	// Max, sets no per-client cap.
	PerClient int
	// Refused, when set, is called with RefusedMax or RefusedPerClient for
	// every connection closed at accept, from the accepting goroutine.
	Refused func(reason string)
}

// LimitConns is LimitListener with the limits of l. The count of a client
// is kept only while it has open connections: at most l.Max entries.
func LimitConns(ln net.Listener, l ConnLimits) net.Listener {
	if l.Max <= 0 {
		return ln
	}
	ll := &limitListener{Listener: ln, sem: make(chan struct{}, l.Max), refused: l.Refused}
	if ll.refused == nil {
		ll.refused = func(string) {}
	}
	if l.PerClient > 0 && l.PerClient < l.Max {
		ll.perClient = l.PerClient
		ll.open = make(map[netip.Prefix]int)
	}
	return ll
}

type limitListener struct {
	net.Listener
	sem     chan struct{}
	refused func(reason string)

	perClient int
	mu        sync.Mutex
	open      map[netip.Prefix]int // open connections by client; nil without a per-client cap
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
		default:
			l.refused(RefusedMax) // counted before the client can see it
			_ = c.Close()
			continue
		}
		if l.open == nil {
			return &limitConn{Conn: c, release: l.releaseSlot}, nil
		}
		client, ok := clientOf(c.RemoteAddr())
		if !ok { // not an IP connection: only the total applies
			return &limitConn{Conn: c, release: l.releaseSlot}, nil
		}
		l.mu.Lock()
		n := l.open[client]
		if n >= l.perClient {
			l.mu.Unlock()
			l.releaseSlot()
			l.refused(RefusedPerClient)
			_ = c.Close()
			continue
		}
		l.open[client] = n + 1
		l.mu.Unlock()
		return &limitConn{Conn: c, release: func() { l.releaseClient(client) }}, nil
	}
}

func (l *limitListener) releaseSlot() { <-l.sem }

func (l *limitListener) releaseClient(client netip.Prefix) {
	l.mu.Lock()
	if n := l.open[client]; n > 1 {
		l.open[client] = n - 1
	} else {
		delete(l.open, client)
	}
	l.mu.Unlock()
	l.releaseSlot()
}

// clientOf returns the client a connection counts against: its source
// IPv4 address (IPv4-mapped IPv6 included) as a /32, or the /64 of its
// source IPv6 address.
func clientOf(a net.Addr) (netip.Prefix, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// BodyLimits bounds how a request body may arrive.
type BodyLimits struct {
	// Timeout is the longest a body may take in total (0: no total limit).
	Timeout time.Duration
	// MinRate is the floor rate in bytes per second, enforced after Grace
	// (0: no floor).
	MinRate int64
	// Grace is the time before the floor rate applies.
	Grace time.Duration
}

// SlowBody cuts request bodies that arrive under l.MinRate (after l.Grace) or
// take longer than l.Timeout: the connection's read deadline is moved before
// every read to the instant the body would fall behind, so the read fails,
// the handler gets an error (wrapping ErrBodyTooSlow) and the server closes
// the connection. It costs no goroutine per request.
func SlowBody(next http.Handler, l BodyLimits) http.Handler {
	if l.Timeout <= 0 && l.MinRate <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		b := &slowBody{rc: r.Body, ctl: http.NewResponseController(w), lim: l, start: time.Now()}
		b.arm()
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

type slowBody struct {
	rc    io.ReadCloser
	ctl   *http.ResponseController
	lim   BodyLimits
	start time.Time
	n     int64
	done  bool
	limit time.Time
}

// arm sets the read deadline to the earlier of the total limit and the
// instant the bytes read so far fall under the floor rate.
func (b *slowBody) arm() {
	var dl time.Time
	if b.lim.Timeout > 0 {
		dl = b.start.Add(b.lim.Timeout)
	}
	if b.lim.MinRate > 0 {
		behind := b.start.Add(b.lim.Grace + time.Duration(float64(b.n)/float64(b.lim.MinRate)*float64(time.Second)))
		if dl.IsZero() || behind.Before(dl) {
			dl = behind
		}
	}
	b.limit = dl
	_ = b.ctl.SetReadDeadline(dl)
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	b.arm()
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.done = true
		// The body is complete: lift the deadline so that the server's
		// background read on an idle keep-alive connection does not trip it.
		_ = b.ctl.SetReadDeadline(time.Time{})
		return n, err
	}
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		return n, fmt.Errorf("%w: %d bytes in %s: %w", ErrBodyTooSlow, b.n, time.Since(b.start).Round(time.Millisecond), err)
	}
	return n, err
}

func (b *slowBody) Close() error { return b.rc.Close() }

// Budget bounds the request-body bytes held at once by all requests of a
// listener. A request reserves its Content-Length (or, when unknown, the
// largest body a route accepts) before its handler runs and releases it when
// the handler returns.
type Budget struct {
	mu    sync.Mutex
	max   int64
	used  int64
	perRq int64
}

// NewBudget returns a budget of max bytes; perRequest is the most one request
// may reserve (its largest accepted body, used when Content-Length is unknown).
func NewBudget(max, perRequest int64) *Budget {
	if perRequest > max {
		perRequest = max
	}
	return &Budget{max: max, perRq: perRequest}
}

// TryAcquire reserves n bytes, or reports false when they do not fit.
func (b *Budget) TryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

// Release returns n bytes to the budget.
func (b *Budget) Release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// InUse is the number of bytes reserved now.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Limit wraps next: a request whose body does not fit in the budget is
// refused by refuse (which must answer, e.g. 503 with Retry-After); its body
// is read and dropped, never held. A nil budget returns next.
func (b *Budget) Limit(next http.Handler, refuse http.HandlerFunc) http.Handler {
	if b == nil || b.max <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		n := r.ContentLength
		if n < 0 || n > b.perRq {
			// Unknown length, or over the largest accepted body: the handler
			// reads at most perRequest (+1 to see the excess).
			n = b.perRq
		}
		if !b.TryAcquire(n) {
			// Read and drop the body (bounded by the per-request maximum and
			// the slow-body limits; nothing is held) so that the client reads
			// the refusal instead of a reset, then refuse.
			if _, err := io.CopyN(io.Discard, r.Body, b.perRq); err != nil && !errors.Is(err, io.EOF) {
				return
			}
			refuse(w, r)
			return
		}
		defer b.Release(n)
		next.ServeHTTP(w, r)
	})
}

// RetryAfter formats d as a Retry-After value in whole seconds (at least 1).
func RetryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds()))))
}

// Shutdown stops srv: it stops accepting, waits up to grace (or until ctx
// ends, whichever is first) for requests in flight, then closes every
// connection still open, so that a slow client cannot hold shutdown for the
// whole drain.
func Shutdown(ctx context.Context, srv *http.Server, grace time.Duration) error {
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	err := srv.Shutdown(gctx)
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Lingering connections: close them; that is the intended outcome.
		if cerr := srv.Close(); cerr != nil {
			return fmt.Errorf("closing lingering connections: %w", cerr)
		}
		return nil
	}
	return err
}
