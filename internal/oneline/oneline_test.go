package oneline_test

import (
	"testing"

	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
)

// dialErr has the shape of a go-libp2p dial error: one failed address per line.
const dialErr = "failed to dial 12D3KooWGhost: all dials failed\n" +
	"  * [/ip4/127.0.0.1/tcp/1] dial tcp 127.0.0.1:1: connect: connection refused\n" +
	"  * [/ip4/127.0.0.1/udp/1/quic-v1] timeout: no recent network activity"

func TestFlatten(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{dialErr, "failed to dial 12D3KooWGhost: all dials failed; " +
			"[/ip4/127.0.0.1/tcp/1] dial tcp 127.0.0.1:1: connect: connection refused; " +
			"[/ip4/127.0.0.1/udp/1/quic-v1] timeout: no recent network activity"},
		{"failed to dial X:\n  * [a] refused\n    ... skipping 2 errors ...", "failed to dial X: [a] refused; ... skipping 2 errors ..."},
		{"a:\nb\r\nc\n\n", "a: b; c"},
		{"trailing\n", "trailing"},
		{"\n  \n", ""},
	} {
		if got := oneline.Flatten(tc.in); got != tc.want {
			t.Errorf("Flatten(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
