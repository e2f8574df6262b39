package tracing

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// FuzzParseTraceparent: a traceparent from a peer is either refused or a
// valid remote span context whose trace and span ids are the ones written,
// and which Traceparent writes back in version 00 with only the sampled
// flag; WithTraceparent never fails, whatever it is given.
func FuzzParseTraceparent(f *testing.F) {
	for _, s := range []string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-later",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
		"", "00-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ctx := WithTraceparent(context.Background(), s)
		sc, ok := parseTraceparent(s)
		if !ok {
			if trace.SpanContextFromContext(ctx).IsValid() {
				t.Fatalf("refused %q yet a span context was set", s)
			}
			return
		}
		if !sc.IsValid() || !sc.IsRemote() {
			t.Fatalf("accepted %q as an invalid or local span context", s)
		}
		if !sc.IsSampled() {
			if trace.SpanContextFromContext(ctx).IsValid() {
				t.Fatalf("unsampled %q set a span context", s)
			}
			return
		}
		got := Traceparent(ctx)
		if want := "00-" + s[3:53] + "01"; got != want {
			t.Fatalf("Traceparent of %q = %q, want %q", s, got, want)
		}
	})
}
