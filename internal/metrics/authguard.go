package metrics

import (
	"crypto/sha256"
	"net"
	"net/http"
	"sync"

	"golang.org/x/time/rate"
)

// maxKnownCredentials bounds the set of credentials seen to be valid.
const maxKnownCredentials = 64

// authGuard sits in front of exporter-toolkit's basic-auth handler. Requests
// whose credentials were already seen to be valid pass freely (the toolkit
// answers them from its cache, no bcrypt); any other request carrying
// credentials needs a token of a small bucket first, so wrong guesses cost at
// most rate bcrypt checks per second. Requests without credentials pass: the
// toolkit refuses them without hashing.
type authGuard struct {
	next  http.Handler
	lim   *rate.Limiter
	mu    sync.Mutex
	known map[[32]byte]struct{}
}

func newAuthGuard(perSecond float64) *authGuard {
	return &authGuard{lim: rate.NewLimiter(rate.Limit(perSecond), authFailureBurst), known: map[[32]byte]struct{}{}}
}

// protect wraps the handler the toolkit guards: reaching it proves the
// request's credentials valid, so they are remembered.
func (g *authGuard) protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.remember(r)
		h.ServeHTTP(w, r)
	})
}

func credentialKey(user, pass string) [32]byte {
	return sha256.Sum256([]byte(user + "\x00" + pass))
}

func (g *authGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		g.next.ServeHTTP(w, r)
		return
	}
	key := credentialKey(user, pass)
	g.mu.Lock()
	_, known := g.known[key]
	g.mu.Unlock()
	if !known && !g.lim.Allow() {
		w.Header().Set("Retry-After", "1")
		w.Header().Set("WWW-Authenticate", "Basic")
		http.Error(w, "too many unverified credentials; retry later", http.StatusTooManyRequests)
		return
	}
	g.next.ServeHTTP(w, r)
}

// remember records credentials that reached the protected handler (so the
// toolkit accepted them).
func (g *authGuard) remember(r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return
	}
	key := credentialKey(user, pass)
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.known[key]; ok {
		return
	}
	if len(g.known) >= maxKnownCredentials {
		clear(g.known)
	}
	g.known[key] = struct{}{}
}

// onFirstAccept runs fn once, on the serving goroutine, before the first
// connection is accepted.
type onFirstAccept struct {
	net.Listener
	once sync.Once
	fn   func()
}

func (l *onFirstAccept) Accept() (net.Conn, error) {
	l.once.Do(l.fn)
	return l.Listener.Accept()
}
