package task

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptest "github.com/libp2p/go-libp2p/core/test"
)

// slowToStop returns an executor that signals started, waits for ctx and
// then takes a while to return, counting its returns: Close must wait for
// it, whether it runs a submitted task or an Execute for a peer.
func slowToStop(started chan<- struct{}, returned *atomic.Int32) testExecutor {
	return testExecutor{typ: "test.slow", run: func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		started <- struct{}{}
		<-ctx.Done()
		time.Sleep(30 * time.Millisecond)
		returned.Add(1)
		return nil, ctx.Err()
	}}
}

func TestCloseWaitsForExecutorsToReturn(t *testing.T) {
	started := make(chan struct{}, 2)
	var returned atomic.Int32
	n := newNode(t, nil, Options{Executors: []Executor{slowToStop(started, &returned)}})
	ctx := testCtx(t)
	rec, err := n.e.Submit(ctx, SubmitRequest{Type: "test.slow", Input: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	executed := make(chan Record, 1)
	go func() { executed <- n.e.Execute(ctx, Request{Type: "test.slow", Input: json.RawMessage(`{}`)}) }()
	<-started
	<-started
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := n.e.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want DeadlineExceeded", err)
	}
	if got := returned.Load(); got != 2 {
		t.Fatalf("Close returned with %d of 2 executors still running", 2-got)
	}
	if got := <-executed; got.State != StateFailed || got.Code != CodeClosed {
		t.Fatalf("Execute: %+v", got)
	}
	if got, err := n.e.Get(ctx, rec.ID); err != nil || got.State != StateFailed || got.Code != CodeClosed {
		t.Fatalf("submitted task: %+v, %v", got, err)
	}
	wantTotals(t, "local", n.tm, map[string]float64{"unknown/cancelled": 2})
}

func TestCloseWaitsForTransportCalls(t *testing.T) {
	remote := libp2ptest.RandPeerIDFatal(t)
	var returned atomic.Int32
	tr := &fakeTransport{
		offer:  map[string][]peer.ID{TypeChunk: {remote}},
		called: make(chan peer.ID, 1),
		handle: func(ctx context.Context, _ peer.ID, _ Request) (Record, error) {
			<-ctx.Done()
			time.Sleep(30 * time.Millisecond)
			returned.Add(1)
			return Record{}, ctx.Err()
		},
	}
	n := newNode(t, tr, Options{})
	ctx := testCtx(t)
	rec, err := n.e.Submit(ctx, SubmitRequest{Type: TypeChunk, Input: chunkInput})
	if err != nil {
		t.Fatal(err)
	}
	<-tr.called
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := n.e.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want DeadlineExceeded", err)
	}
	if got := returned.Load(); got != 1 {
		t.Fatal("Close returned with the transport call still running")
	}
	got, err := n.e.Get(ctx, rec.ID)
	want := "attempt 1 on peer " + remote.String() + ": task engine closed: context canceled"
	if err != nil || got.State != StateFailed || got.Code != CodeClosed || got.Attempts != 1 || got.Error != want {
		t.Fatalf("task: %+v, %v\nwant error %q", got, err, want)
	}
}
