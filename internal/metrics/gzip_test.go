package metrics

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{
		"": false, "gzip": true, "deflate, gzip;q=1.0, *;q=0.5": true, "gzip;q=0": false,
		"identity": false, "br, gzip": true, "x-gzip": false,
	} {
		if got := acceptsGzip(h); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestGzippedScrape(t *testing.T) {
	body := strings.Repeat("metric_total{label=\"value\"} 1\n", 1000)
	h := gzipped(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, body)
	}))
	for i := range 3 { // pooled writers are reset between answers
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		h.ServeHTTP(rec, req)
		if rec.Header().Get("Content-Encoding") != "gzip" || rec.Body.Len() >= len(body)/5 {
			t.Fatalf("round %d: encoding %q, %d compressed bytes for %d", i, rec.Header().Get("Content-Encoding"), rec.Body.Len(), len(body))
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || string(got) != body {
			t.Fatalf("round %d: decompressed %d bytes, %v", i, len(got), err)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Header().Get("Content-Encoding") != "" || rec.Body.String() != body {
		t.Fatalf("without Accept-Encoding: encoding %q, %d bytes", rec.Header().Get("Content-Encoding"), rec.Body.Len())
	}
}
