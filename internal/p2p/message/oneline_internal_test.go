package message

import (
	"errors"
	"testing"
)

// TestErrorEnvelopeIsOneLine checks the wire edge: the message of an
// "error" reply is one line, whatever the handler returned.
func TestErrorEnvelopeIsOneLine(t *testing.T) {
	for name, err := range map[string]error{
		"plain":  errors.New("line one\n  line two"),
		"remote": &RemoteError{Code: CodeHandler, Message: "line one\r\nline two"},
		"cause":  &messageError{reason: ReasonHandler, code: CodeInternal, err: errors.New("line one\nline two")},
	} {
		var ep ErrorPayload
		if err := errorEnvelope("id", err).DecodePayload(&ep); err != nil {
			t.Fatal(err)
		}
		if ep.Message != "line one; line two" {
			t.Errorf("%s: message %q, want %q", name, ep.Message, "line one; line two")
		}
	}
}
