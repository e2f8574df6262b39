package message

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

func TestPingCountsExactly(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	beforeA, beforeB := a.snapshot(t), b.snapshot(t)

	const n = 25
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range n {
		rtt, err := a.svc.Ping(ctx, b.h.ID())
		if err != nil {
			t.Fatal(err)
		}
		if rtt <= 0 {
			t.Fatalf("rtt %v", rtt)
		}
	}
	// B records the duration after writing the pong, so A may see the
	// pong first: wait for B's last observation.
	p2ptest.Eventually(t, 5*time.Second, "B to finish recording", func() bool {
		return b.handled(t, "ping")-beforeB["handled/ping"] == n
	})
	a.assertDelta(t, beforeA, map[string]float64{"sent/ping": n, "received/pong": n})
	b.assertDelta(t, beforeB, map[string]float64{"received/ping": n, "handled/ping": n, "sent/pong": n})
	if lat := a.h.Peerstore().LatencyEWMA(b.h.ID()); lat <= 0 {
		t.Errorf("latency not recorded in the peerstore: %v", lat)
	}
}

func TestRequestHandlersAndErrors(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	type echo struct {
		Text string `json:"text"`
	}
	b.svc.Handle(TypeTaskRequest, func(ctx context.Context, from peer.ID, req *Envelope) (*Envelope, error) {
		if from != a.h.ID() {
			t.Errorf("from = %s, want %s", from, a.h.ID())
		}
		var in echo
		if err := req.DecodePayload(&in); err != nil {
			return nil, err
		}
		switch in.Text {
		case "panic":
			panic("boom")
		case "fail":
			return nil, errors.New("cannot do that")
		case "refuse":
			return nil, &RemoteError{Code: "busy", Message: "try later"}
		case "silent":
			return nil, nil
		case "big":
			return Reply(req, TypeTaskResult, echo{Text: strings.Repeat("x", DefaultMaxMessageBytes)})
		}
		return Reply(req, TypeTaskResult, echo{Text: "re: " + in.Text})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	before := b.snapshot(t)
	resp, err := a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, echo{Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	var out echo
	if err := resp.DecodePayload(&out); err != nil || out.Text != "re: hi" || resp.Type != TypeTaskResult {
		t.Fatalf("response %+v %q: %v", resp, out.Text, err)
	}

	for _, tc := range []struct {
		text, code, reason string
	}{
		{"panic", CodeInternal, "panic"},
		{"fail", CodeHandler, "handler"},
		{"refuse", "busy", "handler"},
		{"big", CodeTooLarge, "too_large"},
	} {
		_, err := a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, echo{Text: tc.text})
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != tc.code {
			t.Errorf("%s: err = %v, want RemoteError code %s", tc.text, err, tc.code)
		}
	}
	// A handler returning no response gets no reply: the request times out.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = a.svc.Request(short, b.h.ID(), TypeTaskRequest, echo{Text: "silent"})
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("silent handler: err = %v, want deadline exceeded", err)
	}
	// A request over the limit is refused before it is sent.
	if _, err := a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, echo{Text: strings.Repeat("y", DefaultMaxMessageBytes)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized request: %v, want ErrFrameTooLarge", err)
	}
	p2ptest.Eventually(t, 5*time.Second, "B to record", func() bool {
		return b.handled(t, TypeTaskRequest)-before["handled/task.request"] == 6
	})
	b.assertDelta(t, before, map[string]float64{
		"received/task.request":         6,
		"handled/task.request":          6,
		"errors/task.request/panic":     1,
		"errors/task.request/handler":   2,
		"errors/task.request/too_large": 1,
		"sent/task.result":              1,
		"sent/error":                    4,
	})
	// The node survived the panic.
	if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
		t.Fatal(err)
	}
}

// requestAsync sends a request of typ (no payload) from a to b in a
// goroutine; its error arrives on the channel returned.
func requestAsync(ctx context.Context, a, b *testNode, typ string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := a.svc.Request(ctx, b.h.ID(), typ, nil)
		done <- err
	}()
	return done
}

func TestSlowHandlerDoesNotBlockPing(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	release := make(chan struct{})
	b.svc.Handle(TypeTaskRequest, func(ctx context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Reply(req, TypeTaskResult, nil)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := requestAsync(ctx, a, b, TypeTaskRequest)
	p2ptest.Eventually(t, 5*time.Second, "the slow request to start", func() bool { return b.received(TypeTaskRequest) == 1 })
	for range 10 {
		if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRequestUnreachable(t *testing.T) {
	a := newTestNode(t)
	ghost := p2ptest.NewKey(t)
	id, err := peer.IDFromPrivateKey(ghost)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.svc.Ping(ctx, id); !errors.Is(err, ErrPeerUnreachable) {
		t.Errorf("ping unknown peer: %v, want ErrPeerUnreachable", err)
	}
	if err := a.svc.Connect(ctx, peer.AddrInfo{ID: id}); !errors.Is(err, ErrPeerUnreachable) {
		t.Errorf("connect unknown peer: %v, want ErrPeerUnreachable", err)
	}
}

// TestStreamReopenedAfterIdleClose: the responder closes streams idle for
// its IdleTimeout; the next request goes through on a new stream, whether
// the closed one was exclusive (noticed on its next use, the request
// retried) or the pipelined one (noticed by its reader at once).
func TestStreamReopenedAfterIdleClose(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			a := newTestNode(t, withService(func(c *ServiceConfig) {
				if pipelined {
					c.ExclusiveStreams = -1
				}
			}))
			b := newTestNode(t, withService(func(c *ServiceConfig) { c.IdleTimeout = 100 * time.Millisecond }))
			connect(t, a, b)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for range 3 {
				if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
					t.Fatal(err)
				}
				p2ptest.Eventually(t, 5*time.Second, "B to close the idle stream", func() bool {
					b.svc.smu.Lock()
					defer b.svc.smu.Unlock()
					return len(b.svc.inbound) == 0
				})
				if pipelined {
					p2ptest.Eventually(t, 5*time.Second, "A to notice", func() bool {
						a.svc.smu.Lock()
						defer a.svc.smu.Unlock()
						return len(a.svc.outbound) == 0
					})
				}
			}
			if got := b.handled(t, TypePing); got != 3 {
				t.Fatalf("pings handled by B: %v, want 3", got)
			}
		})
	}
}

func TestCloseDrainsInFlight(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	started := make(chan struct{})
	b.svc.Handle(TypeTaskRequest, func(ctx context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
		close(started)
		time.Sleep(200 * time.Millisecond)
		return Reply(req, TypeTaskResult, nil)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := requestAsync(ctx, a, b, TypeTaskRequest)
	<-started
	if err := b.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("in-flight request lost at shutdown: %v", err)
	}
	if _, err := a.svc.Ping(ctx, b.h.ID()); err == nil {
		t.Error("ping after Close succeeded")
	}
	if err := a.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.svc.Ping(ctx, b.h.ID()); !errors.Is(err, ErrServiceClosed) {
		t.Errorf("ping from a closed service: %v, want ErrServiceClosed", err)
	}
}

// TestConcurrentRequestsCoalesced sends requests of mixed sizes (from a few
// bytes to several times what one coalesced write gathers) and pings from
// 32 goroutines over one kept stream, so that frames are gathered into
// shared writes on both sides: every request gets its own answer, and every
// message is counted exactly once.
func TestConcurrentRequestsCoalesced(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	type echo struct {
		Text string `json:"text"`
	}
	b.svc.Handle(TypeTaskRequest, func(_ context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
		var in echo
		if err := req.DecodePayload(&in); err != nil {
			return nil, err
		}
		return Reply(req, TypeTaskResult, echo{Text: "re: " + in.Text})
	})
	beforeA, beforeB := a.snapshot(t), b.snapshot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const workers, each = 32, 20
	sizes := []int{1, 100, 3000, coalesceBytes / 3, 3 * coalesceBytes}
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				if (w+i)%2 == 0 {
					if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
						errs <- err
						return
					}
					continue
				}
				text := fmt.Sprintf("%d/%d:", w, i) + strings.Repeat("y", sizes[(w+i)%len(sizes)])
				resp, err := a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, echo{Text: text})
				if err != nil {
					errs <- err
					return
				}
				var out echo
				if err := resp.DecodePayload(&out); err != nil {
					errs <- err
					return
				}
				if out.Text != "re: "+text {
					errs <- fmt.Errorf("request %d/%d answered with another request's reply (%d bytes)", w, i, len(out.Text))
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	const pings, requests = workers * each / 2, workers * each / 2
	p2ptest.Eventually(t, 5*time.Second, "B to finish recording", func() bool {
		return b.handled(t, "ping")-beforeB["handled/ping"] == pings &&
			b.handled(t, "task.request")-beforeB["handled/task.request"] == requests
	})
	a.assertDelta(t, beforeA, map[string]float64{"sent/ping": pings, "received/pong": pings,
		"sent/task.request": requests, "received/task.result": requests})
	b.assertDelta(t, beforeB, map[string]float64{"received/ping": pings, "handled/ping": pings, "sent/pong": pings,
		"received/task.request": requests, "handled/task.request": requests, "sent/task.result": requests})
}
