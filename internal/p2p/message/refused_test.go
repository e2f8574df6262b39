package message

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

// withInboundMessageStreams gives the node's host a resource manager that
// accepts at most n message streams from one peer, as a peer of an older
// build (16) or a stricter operator's does.
func withInboundMessageStreams(tb testing.TB, n int) nodeOpt {
	tb.Helper()
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	limits.AddProtocolPeerLimit(protocol.ID(ProtocolID),
		rcmgr.BaseLimit{StreamsInbound: n, StreamsOutbound: n, Streams: 2 * n, Memory: 32 << 20},
		rcmgr.BaseLimitIncrease{})
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		tb.Fatal(err)
	}
	return withHost(libp2p.ResourceManager(rm))
}

// startedWithin reports whether n values arrive on started within d.
func startedWithin(started <-chan struct{}, n int, d time.Duration) bool {
	timeout := time.After(d)
	for range n {
		select {
		case <-started:
		case <-timeout:
			return false
		}
	}
	return true
}

// awaitStarted waits for n values on started, for at most 10 s.
func awaitStarted(t *testing.T, started <-chan struct{}, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i := range n {
		select {
		case <-started:
		case <-timeout:
			t.Fatalf("%d of %d requests started in 10 s", i, n)
		}
	}
}

// admittedInbound is the number of inbound message streams n's resource
// manager still counts (from every peer). It can exceed inboundStreams for a
// moment: the swarm releases a stream's resources only once the service's
// stream handler has returned, after the service has let go of it.
func admittedInbound(t *testing.T, n *testNode) int {
	t.Helper()
	var count int
	err := n.h.Network().ResourceManager().ViewProtocol(protocol.ID(ProtocolID), func(s network.ProtocolScope) error {
		count = s.Stat().NumStreamsInbound
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return count
}

// learnedLimit reports how many exclusive streams A now gives p (-1: none
// learned) and how many requests wait for one of them.
func (n *testNode) learnedLimit(p peer.ID) (limit, waiting int) {
	pl := &n.svc.excl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	limit = -1
	if l, ok := pl.limits[p]; ok {
		limit = l
	}
	if ps := pl.peers[p]; ps != nil {
		waiting = len(ps.waiters)
	}
	return limit, waiting
}

// TestPeerRefusingStreams: B accepts only 4 message streams from A. Six
// requests are held at once: B takes 4 and refuses the rest, an exclusive
// stream when A may open 16 (2 refused), the shared stream when A may open
// only 4 (1 refused, the case of a peer of an older build, which accepts 16
// where we open 16 and the shared one). The refused requests were not
// handled, so they wait for one of the 4 streams and are answered once B
// answers; none fails. A then keeps 3 exclusive streams to B (and the
// shared one, within B's 4), and eight more requests in flight at once are
// refused nothing.
func TestPeerRefusingStreams(t *testing.T) {
	for _, tc := range []struct {
		exclusive, refused int
	}{{16, 2}, {4, 1}} {
		t.Run(fmt.Sprintf("exclusive=%d", tc.exclusive), func(t *testing.T) {
			testPeerRefusingStreams(t, tc.exclusive, tc.refused)
		})
	}
}

func testPeerRefusingStreams(t *testing.T, exclusive, refused int) {
	a := newTestNode(t, withService(func(c *ServiceConfig) { c.ExclusiveStreams = exclusive }))
	b := newTestNode(t, withInboundMessageStreams(t, 4))
	connect(t, a, b)
	started, release := heldReplies(b)

	n := 4 + refused
	errs := requestsInFlight(a, b, n)
	awaitStarted(t, started, 4)
	p2ptest.Eventually(t, 10*time.Second, "A learns B's limit and the refused requests wait", func() bool {
		limit, waiting := a.learnedLimit(b.h.ID())
		return limit == 3 && waiting == refused
	})
	if got := inboundStreams(b); got != 4 {
		t.Fatalf("B serves %d message streams, want its limit, 4", got)
	}
	select {
	case <-started:
		t.Fatal("B started a request beyond its stream limit")
	default:
	}
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	p2ptest.Eventually(t, 10*time.Second, "A keeps 3 exclusive streams to B", func() bool {
		idle, count, busy := a.pool(b.h.ID())
		return idle == 3 && count == 3 && busy == 0
	})
	// Until B has let go of the fourth exclusive stream too, and its
	// resource manager with it, it would refuse the shared one (A would
	// then give it 2). A's shared stream exists when B took it before one
	// of the exclusive ones.
	p2ptest.Eventually(t, 10*time.Second, "B serves and admits A's kept streams and no others", func() bool {
		want := 3
		if outboundOf(a, b.h.ID()) != nil {
			want++
		}
		return inboundStreams(b) == want && admittedInbound(t, b) == want
	})

	// Eight at once now: 3 exclusive streams and the shared one, which
	// B accepts, so nothing is refused and the limit stays.
	started2, release2 := heldReplies(b)
	const m = 8
	errs = requestsInFlight(a, b, m)
	if !startedWithin(started2, m, 10*time.Second) {
		limit, waiting := a.learnedLimit(b.h.ID())
		idle, count, busy := a.pool(b.h.ID())
		t.Fatalf("not all %d requests started in 10 s: A gives B %d exclusive streams (%d idle, %d open, %d busy), %d requests wait, A has a shared stream: %t; B serves %d streams, admits %d",
			m, limit, idle, count, busy, waiting, outboundOf(a, b.h.ID()) != nil, inboundStreams(b), admittedInbound(t, b))
	}
	if got := inboundStreams(b); got != 4 {
		t.Fatalf("B serves %d message streams with %d requests in flight, want 3 exclusive + 1 shared", got, m)
	}
	close(release2)
	for range m {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if limit, waiting := a.learnedLimit(b.h.ID()); limit != 3 || waiting != 0 {
		t.Fatalf("after the second burst A gives B %d exclusive streams with %d waiting, want 3 and 0", limit, waiting)
	}
}

// TestRefusedRequestTimesOut: a request whose stream was refused waits for
// one of the peer's streams only until its deadline, then fails with it.
func TestRefusedRequestTimesOut(t *testing.T) {
	a := newTestNode(t)
	b := newTestNode(t, withInboundMessageStreams(t, 2))
	connect(t, a, b)
	started, release := heldReplies(b)
	defer close(release)

	errs := make(chan error, 3)
	for i := range 2 {
		go func() {
			_, err := requestText(a, b, fmt.Sprint(i), 20*time.Second)
			errs <- err
		}()
	}
	awaitStarted(t, started, 2)
	begin := time.Now()
	_, err := requestText(a, b, "late", 300*time.Millisecond)
	if err == nil {
		t.Fatal("a request beyond B's limit, with both streams held, succeeded")
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("the refused request failed after %v, want about its 300 ms deadline", took)
	}
	if limit, waiting := a.learnedLimit(b.h.ID()); limit != 1 || waiting != 0 {
		t.Fatalf("A gives B %d exclusive streams with %d waiting, want 1 and 0", limit, waiting)
	}
	t.Log(err)
}

// TestResetOfAnAnsweringStreamIsNotARefusal: a peer that resets, with the
// resource-limit code, a stream that has already answered may have
// handled the request in flight; it is not taken for a refusal at open,
// so the request fails instead of being sent a second time, and nothing
// is learned. B here is a plain host: it answers the first ping on each
// stream and resets the stream after reading the second.
func TestResetOfAnAnsweringStreamIsNotARefusal(t *testing.T) {
	a := newTestNode(t)
	b := newTestNode(t)
	connect(t, a, b)
	var read atomic.Int32 // requests B read, over all streams
	b.h.SetStreamHandler(protocol.ID(ProtocolID), func(st network.Stream) {
		fr := frameReader{br: bufio.NewReader(st), max: 1 << 20}
		for n := 1; ; n++ {
			body, _, err := fr.next()
			if err != nil {
				_ = st.Reset()
				return
			}
			read.Add(1)
			if n == 2 {
				_ = st.ResetWithError(network.StreamResourceLimitExceeded)
				return
			}
			var req Envelope
			id, canonical, err := decodeEnvelopeInto(&req, body)
			if err != nil {
				_ = st.Reset()
				return
			}
			if canonical {
				req.ID = string(id)
			}
			pong, _ := Reply(&req, TypePong, nil)
			frame, _ := AppendFrame(nil, pong, 0)
			if _, err := st.Write(frame); err != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
		t.Fatalf("first ping: %v", err)
	}
	_, err := a.svc.Ping(ctx, b.h.ID())
	if err == nil || errors.Is(err, errStreamRefused) || !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("second ping, reset after it was read: %v; want a closed stream, not a refusal", err)
	}
	if got := read.Load(); got != 2 {
		t.Fatalf("B read %d requests, want 2 (the second was not sent again)", got)
	}
	if limit, _ := a.learnedLimit(b.h.ID()); limit != -1 {
		t.Fatalf("A learned a limit of %d from a stream that had answered", limit)
	}
}
