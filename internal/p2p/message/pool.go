package message

import (
	"sync"
	"unsafe"
)

// The service reuses the envelopes whose whole life it sees: the requests
// Request and Ping build, the responses Ping reads, and the inbound
// messages answered by the reader itself (ping, rejections) with their
// replies. Envelopes handed to handlers or returned to callers are not
// reused, so nobody outside can hold one that changes under them.
var envelopePool = sync.Pool{New: func() any { return new(Envelope) }}

// getEnvelope returns a zero envelope marked as the service's own.
func getEnvelope() *Envelope {
	env := envelopePool.Get().(*Envelope)
	env.pooled = true
	return env
}

// release returns env to the pool if it came from there; env must not be
// used afterwards. Envelopes from anywhere else are left alone.
func (env *Envelope) release() {
	if env == nil || !env.pooled {
		return
	}
	*env = Envelope{}
	envelopePool.Put(env)
}

// borrowString returns b as a string without copying: the string is only
// valid while b is not overwritten. The stream reader uses it for the ID of
// a message it answers itself before reading the next frame.
func borrowString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
