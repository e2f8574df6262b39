package message

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// pipelinedOnly makes a node send every request on its one shared,
// pipelined stream per peer (no exclusive streams).
var pipelinedOnly = withService(func(c *ServiceConfig) { c.ExclusiveStreams = -1 })

// scriptedPeer replaces b's message handler with a script of its own on
// every stream it accepts: the test decides what is written when.
func scriptedPeer(t *testing.T, b *testNode, script func(s network.Stream, br *bufio.Reader)) {
	t.Helper()
	b.h.SetStreamHandler(protocol.ID(ProtocolID), func(s network.Stream) {
		defer func() { _ = s.Reset() }()
		_ = s.SetDeadline(time.Now().Add(30 * time.Second))
		script(s, bufio.NewReader(s))
	})
}

func readRequest(t *testing.T, br *bufio.Reader) *Envelope {
	env, err := DecodeFrame(br, DefaultMaxMessageBytes)
	if err != nil {
		t.Errorf("scripted peer: %v", err)
		return nil
	}
	return env
}

func replyFrame(t *testing.T, req *Envelope, text string) []byte {
	resp, err := Reply(req, TypeTaskResult, map[string]string{"text": text})
	if err != nil {
		t.Fatal(err)
	}
	f, err := AppendFrame(nil, resp, 0)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// answerPings answers every further request with pong until the stream ends.
func answerPings(t *testing.T, s network.Stream, br *bufio.Reader) {
	for {
		req, err := DecodeFrame(br, DefaultMaxMessageBytes)
		if err != nil {
			return
		}
		resp, _ := Reply(req, TypePong, nil)
		f, _ := AppendFrame(nil, resp, 0)
		if _, err := s.Write(f); err != nil {
			return
		}
	}
}

// requestText sends a task.request {"text": text} from a to b within limit
// and returns the text of the reply.
func requestText(a, b *testNode, text string, limit time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	resp, err := a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, map[string]string{"text": text})
	var out struct{ Text string }
	if err == nil {
		err = resp.DecodePayload(&out)
	}
	return out.Text, err
}

func outboundOf(a *testNode, p peer.ID) *outboundStream {
	a.svc.smu.Lock()
	defer a.svc.smu.Unlock()
	return a.svc.outbound[p]
}

// TestDeadlineWhileAResponseIsHalfArrived: one request reaches its deadline
// while another request's large response is half arrived on the same kept
// stream. The first returns at its deadline, the other gets its response
// whole, and the stream stays in use: nothing is reset or re-sent.
func TestDeadlineWhileAResponseIsHalfArrived(t *testing.T) {
	a, b := newTestNode(t, pipelinedOnly), newTestNode(t)
	connect(t, a, b)
	big := strings.Repeat("z", 200<<10) // many reads of the stream
	gotFirst, gotSecond, firstGone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	scriptedPeer(t, b, func(s network.Stream, br *bufio.Reader) {
		if readRequest(t, br) == nil { // the first: never answered
			return
		}
		close(gotFirst)
		second := readRequest(t, br)
		if second == nil {
			return
		}
		close(gotSecond)
		f := replyFrame(t, second, big)
		if _, err := s.Write(f[:len(f)/2]); err != nil {
			t.Error(err)
			return
		}
		<-firstGone
		if _, err := s.Write(f[len(f)/2:]); err != nil {
			t.Error(err)
			return
		}
		answerPings(t, s, br)
	})

	firstCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	firstErr := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := a.svc.Request(firstCtx, b.h.ID(), TypeTaskRequest, map[string]string{"text": "first"})
		firstErr <- err
	}()
	<-gotFirst
	ob := outboundOf(a, b.h.ID())
	type result struct {
		text string
		err  error
	}
	second := make(chan result, 1)
	go func() {
		text, err := requestText(a, b, "second", 20*time.Second)
		second <- result{text, err}
	}()
	<-gotSecond

	err := <-firstErr
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first request: %v, want its deadline", err)
	}
	if took < 2*time.Second || took > 3*time.Second {
		t.Errorf("first request returned after %v, want its 2s deadline", took)
	}
	close(firstGone)
	r := <-second
	if r.err != nil || r.text != big {
		t.Fatalf("second request: %d bytes, %v; want the %d bytes sent", len(r.text), r.err, len(big))
	}
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil {
		t.Fatal(err)
	}
	if outboundOf(a, b.h.ID()) != ob {
		t.Errorf("the stream was replaced")
	}
}

// TestCancelledRequestReturnsAtOnce: a request without a deadline whose
// context is cancelled returns at once, and the request waiting beside it
// gets its response; the late response to the cancelled one is dropped.
func TestCancelledRequestReturnsAtOnce(t *testing.T) {
	a, b := newTestNode(t, pipelinedOnly), newTestNode(t)
	connect(t, a, b)
	gotBoth, firstGone := make(chan struct{}), make(chan struct{})
	scriptedPeer(t, b, func(s network.Stream, br *bufio.Reader) {
		first, second := readRequest(t, br), readRequest(t, br)
		if first == nil || second == nil {
			return
		}
		close(gotBoth)
		<-firstGone
		for _, f := range [][]byte{replyFrame(t, first, "late"), replyFrame(t, second, "second")} {
			if _, err := s.Write(f); err != nil {
				t.Error(err)
				return
			}
		}
		answerPings(t, s, br)
	})

	firstCtx, cancelFirst := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := a.svc.Request(firstCtx, b.h.ID(), TypeTaskRequest, map[string]string{"text": "first"})
		firstErr <- err
	}()
	// The second request starts once the first is on the wire.
	for outboundOf(a, b.h.ID()) == nil {
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		text, err := requestText(a, b, "second", 20*time.Second)
		if err == nil && text != "second" {
			err = fmt.Errorf("answered %q", text)
		}
		second <- err
	}()
	<-gotBoth
	time.Sleep(50 * time.Millisecond) // both are waiting
	cancelled := time.Now()
	cancelFirst()
	select {
	case err := <-firstErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled request: %v, want context.Canceled", err)
		}
		if d := time.Since(cancelled); d > time.Second {
			t.Errorf("cancelled request returned after %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled request did not return")
	}
	close(firstGone)
	if err := <-second; err != nil {
		t.Fatalf("second request: %v", err)
	}
	if _, err := a.svc.Ping(context.Background(), b.h.ID()); err != nil {
		t.Fatal(err)
	}
}

// TestExpiringRequestsAmongOthers: 16 goroutines share the exclusive
// streams and the pipelined one; a
// third of their requests are answered only after the requester's
// deadline. Every other request is answered with its own reply, and every
// late one returns at its deadline.
func TestExpiringRequestsAmongOthers(t *testing.T) {
	a := newTestNode(t)
	b := newTestNode(t, withService(func(c *ServiceConfig) { c.MaxHandlersPerPeer, c.MaxConcurrentPerStream = 1024, 1024 }))
	connect(t, a, b)
	b.svc.Handle(TypeTaskRequest, func(ctx context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
		var in struct{ Text string }
		if err := req.DecodePayload(&in); err != nil {
			return nil, err
		}
		if strings.HasPrefix(in.Text, "slow") {
			select {
			case <-time.After(300 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		return Reply(req, TypeTaskResult, map[string]string{"text": "re: " + in.Text})
	})
	const workers, each = 16, 12
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				slow := (w+i)%3 == 0
				text := fmt.Sprintf("%d/%d", w, i)
				limit := 20 * time.Second
				if slow {
					text, limit = "slow "+text, 50*time.Millisecond
				}
				ctx, cancel := context.WithTimeout(context.Background(), limit)
				start := time.Now()
				resp, err := a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, map[string]string{"text": text})
				took := time.Since(start)
				cancel()
				if slow {
					if !errors.Is(err, context.DeadlineExceeded) || took > 2*time.Second {
						errs <- fmt.Errorf("late request %s: %v after %v, want its deadline", text, err, took)
						return
					}
					continue
				}
				var out struct{ Text string }
				if err == nil {
					err = resp.DecodePayload(&out)
				}
				if err != nil || out.Text != "re: "+text {
					errs <- fmt.Errorf("request %s: %q, %v", text, out.Text, err)
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
}
