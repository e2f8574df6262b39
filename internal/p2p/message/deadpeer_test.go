package message

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
)

var (
	tcpOnly  = []string{"/ip4/127.0.0.1/tcp/0"}
	quicOnly = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
)

// blockingHandler is a task.request handler that blocks until its context
// is cancelled, reporting when it started and when it saw the cancellation.
type blockingHandler struct {
	started   chan struct{}
	cancelled chan time.Time
}

func newBlockingHandler(s *Service) *blockingHandler {
	h := &blockingHandler{started: make(chan struct{}, 1), cancelled: make(chan time.Time, 1)}
	s.Handle(TypeTaskRequest, func(ctx context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
		h.started <- struct{}{}
		<-ctx.Done()
		h.cancelled <- time.Now()
		return nil, ctx.Err()
	})
	return h
}

// TestHandlerCancelledWhenRequesterGoes: when the stream a request came on
// is reset, or the requesting host goes away, the handler's context is
// cancelled at once (nobody is left to read its reply), and the service
// then shuts down without waiting for its drain deadline.
func TestHandlerCancelledWhenRequesterGoes(t *testing.T) {
	for _, tr := range []struct {
		name  string
		addrs []string
	}{{"tcp", tcpOnly}, {"quic", quicOnly}} {
		for _, how := range []string{"stream reset", "host closed"} {
			t.Run(tr.name+"/"+how, func(t *testing.T) {
				a, b := newTestNode(t, listenOn(tr.addrs)), newTestNode(t, listenOn(tr.addrs))
				connect(t, a, b)
				h := newBlockingHandler(b.svc)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()

				var gone func()
				if how == "stream reset" {
					s, err := a.h.NewStream(ctx, b.h.ID(), protocol.ID(ProtocolID))
					if err != nil {
						t.Fatal(err)
					}
					if _, err := s.Write(frame(`{"v":1,"id":"r1","type":"task.request","payload":{}}`)); err != nil {
						t.Fatal(err)
					}
					gone = func() { _ = s.Reset() }
				} else {
					go func() { _, _ = a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, nil) }()
					gone = func() { _ = a.h.Close() }
				}
				select {
				case <-h.started:
				case <-ctx.Done():
					t.Fatal("the request never reached the handler")
				}
				at := time.Now()
				gone()
				select {
				case c := <-h.cancelled:
					t.Logf("handler cancelled %v after the requester went", c.Sub(at).Round(time.Microsecond))
				case <-time.After(2 * time.Second):
					t.Fatal("handler still running 2s after its requester went")
				}
				sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer scancel()
				start := time.Now()
				if err := b.svc.Shutdown(sctx); err != nil {
					t.Fatalf("shutdown: %v", err)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("shutdown took %v", d)
				}
			})
		}
	}
}

// TestHalfClosedStreamStillAnswered: a peer that closes its side after its
// last request (CloseWrite) still gets the replies, and the handlers are
// not cancelled.
func TestHalfClosedStreamStillAnswered(t *testing.T) {
	for _, tr := range []struct {
		name  string
		addrs []string
	}{{"tcp", tcpOnly}, {"quic", quicOnly}} {
		t.Run(tr.name, func(t *testing.T) {
			a, b := newTestNode(t, listenOn(tr.addrs)), newTestNode(t, listenOn(tr.addrs))
			connect(t, a, b)
			b.svc.Handle(TypeTaskRequest, func(ctx context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
				select {
				case <-time.After(300 * time.Millisecond):
				case <-ctx.Done():
					return nil, errors.New("cancelled although the requester waits")
				}
				return Reply(req, TypeTaskResult, nil)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := a.h.NewStream(ctx, b.h.ID(), protocol.ID(ProtocolID))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			for _, id := range []string{"r1", "r2"} {
				if _, err := s.Write(frame(`{"v":1,"id":"` + id + `","type":"task.request","payload":{}}`)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(s)
			got := map[string]bool{}
			for range 2 {
				env, err := DecodeFrame(br, DefaultMaxMessageBytes)
				if err != nil {
					t.Fatalf("reading a reply: %v", err)
				}
				if env.Type != TypeTaskResult {
					t.Fatalf("reply %s %s", env.Type, env.Payload)
				}
				got[env.ID] = true
			}
			if !got["r1"] || !got["r2"] {
				t.Fatalf("replies %v", got)
			}
			if _, err := DecodeFrame(br, DefaultMaxMessageBytes); !errors.Is(err, io.EOF) {
				t.Fatalf("after the replies: %v, want EOF", err)
			}
		})
	}
}

// TestP2PErrorsAreOneLine: go-libp2p's dial errors list one failed address
// per line; the service's errors are one line, and still wrap
// ErrPeerUnreachable. A peer with no known address fails at once with the
// same message as Connect's.
func TestP2PErrorsAreOneLine(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	newGhost := func() peer.ID {
		id, err := peer.IDFromPrivateKey(p2ptest.NewKey(t))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Two addresses nothing listens on: closed TCP ports.
	var addrs []ma.Multiaddr
	var ports []string
	for range 2 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		ports = append(ports, "/tcp/"+port)
		addrs = append(addrs, ma.StringCast("/ip4/127.0.0.1/tcp/"+port))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// go-libp2p's message spans lines here: flattened.
	var le *lineError
	err := a.svc.Connect(ctx, peer.AddrInfo{ID: newGhost(), Addrs: addrs})
	checkOneLine(t, "connect", err, ports...)
	if !errors.As(err, &le) {
		t.Errorf("connect: %q was not flattened", err)
	}

	ghost := newGhost()
	a.h.Peerstore().AddAddrs(ghost, addrs, time.Minute)
	_, err = a.svc.Ping(ctx, ghost)
	checkOneLine(t, "ping", err, ports...)
	if !errors.As(err, &le) {
		t.Errorf("ping: %q was not flattened", err)
	}
	_, err = a.svc.Request(ctx, newGhost(), TypeTaskRequest, nil)
	checkOneLine(t, "request", err, "no known address (give a full multiaddr)")

	// Unknown peer: no dial at all, Connect's message.
	start := time.Now()
	_, err = a.svc.Ping(ctx, newGhost())
	checkOneLine(t, "ping unknown peer", err, "no known address (give a full multiaddr)")
	if d := time.Since(start); d > time.Second {
		t.Errorf("ping unknown peer took %v", d)
	}
	// Connect without addresses dials the known ones (or is refused by
	// the dial backoff): one line too.
	checkOneLine(t, "connect by ID", a.svc.Connect(ctx, peer.AddrInfo{ID: ghost}))

	// A remote handler's multi-line error arrives as one line.
	connect(t, a, b)
	b.svc.Handle(TypeTaskRequest, func(context.Context, peer.ID, *Envelope) (*Envelope, error) {
		return nil, errors.New("it failed:\n  * first reason\n  * second reason")
	})
	_, err = a.svc.Request(ctx, b.h.ID(), TypeTaskRequest, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Message != "it failed: first reason; second reason" {
		t.Errorf("remote error %#v", err)
	}
}

func checkOneLine(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ErrPeerUnreachable) {
		t.Errorf("%s: %v, want ErrPeerUnreachable", what, err)
		return
	}
	msg := err.Error()
	t.Logf("%s: %s", what, msg)
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("%s: error spans lines: %q", what, msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: error %q lacks %q", what, msg, w)
		}
	}
}

// TestPipeliningPeerThatReadsLate: a peer's request is answered with a
// reply of exactly the stream's flow-control window (yamux's 256 KiB), which
// the peer does not read. It then pipelines pings and half of one more: the
// reader gathers the pongs, and its flush before waiting for the rest of
// that frame blocks, as the window is full, until the peer reads. That wait
// is for the write timeout to bound, not the read timeout: the peer reads
// after two read timeouts, sends the rest of the frame, and the last ping
// is answered rather than the stream reset as stalled.
func TestPipeliningPeerThatReadsLate(t *testing.T) {
	const (
		readTimeout = time.Second // far above what reading the replies takes, even under -race on a loaded machine
		window      = 256 << 10   // go-yamux's initial stream window
	)
	a := newTestNode(t, listenOn(tcpOnly))
	b := newTestNode(t, listenOn(tcpOnly), withService(func(c *ServiceConfig) {
		c.ReadTimeout, c.WriteTimeout = readTimeout, 20*time.Second
	}))
	connect(t, a, b)
	sentAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b.svc.Handle(TypeTaskRequest, func(_ context.Context, _ peer.ID, req *Envelope) (*Envelope, error) {
		// A reply whose frame fills what is left of the window after
		// multistream-select's answer: its header and the protocol echoed,
		// each a varint length, the line, and a newline.
		resp := &Envelope{V: EnvelopeVersion, ID: req.ID, Type: TypeTaskResult, SentAt: sentAt, Payload: []byte(`""`)}
		f, err := encodeFrame(resp, DefaultMaxMessageBytes)
		if err != nil {
			return nil, err
		}
		pad := window - (2 + len("/multistream/1.0.0") + 2 + len(ProtocolID)) - len(f.b)
		f.release()
		resp.Payload = []byte(`"` + strings.Repeat("x", pad-2) + `"`) // the varint grows by 2 bytes
		return resp, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := a.h.NewStream(ctx, b.h.ID(), protocol.ID(ProtocolID))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))

	if _, err := s.Write(frame(`{"v":1,"id":"big","type":"task.request","payload":{}}`)); err != nil {
		t.Fatal(err)
	}
	p2ptest.Eventually(t, 10*time.Second, "the window-sized reply to be written", func() bool {
		return b.sent(TypeTaskResult) == 1
	})
	const pings = 20
	var buf []byte
	for i := range pings {
		buf = append(buf, frame(`{"v":1,"id":"p`+strconv.Itoa(i)+`","type":"ping","payload":{}}`)...)
	}
	last := frame(`{"v":1,"id":"last","type":"ping","payload":{}}`)
	half := len(last) / 2
	if _, err := s.Write(append(buf, last[:half]...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * readTimeout) // the peer reads late

	br := bufio.NewReader(s)
	if _, err := ReadRawFrame(br, DefaultMaxMessageBytes); err != nil { // not decoded: read it fast
		t.Fatalf("the large reply: %v", err)
	}
	for i := range pings {
		env, err := DecodeFrame(br, DefaultMaxMessageBytes)
		if err != nil {
			t.Fatalf("pong %d: %v", i, err)
		}
		if env.Type != TypePong {
			t.Fatalf("pong %d: %s %s", i, env.Type, env.Payload)
		}
	}
	if _, err := s.Write(last[half:]); err != nil {
		t.Fatal(err)
	}
	env, err := DecodeFrame(br, DefaultMaxMessageBytes)
	if err != nil {
		t.Fatalf("the last ping: %v", err)
	}
	if env.Type != TypePong || env.ID != "last" {
		t.Fatalf("the last ping: %s %s", env.Type, env.ID)
	}
}
