package peerlimit

import (
	"fmt"
	"testing"
	"time"
)

func TestPerPeerBucketsAndBound(t *testing.T) {
	l := New(2, 5, 8)
	now := time.Unix(100, 0)
	allowed := 0
	for range 20 {
		if l.Allow("a", now) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("burst: %d of 20 allowed at once, want 5", allowed)
	}
	if !l.Allow("b", now) {
		t.Fatal("another peer is limited by the first one's bucket")
	}
	if !l.Allow("a", now.Add(600*time.Millisecond)) || l.Allow("a", now.Add(600*time.Millisecond)) {
		t.Fatal("after 0.6 s at 2/s, exactly one more request")
	}
	for i := range 100 {
		l.Allow(fmt.Sprint("p", i), now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(l.byPeer); n > 8 {
		t.Fatalf("%d peers tracked, want at most 8", n)
	}
}
