package message

import (
	"bufio"
	"context"
	"io"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
)

// BenchmarkMetricsMiddleware is the recording cost per handled message.
func BenchmarkMetricsMiddleware(b *testing.B) {
	m := metrics.NewMessages(prometheus.NewRegistry(), MetricLabels())
	h := MetricsMiddleware(m)(func(context.Context, peer.ID, *Envelope) (*Envelope, error) { return nil, nil })
	req := &Envelope{V: 1, ID: "1", Type: TypePing}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = h(ctx, "", req)
	}
}

// BenchmarkCodec encodes and decodes one ping frame.
func BenchmarkCodec(b *testing.B) {
	env, _ := NewEnvelope(TypePing, nil)
	env.ID = "0123abcd-1a2b"
	var buf []byte
	src := &bytesReaderT{}
	fr := frameReader{br: bufio.NewReader(src), max: DefaultMaxMessageBytes}
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = AppendFrame(buf[:0], env, 0)
		if err != nil {
			b.Fatal(err)
		}
		src.b, src.i = buf, 0
		body, _, err := fr.next()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := decodeEnvelope(body); err != nil {
			b.Fatal(err)
		}
	}
}

type bytesReaderT struct {
	b []byte
	i int
}

func (r *bytesReaderT) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}
