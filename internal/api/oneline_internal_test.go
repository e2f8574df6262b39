package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWriteErrorIsOneLine checks the API edge: whatever layer an error
// message comes from, the JSON error body carries it on one line.
func TestWriteErrorIsOneLine(t *testing.T) {
	rec := httptest.NewRecorder()
	writeError(rec, http.StatusBadGateway, "failed to dial 12D3KooWGhost: all dials failed\n"+
		"  * [/ip4/127.0.0.1/tcp/1] dial tcp 127.0.0.1:1: connect: connection refused\n"+
		"  * [/ip4/127.0.0.1/udp/1/quic-v1] timeout: no recent network activity\n")
	var body ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	const want = "failed to dial 12D3KooWGhost: all dials failed; [/ip4/127.0.0.1/tcp/1] dial tcp 127.0.0.1:1: connect: connection refused; [/ip4/127.0.0.1/udp/1/quic-v1] timeout: no recent network activity"
	if rec.Code != http.StatusBadGateway || body.Error != want {
		t.Fatalf("writeError: %d %q, want %q", rec.Code, body.Error, want)
	}
}
