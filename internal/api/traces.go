package api

import (
	"context"
	"errors"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// TraceSource assembles a trace across the nodes that took part.
type TraceSource func(ctx context.Context, id string) (tracing.Trace, error)

// handleTrace answers GET /api/v1/traces/{id}: 200 with the trace (marked
// incomplete when a peer could not be asked), 400 for a malformed id, 404
// when no node has a span of it.
func (s *Server) handleTrace(w http.ResponseWriter, r *http.Request) {
	t, err := s.deps.Traces(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, tracing.ErrBadTraceID):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, tracing.ErrTraceNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		s.fail(w, err)
	default:
		writeJSON(w, http.StatusOK, t)
	}
}

// traced runs h under a server span "api" (attributes http.route, status)
// when the request carries a sampled traceparent header, or when the
// sampling ratio picks it; otherwise h runs as is, allocating nothing more.
func (s *Server) traced(w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	if s.cfg.Tracing == nil {
		h(w, r)
		return
	}
	ctx, span := s.cfg.Tracing.StartRoot(tracing.FromHTTP(r.Context(), r.Header), "api", trace.SpanKindServer, false)
	if !span.Recording() {
		h(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	sw.Header().Set("traceparent", tracing.Traceparent(ctx))
	h(sw, r.WithContext(ctx))
	span.SetAttributes(attribute.String("http.route", r.Pattern), attribute.Int("http.status_code", sw.code))
	if sw.code >= 500 {
		span.End(errors.New(http.StatusText(sw.code)))
		return
	}
	span.End(nil)
}

// statusWriter records the status code of a traced request.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
