package message

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

func inboundStreams(n *testNode) int {
	n.svc.smu.Lock()
	defer n.svc.smu.Unlock()
	return len(n.svc.inbound)
}

// pool reports A's exclusive streams to p: idle, in all, and busy (opened
// and not idle, across peers).
func (n *testNode) pool(p peer.ID) (idle, count, busy int) {
	pl := &n.svc.excl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	idleAll := 0
	for _, ps := range pl.peers {
		idleAll += len(ps.idle)
	}
	if ps := pl.peers[p]; ps != nil {
		idle, count = len(ps.idle), ps.count
	}
	return idle, count, len(pl.all) - idleAll
}

// heldReplies makes b answer task.request only once release is closed;
// started receives one value per request it holds.
func heldReplies(b *testNode) (started chan struct{}, release chan struct{}) {
	started, release = make(chan struct{}, 64), make(chan struct{})
	b.svc.Handle(TypeTaskRequest, func(ctx context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var in struct{ Text string }
		if err := req.DecodePayload(&in); err != nil {
			return nil, err
		}
		return Reply(req, TypeTaskResult, map[string]string{"text": "re: " + in.Text})
	})
	return started, release
}

// requestsInFlight sends n task requests from a to b at once, request i
// with the text "i", and returns the channel on which each reports nil
// once answered "re: i", or its error.
func requestsInFlight(a, b *testNode, n int) <-chan error {
	errs := make(chan error, n)
	for i := range n {
		go func() {
			text, err := requestText(a, b, fmt.Sprint(i), 20*time.Second)
			if err == nil && text != fmt.Sprintf("re: %d", i) {
				err = fmt.Errorf("request %d answered %q", i, text)
			}
			errs <- err
		}()
	}
	return errs
}

// TestExclusiveStreamsThenPipelined: with 3 exclusive streams, 5 requests
// in flight at once take the 3 streams and share one pipelined stream; each
// gets its own reply, and later sequential requests reuse an idle
// exclusive stream instead of opening more.
func TestExclusiveStreamsThenPipelined(t *testing.T) {
	a := newTestNode(t, withService(func(c *ServiceConfig) { c.ExclusiveStreams = 3 }))
	b := newTestNode(t)
	connect(t, a, b)
	started, release := heldReplies(b)

	const n = 5
	errs := requestsInFlight(a, b, n)
	for range n {
		<-started
	}
	if got := inboundStreams(b); got != 4 {
		t.Fatalf("B serves %d streams with %d requests in flight, want 3 exclusive + 1 pipelined", got, n)
	}
	if idle, count, busy := a.pool(b.h.ID()); idle != 0 || count != 3 || busy != 3 {
		t.Fatalf("A's exclusive streams: %d idle, %d in all, %d busy; want 0, 3, 3", idle, count, busy)
	}
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if idle, count, busy := a.pool(b.h.ID()); idle != 3 || count != 3 || busy != 0 {
		t.Fatalf("after the replies: %d idle, %d in all, %d busy; want 3, 3, 0", idle, count, busy)
	}
	for i := range 10 {
		if _, err := requestText(a, b, fmt.Sprint(i), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if got := inboundStreams(b); got != 4 {
		t.Fatalf("B serves %d streams after 10 sequential requests, want still 4", got)
	}
}

// TestCancelledExclusiveRequest: cancelling a request waiting on its
// exclusive stream returns at once and resets that stream (its late reply
// can reach nobody); the next request opens or reuses another.
func TestCancelledExclusiveRequest(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	started, release := heldReplies(b)
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, map[string]string{"text": "x"})
		errc <- err
	}()
	<-started
	cancelled := time.Now()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled request: %v, want context.Canceled", err)
		}
		if d := time.Since(cancelled); d > time.Second {
			t.Fatalf("cancelled request returned after %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled request did not return")
	}
	if idle, count, busy := a.pool(b.h.ID()); idle != 0 || count != 0 || busy != 0 {
		t.Fatalf("after the cancel: %d idle, %d in all, %d busy; want none", idle, count, busy)
	}
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil {
		t.Fatal(err)
	}
	// B's handler learns that its requester went: the stream was reset.
	p2ptest.Eventually(t, 5*time.Second, "B to drop the reset stream", func() bool {
		return inboundStreams(b) == 1
	})
}

// TestExclusiveRequestTimeout: a request without a deadline of its own
// times out after RequestTimeout (at most a twentieth later), and the
// stream it waited on is not reused.
func TestExclusiveRequestTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	a := newTestNode(t, withService(func(c *ServiceConfig) { c.RequestTimeout = timeout }))
	b := newTestNode(t)
	connect(t, a, b)
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil { // the stream's read deadline is set
		t.Fatal(err)
	}
	_, release := heldReplies(b)
	defer close(release)
	start := time.Now()
	_, err := a.svc.Request(context.Background(), b.h.ID(), TypeTaskRequest, map[string]string{"text": "x"})
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request: %v, want context.DeadlineExceeded", err)
	}
	if took < timeout || took > timeout+timeout/20+200*time.Millisecond {
		t.Fatalf("timed out after %v, want %v to %v (plus scheduling)", took, timeout, timeout+timeout/20)
	}
	if idle, count, _ := a.pool(b.h.ID()); idle != 0 || count != 0 {
		t.Fatalf("after the timeout: %d idle, %d in all; want none", idle, count)
	}
}

// TestShutdownFailsExclusiveRequests: closing the service fails a request
// waiting on an exclusive stream with ErrServiceClosed, and no request is
// sent afterwards.
func TestShutdownFailsExclusiveRequests(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	started, release := heldReplies(b)
	defer close(release)
	errc := make(chan error, 1)
	go func() {
		_, err := requestText(a, b, "x", 20*time.Second)
		errc <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = a.svc.Shutdown(ctx)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrServiceClosed) {
			t.Fatalf("request: %v, want ErrServiceClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request did not return at shutdown")
	}
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); !errors.Is(err, ErrServiceClosed) {
		t.Fatalf("ping after shutdown: %v, want ErrServiceClosed", err)
	}
}

// TestIdleExclusiveStreamsDroppedOnDisconnect: a peer's idle exclusive
// streams are let go when its connection closes, so peers that leave do
// not accumulate; a new connection gets new streams.
func TestIdleExclusiveStreamsDroppedOnDisconnect(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil {
		t.Fatal(err)
	}
	if idle, count, _ := a.pool(b.h.ID()); idle != 1 || count != 1 {
		t.Fatalf("after a ping: %d idle, %d in all; want 1, 1", idle, count)
	}
	if err := a.h.Network().ClosePeer(b.h.ID()); err != nil {
		t.Fatal(err)
	}
	p2ptest.Eventually(t, 5*time.Second, "A to drop the idle stream", func() bool {
		idle, count, _ := a.pool(b.h.ID())
		return idle == 0 && count == 0
	})
	connect(t, a, b)
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil {
		t.Fatal(err)
	}
}

// TestWrongResponseIDOnExclusiveStream: a reply carrying another request's
// ID is an error of the stream, which is reset; nothing is handed to the
// wrong request and the next request goes through on a new stream.
func TestWrongResponseIDOnExclusiveStream(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	var streams atomic.Int32
	scriptedPeer(t, b, func(s network.Stream, br *bufio.Reader) {
		if streams.Add(1) == 1 {
			req := readRequest(t, br)
			if req == nil {
				return
			}
			other := *req
			other.ID = "someone-else"
			if _, err := s.Write(replyFrame(t, &other, "not yours")); err != nil {
				t.Error(err)
			}
			_, _ = br.ReadByte() // until A resets the stream
			return
		}
		answerPings(t, s, br)
	})
	_, err := requestText(a, b, "x", 10*time.Second)
	if !errors.Is(err, ErrMalformed) || !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("request answered with a wrong ID: %v, want ErrMalformed and ErrStreamClosed", err)
	}
	if got := a.errors(metrics.Unknown, ReasonMalformed); got != 1 {
		t.Fatalf("malformed responses counted: %v, want 1", got)
	}
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil {
		t.Fatalf("next request: %v", err)
	}
	if got := streams.Load(); got != 2 {
		t.Fatalf("B saw %d streams, want 2 (the reset one and a new one)", got)
	}
}

// TestCancelAsTheResponseArrives: contexts cancelled around the moment
// their response arrives, so that some requests are cancelled while they
// read and some just after. Whichever wins, the request after each goes
// through on the one exclusive stream or a new one. (The narrowest case, a
// cancellation between the read's return and its AfterFunc being stopped,
// is rarely hit here; exclusiveRoundTrip drops the stream whenever stop
// reports that the function ran.)
func TestCancelAsTheResponseArrives(t *testing.T) {
	a, b := newTestNode(t, withService(func(c *ServiceConfig) { c.ExclusiveStreams = 1 })), newTestNode(t)
	connect(t, a, b)
	rtt, err := a.svc.Ping(context.Background(), b.h.ID())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		ctx, cancel := context.WithCancel(context.Background())
		// Cancel somewhere between half and one and a half round trips.
		timer := time.AfterFunc(rtt/2+time.Duration(i%10)*rtt/10, cancel)
		_, _ = a.svc.Ping(ctx, b.h.ID())
		timer.Stop()
		cancel()
		if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil {
			t.Fatalf("ping %d after a cancelled one: %v", i, err)
		}
	}
}
