package p2p

import (
	"context"
	"crypto/rand"
	"net"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// TestRandomBytesOnListenPorts throws garbage at the raw TCP and UDP
// (QUIC) listeners; the node keeps serving.
func TestRandomBytesOnListenPorts(t *testing.T) {
	t.Parallel()
	a, b := newTestNode(t), newTestNode(t)
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, addr := range b.h.Libp2p().Addrs() {
		ip, err := addr.ValueForProtocol(ma.P_IP4)
		if err != nil {
			t.Fatal(err)
		}
		network := "tcp"
		port, err := addr.ValueForProtocol(ma.P_TCP)
		if err != nil {
			network = "udp"
			if port, err = addr.ValueForProtocol(ma.P_UDP); err != nil {
				t.Fatal(err)
			}
		}
		target := net.JoinHostPort(ip, port)
		for _, size := range []int{1, 64, 1500, 64 << 10} {
			c, err := net.DialTimeout(network, target, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, size)
			_, _ = rand.Read(junk)
			if network == "udp" {
				junk = junk[:min(size, 1200)]
			} else if size == 64 {
				// Something that looks like multistream-select, then junk.
				junk = append([]byte("\x13/multistream/1.0.0\n"), junk...)
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write(junk)
			// The node may answer (multistream) or hang up; either is fine.
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, _ = c.Read(make([]byte, 256))
			_ = c.Close()
		}
	}
	for range 5 {
		if _, err := a.svc.Ping(ctx, b.h.ID()); err != nil {
			t.Fatalf("node disturbed by junk: %v", err)
		}
	}
	if !strings.Contains(strings.Join(b.h.Addrs(), " "), "/p2p/"+b.h.ID().String()) {
		t.Errorf("Addrs without /p2p/: %v", b.h.Addrs())
	}
}
